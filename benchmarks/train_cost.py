"""What a training step costs per method: seconds per optimizer step and peak GPU memory of SFT, DPO,
IOPO and IOPO with precomputed reference log-probs, on the same model, batch and sequence length,
as ratios against SFT (the IOPO paper reports memory 1x / 2x / 4x and time 1x / 1.8x / 2.4x for
SFT / DPO / IOPO).

It runs the trainer's own code: transformers' Trainer with trace-build's PreferenceTrainer (the
collator's sequence-major batches, `batch_loss`, the reference the trainer would use: a frozen
second copy under full fine-tuning, the adapter switched off under LoRA, or the table
`reference.precompute` fills; full fine-tuning keeps fp32 master weights, bf16 compute).
`--engine both` also times a hand-written step on the same batch, and prints the engine's
seconds per step against it ("vs plain"); `--engine all` adds TRL's DPOTrainer for DPO on the same
model and batch where TRL is installed ("vs TRL": our DPO's seconds per step against TRL's).
The tokens are random (seeded, the same for every method): cost depends on shapes, not on text.
Without `--model`, the model is a Qwen2 of a real size, randomly initialised from its config, so
the script needs no weights and no network.

    python benchmarks/train_cost.py                                  # qwen2-0.5b, 1024 tokens, full
    python benchmarks/train_cost.py --size qwen2-1.5b --seq-len 2048
    python benchmarks/train_cost.py --size qwen2-7b --lora --gradient-checkpointing --json cost.json
    python benchmarks/train_cost.py --model /models/Qwen2-0.5B-Instruct --methods sft,iopo
    python benchmarks/train_cost.py --size tiny --seq-len 64 --steps 3 --warmup 1   # CPU smoke test
    python benchmarks/train_cost.py --size tiny --seq-len 256 --micro-batch 4 --engine both --device cpu
    python benchmarks/train_cost.py --size tiny --seq-len 256 --micro-batch 4 --engine all --methods dpo

Seconds per step are the median over the timed steps; tokens/s counts every sequence of the step
(IOPO: four per example); peak memory is torch's max_memory_allocated from building the models to
the last step (n/a on the CPU).

A method name ending in `-precomputed` (default: iopo-precomputed) trains that method against a
table of reference log-probs filled by one no-grad pass before timing. A method that runs out of
GPU memory is reported as OOM and the others still run.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flows.train import model as M
from flows.train import reference as R
from flows.train.config import TrainConfig
from flows.train.encode import IGNORE, Encoded, collate
from flows.train.objective import batch_loss
from flows.train.methods import METHODS, SEQUENCES
from flows.train.tiny import QWEN2_SIZES, qwen2_config

# IOPO paper, training cost relative to SFT.
PAPER = {"sft": {"memory": 1.0, "time": 1.0}, "dpo": {"memory": 2.0, "time": 1.8},
         "iopo": {"memory": 4.0, "time": 2.4}}
PRECOMPUTED = "-precomputed"


def parse_method(name: str) -> tuple[str, str]:
    """Benchmark name -> (training method, reference setting of TrainConfig)."""
    method = name.removesuffix(PRECOMPUTED)
    if method not in METHODS or (method == "sft" and name != method):
        raise SystemExit(f"unknown method {name!r}: one of {', '.join(METHODS)}, "
                         f"or a preference method + {PRECOMPUTED!r}")
    return method, "precomputed" if name.endswith(PRECOMPUTED) else "auto"


def random_examples(n: int, seq_len: int, vocab_size: int, seed: int) -> list[dict[str, list[int]]]:
    """Token ids of x1, x2 (prompts, half the length) and y1, y2 (responses, the rest) per example,
    so every method scores the same text: SFT's x1y1 is DPO's chosen and IOPO's first sequence."""
    g = torch.Generator().manual_seed(seed)
    n_prompt = seq_len // 2
    sizes = {"x1": n_prompt, "x2": n_prompt, "y1": seq_len - n_prompt, "y2": seq_len - n_prompt}
    return [{k: torch.randint(vocab_size, (size,), generator=g).tolist() for k, size in sizes.items()}
            for _ in range(n)]


def encode_random(example: dict[str, list[int]], method: str) -> dict[str, Encoded]:
    """The sequences `method` scores, as the encoder lays them out: prompt masked in the labels."""
    return {name: Encoded(example[name[:2]] + example[name[2:]], [IGNORE] * len(example[name[:2]]) + example[name[2:]])
            for name in SEQUENCES[method]}


