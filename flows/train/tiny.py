"""A tiny chat model and tokenizer built in code: for tests, smoke runs and the GPU benchmark,
with no download. The tokenizer is a byte-level BPE (any text, Chinese included, encodes) with
Qwen2's ChatML template; the model is a randomly initialised Qwen2 of a few hundred thousand
parameters, or any size given as a config.

    tokenizer = tiny_tokenizer(texts)          # BPE merges learnt from `texts`
    model = tiny_model(len(tokenizer))
    save_tiny(path, texts)                     # both, saved where `--model path` loads them
"""
from __future__ import annotations

from pathlib import Path

# Qwen2's chat template, simplified: a system turn (default "You are a helpful assistant."),
# then <|im_start|>role\ncontent<|im_end|>\n per message, and the assistant header to generate.
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Sizes of real models, for a randomly initialised benchmark model when no weights are at hand.
QWEN2_SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def tiny_tokenizer(texts: list[str], vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts or ["hello"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def qwen2_config(size: str = "tiny", vocab_size: int | None = None, **overrides):
    from transformers import Qwen2Config

    params = dict(QWEN2_SIZES[size], max_position_embeddings=32768, **overrides)
    if vocab_size is not None:
        params["vocab_size"] = vocab_size
    return Qwen2Config(**params)


def tiny_model(vocab_size: int, seed: int = 0, size: str = "tiny"):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(qwen2_config(size, vocab_size=vocab_size))


def save_tiny(path: str | Path, texts: list[str], seed: int = 0) -> Path:
    """Save a tiny tokenizer (trained on `texts`) and model under `path`; return it."""
    path = Path(path)
    tokenizer = tiny_tokenizer(texts)
    model = tiny_model(len(tokenizer), seed=seed)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.train.tiny OUT [--texts FILE]`: a tiny model to try training on a CPU (its
    weights are random: it learns the loss, not the language)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.train.tiny", description=main.__doc__.split(":", 1)[1])
    parser.add_argument("out", help="folder to write the model and tokenizer to (then: trace-build train --model OUT)")
    parser.add_argument("--texts", help="a text file (JSON, JSONL, anything) whose text the tokenizer learns")
    args = parser.parse_args(argv)
    from flows.train.model import quiet_libraries

    quiet_libraries()
    texts = Path(args.texts).read_text(encoding="utf-8").splitlines() if args.texts else []
    print(save_tiny(args.out, texts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
