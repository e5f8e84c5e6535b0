"""The policy: loading with transformers (+ peft for LoRA), and the one function that scores
sequences, summed log-probs of the response tokens. The references are in reference.py.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from flows.errors import InputError
from flows.train.encode import IGNORE
from flows.train.tiny import CHATML_TEMPLATE

log = logging.getLogger(__name__)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def _missing(name: str, exc: Exception) -> InputError:
    return InputError(f"{name}: no model there: give a local model folder or a hub name already in the local "
                      f"Hugging Face cache (training never downloads; {type(exc).__name__})")


# What transformers and peft print on every run with nothing in it to act on: peft reads a
# property transformers deprecated (their code, not ours), and the Trainer notes that it gave the
# model's config the tokenizer's special tokens (load_tokenizer gives a pad token on purpose).
_DEPRECATED_PROPERTY = r"`is_gradient_checkpointing` is deprecated"
_TOKENS_ALIGNED = "The tokenizer has new PAD/BOS/EOS tokens"


class _DropTokensAligned(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_TOKENS_ALIGNED)


_drop_tokens_aligned = _DropTokensAligned()


def quiet_libraries() -> None:
    """No progress bars from transformers or the hub (weights loading and saving: our progress is
    the steps), and none of the notices above; every other warning, and every error, still shows."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=_DEPRECATED_PROPERTY, category=FutureWarning)
    logging.getLogger("transformers.trainer_utils").addFilter(_drop_tokens_aligned)  # one instance: added once


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError as exc:
        raise _missing(name, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        log.warning("%s has no chat template; using ChatML", name)
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def load_model(name: str, dtype: torch.dtype, device: torch.device, trainable: bool = True):
    from transformers import AutoModelForCausalLM

    try:
        if (Path(name) / "adapter_config.json").exists():
            # A LoRA output (e.g. the SFT run's final/): its base with the adapter merged in is the
            # model to start from; a fresh adapter on top of it trains from there.
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=True)
            model = model.merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=True)
        model = model.to(device)
    except OSError as exc:
        raise _missing(name, exc) from None
    if not trainable:
        model.eval().requires_grad_(False)
    return model


def add_lora(model, r: int, alpha: int, dropout: float):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))


def sequence_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the log-prob of its labelled tokens summed, and how many there are."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    # Only response positions go through the fp32 log-softmax: with a 150k vocabulary the
    # prompt half of the logits would otherwise cost gigabytes for nothing.
    picked = logits[:, :-1][mask].float()
    token_logps = -F.cross_entropy(picked, targets[mask], reduction="none")
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[mask]
    sums = torch.zeros(targets.shape[0], dtype=torch.float32, device=targets.device).index_add(0, rows, token_logps)
    return sums, mask.sum(-1)