def build_model(args, dtype: torch.dtype, device: torch.device, trainable: bool = True):
    if args.model:
        return M.load_model(args.model, dtype, device, trainable)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)  # the same seed: the frozen reference copy equals the policy
    with device:  # initialise on the GPU directly: a 7B model built on the CPU first takes minutes
        model = AutoModelForCausalLM.from_config(qwen2_config(args.size), dtype=dtype)
    if not trainable:
        model.eval().requires_grad_(False)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def models(cfg: TrainConfig, args, device: torch.device, dtype: torch.dtype, items: list[dict], out: Path):
    """Policy and reference as a training run builds them (flows.train.run), from a random or a
    local model. Checkpointing is switched on here too: the plain step has no engine to do it."""
    from types import SimpleNamespace

    from accelerate import PartialState

    from flows.train.run import TrainingData, build_reference, load_policy

    def load(_name, weights_dtype, on, trainable):
        return build_model(args, weights_dtype, on, trainable)

    policy = load_policy(cfg, dtype, load=load, device=device)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.enable_input_require_grads()
    data = TrainingData(SimpleNamespace(pad_token_id=0), items, {})
    return policy, build_reference(cfg, policy, data, device, dtype, out, PartialState(), load=load)


def measure(name: str, engine: str, args, examples, device: torch.device, dtype: torch.dtype) -> dict:
    """Time warmup + steps optimizer steps of one method, by the engine (transformers' Trainer, as
    `trace-build train` runs) or, with --engine plain, by a hand-written step (forward over all
    sequences, backward, clip, AdamW: the floor the engine's overhead is measured against)."""
    method, reference_setting = parse_method(name)
    cfg = TrainConfig(method=method, model=args.model or args.size, data="benchmark", lora=args.lora,
                      reference=reference_setting, micro_batch=args.micro_batch, max_length=args.seq_len,
                      gradient_checkpointing=args.gradient_checkpointing, dtype=args.dtype,
                      device="cpu" if device.type == "cpu" else "cuda", learning_rate=1e-6, warmup_ratio=0.0,
                      max_steps=args.warmup + args.steps)
    items = [{"id": f"example-{i}", "seqs": encode_random(e, method)} for i, e in enumerate(examples)]
    if device.type == "cuda":  # from here on: weights, reference, optimizer state, activations
        torch.cuda.reset_peak_memory_stats(device)
    if engine == "trl":  # TRL builds its own reference (a copy, the adapter off, or its precomputed table)
        cfg = cfg.model_copy(update={"reference": "copy" if not cfg.lora else "adapter"})
    with tempfile.TemporaryDirectory(prefix="train-cost-") as out:  # the precomputed reference's table
        policy, reference = models(cfg, args, device, dtype, items, Path(out))
    if engine == "trl":
        seconds, loss = trl_steps(cfg, reference_setting == "precomputed", policy, reference, examples, dtype)
    else:
        time_steps = engine_steps if engine == "trainer" else plain_steps
        seconds, loss = time_steps(cfg, policy, reference, items, device, dtype)
    step_s = statistics.median(seconds[args.warmup:])
    rows = len(items) * len(SEQUENCES[method])
    return {
        "method": name, "engine": engine, "sequences": len(SEQUENCES[method]), "rows": rows,
        "reference": cfg.reference_mode, "seconds_per_step": step_s, "tokens_per_s": rows * args.seq_len / step_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable": sum(p.numel() for p in policy.parameters() if p.requires_grad), "loss": loss,
    }


def plain_steps(cfg, policy, reference, items, device, dtype) -> tuple[list[float], float]:
    batch = {k: v.to(device) for k, v in collate([i["seqs"] for i in items], cfg.method, pad_id=0).items()}
    ids = [i["id"] for i in items]
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    policy.train()
    seconds, first_loss = [], None
    for _ in range(cfg.max_steps):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = batch_loss(cfg.method, cfg.beta, policy, reference, batch, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        seconds.append(time.perf_counter() - t0)
        first_loss = loss.item() if first_loss is None else first_loss
    return seconds, first_loss


def step_times(device: torch.device):
    """A Trainer callback keeping the seconds of each optimizer step (.seconds), from the engine's
    on_step_begin to its on_step_end, the device synchronised at both ends."""
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.seconds.append(time.perf_counter() - self.t0)

    return StepTimes()


def engine_steps(cfg, policy, reference, items, device, dtype) -> tuple[list[float], float]:
    """The same batch every step, through PreferenceTrainer; a step is timed from the engine's
    on_step_begin to its on_step_end (data loading, forward, backward, clip, AdamW, scheduler)."""
    from transformers.trainer_callback import PrinterCallback

    from flows.train.engine import PreferenceTrainer, collator, training_arguments

    class FixedOrder(PreferenceTrainer):  # every step the one batch: the plain loop's work exactly
        def _get_train_sampler(self, *a, **kw):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    times = step_times(device)
    with tempfile.TemporaryDirectory(prefix="train-cost-") as out:
        args = training_arguments(cfg, Path(out), bf16=dtype == torch.bfloat16)
        args.save_strategy = "no"
        trainer = FixedOrder(model=policy, args=args, train_dataset=items * cfg.max_steps,
                             data_collator=collator(cfg.method, 0), callbacks=[times],
                             method=cfg.method, beta=cfg.beta, reference=reference)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    first = next(r for r in trainer.state.log_history if "loss" in r)
    return times.seconds, first["loss"]


def trl_steps(cfg, precompute: bool, policy, reference, examples, dtype) -> tuple[list[float], float]:
    """The same DPO batch through TRL's DPOTrainer (sigmoid loss, its own collator and reference).
    TRL takes text: a word-level tokenizer with one word per id ("t17") turns the random ids into
    text that tokenizes back to them, so the sequences are ours, plus the EOS TRL appends."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models as word_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    words = Tokenizer(word_models.WordLevel({f"t{i}": i for i in range(policy.config.vocab_size)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="t0", pad_token="t0")

    def text(ids: list[int]) -> str:
        return " ".join(f"t{i}" for i in ids)

    rows = [{"prompt": text(e["x1"]), "chosen": f" {text(e['y1'])} ", "rejected": f" {text(e['y2'])} "}
            for e in examples] * cfg.max_steps
    device = next(policy.parameters()).device

    times = step_times(device)
    with tempfile.TemporaryDirectory(prefix="train-cost-trl-") as out:
        args = DPOConfig(output_dir=out, per_device_train_batch_size=cfg.micro_batch, gradient_accumulation_steps=1,
                         max_steps=cfg.max_steps, learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=0,
                         max_grad_norm=cfg.max_grad_norm, optim="adamw_torch", beta=cfg.beta, loss_type=["sigmoid"],
                         bf16=dtype == torch.bfloat16, gradient_checkpointing=cfg.gradient_checkpointing,
                         max_length=None, precompute_ref_log_probs=precompute, logging_steps=1, save_strategy="no",
                         report_to="none", disable_tqdm=True, use_cpu=device.type == "cpu", seed=0)
        ref_model = reference.model if isinstance(reference, R.FrozenCopy) and not precompute else None
        trainer = DPOTrainer(model=policy, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, callbacks=[times])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    first = next(r for r in trainer.state.log_history if "loss" in r)
    return times.seconds, first["loss"]


def trl_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def free(device: torch.device) -> None:
    """Drop what the last method left (its models are out of scope) so the next starts from zero."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def add_ratios(results: list[dict]) -> None:
    """Time and memory against SFT on the same engine; the engine's time against the plain step."""
    for r in results:
        sft = next((s for s in results if s["method"] == "sft" and s["engine"] == r["engine"] and not s.get("oom")),
                   None)
        plain = next((s for s in results if s["method"] == r["method"] and s["engine"] == "plain"
                      and not s.get("oom")), None)
        r["engine_overhead"] = (r["seconds_per_step"] / plain["seconds_per_step"]
                                if plain is not None and not r.get("oom") else None)
        trl = next((s for s in results if s["method"] == r["method"] and s["engine"] == "trl" and not s.get("oom")),
                   None)
        r["vs_trl"] = (r["seconds_per_step"] / trl["seconds_per_step"]
                       if trl is not None and r["engine"] == "trainer" and not r.get("oom") else None)
        ok = sft is not None and not r.get("oom")
        r["time_ratio"] = r["seconds_per_step"] / sft["seconds_per_step"] if ok else None
        mem_ok = ok and r["peak_memory_gib"] is not None
        r["memory_ratio"] = r["peak_memory_gib"] / sft["peak_memory_gib"] if mem_ok else None


def print_table(results: list[dict]) -> None:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    print(f"{'method':<20} {'engine':<8} {'seqs':>4} {'s/step':>9} {'tokens/s':>10} {'peak GiB':>9} "
          f"{'time x':>7} {'mem x':>7} {'vs plain':>8} {'vs TRL':>7}")
    for r in results:
        if r.get("oom"):
            print(f"{r['method']:<20} {r['engine']:<8} {r['sequences']:>4} {'OOM':>9}")
            continue
        print(f"{r['method']:<20} {r['engine']:<8} {r['sequences']:>4} {r['seconds_per_step']:>9.3f} "
              f"{r['tokens_per_s']:>10.0f} {fmt(r['peak_memory_gib'], '.2f'):>9} {fmt(r['time_ratio'], '.2f'):>7} "
              f"{fmt(r['memory_ratio'], '.2f'):>7} {fmt(r['engine_overhead'], '.2f'):>8} {fmt(r['vs_trl'], '.2f'):>7}")
    print("paper (vs SFT): memory " + " / ".join(f"{p['memory']:g}x" for p in PAPER.values())
          + ", time " + " / ".join(f"{p['time']:g}x" for p in PAPER.values()) + " for SFT / DPO / IOPO")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a local Hugging Face model folder; default: a random model of --size")
    p.add_argument("--size", default="qwen2-0.5b", choices=list(QWEN2_SIZES))
    p.add_argument("--methods", default="sft,dpo,iopo,iopo-precomputed")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence; the first half is prompt")
    p.add_argument("--micro-batch", type=int, default=1, help="examples per step (IOPO: 4 sequences each)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    tuning = p.add_mutually_exclusive_group()
    tuning.add_argument("--lora", dest="lora", action="store_true", help="LoRA adapter; reference: adapter off")
    tuning.add_argument("--full", dest="lora", action="store_false",
                        help="all weights, as the paper's ratios (default); reference: a frozen copy")
    p.set_defaults(lora=False)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", default="trainer", choices=["trainer", "plain", "both", "trl", "all"],
                   help="trainer: transformers' Trainer as trace-build trains (default); plain: a hand-written "
                        "step; both: each, and the engine's overhead as a ratio; trl: TRL's DPOTrainer (dpo "
                        "only); all: the three, and our DPO against TRL's")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.steps < 1 or args.seq_len < 2 or args.micro_batch < 1:
        p.error("--steps and --micro-batch must be at least 1, --seq-len at least 2")

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in names:
        parse_method(name)  # fail on a typo now, not after the first method has run
    device = M.pick_device(args.device)
    dtype = M.pick_dtype(args.dtype, device)
    if args.model:
        from transformers import AutoConfig

        vocab_size = AutoConfig.from_pretrained(args.model).vocab_size
    else:
        vocab_size = qwen2_config(args.size).vocab_size
    examples = random_examples(args.micro_batch, args.seq_len, vocab_size, args.seed)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"model {args.model or args.size + ' (random init)'}, {'LoRA' if args.lora else 'full'} fine-tuning, "
          f"{args.seq_len} tokens/sequence, micro-batch {args.micro_batch}, {dtype}, "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, {gpu}", flush=True)

    results = []
    engines = {"both": ["plain", "trainer"], "all": ["plain", "trainer", "trl"]}.get(args.engine, [args.engine])
    if "trl" in engines and not trl_installed():
        if args.engine == "trl":
            raise SystemExit("--engine trl: TRL is not installed (pip install trl)")
        print("TRL is not installed: no TRL rows (pip install trl)")
        engines.remove("trl")
    for name in names:
        for engine in engines:
            if engine == "trl" and parse_method(name)[0] != "dpo":
                continue  # TRL's DPOTrainer trains DPO only
            free(device)
            try:
                results.append(measure(name, engine, args, examples, device, dtype))
            except torch.cuda.OutOfMemoryError:
                results.append({"method": name, "engine": engine, "oom": True,
                                "sequences": len(SEQUENCES[parse_method(name)[0]])})
            free(device)
            r = results[-1]
            print(f"  {name} ({engine}): " + ("OOM" if r.get("oom") else f"{r['seconds_per_step']:.3f} s/step"),
                  flush=True)
    add_ratios(results)
    print_table(results)
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "device": gpu, "dtype": str(dtype), "results": results,
                                         "paper": PAPER}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
