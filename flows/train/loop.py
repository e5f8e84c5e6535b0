"""The training loop, top to bottom: SFT, DPO and the IOPO variants share it.

    report = train(cfg, on_log=print)   # -> out/metrics.jsonl, out/final/, out/train_report.json

One optimizer step = grad_accum micro-batches of micro_batch examples; each micro-batch is one
forward pass over all the sequences its method scores (IOPO: four per example).
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from flows.store import write_json_atomic
from flows.train import model as M
from flows.train.config import TrainConfig
from flows.train.encode import collate, encode_example, split_by_sequence
from flows.train.examples import load_examples
from flows.train.losses import preference_loss, sft_loss
from flows.train.methods import SEQUENCES

log = logging.getLogger(__name__)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warmup to 1, then cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def compute_loss(cfg: TrainConfig, policy, reference, batch: dict, ids: list[str]) -> tuple[torch.Tensor, dict]:
    """Mean loss of a micro-batch and its metrics (means over the examples)."""
    pi_logps, n_tokens = M.sequence_logps(policy, batch)
    if cfg.method == "sft":
        loss, metrics = sft_loss(pi_logps, n_tokens)
        return loss.mean(), {"loss": loss.mean().item(), **_means(metrics)}
    ref_logps = reference.logps(batch, ids)
    pi = split_by_sequence(pi_logps, cfg.method)
    ref = split_by_sequence(ref_logps, cfg.method)
    loss, metrics = preference_loss(cfg.method, pi, ref, cfg.beta)
    logps = {f"logps_policy_{n}": pi[n].detach() for n in pi} | {f"logps_ref_{n}": ref[n] for n in ref}
    return loss.mean(), {"loss": loss.mean().item(), **_means(metrics), **_means(logps)}


def _means(values: dict) -> dict:
    return {k: v.float().mean().item() for k, v in values.items()}


def setup_models(cfg: TrainConfig, device, dtype, encoded, ids, pad_id: int, out: Path | None = None,
                 load: Callable | None = None):
    """The policy and its reference, as cfg says. `load(dtype, trainable)` gives a fresh base model
    (default: cfg.model from disk). Full fine-tuning keeps fp32 master weights and computes in
    `dtype` under autocast: AdamW steps of 5e-6 vanish in bf16 weights. Under LoRA the frozen base
    stays in `dtype` and peft keeps the adapter in fp32."""
    load = load or (lambda dt, trainable: M.load_model(cfg.model, dt, device, trainable))
    policy = load(dtype if cfg.lora else torch.float32, True)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        policy.enable_input_require_grads()
    if cfg.lora:
        policy = M.add_lora(policy, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    reference = None
    if cfg.reference_mode == "copy":
        # the same weight dtype as the policy: at step 0 policy and reference must agree exactly
        reference = M.FrozenCopy(load(dtype if cfg.lora else torch.float32, False))
    elif cfg.reference_mode == "adapter":
        reference = M.AdapterDisabled(policy)
    elif cfg.reference_mode == "precomputed":
        table = precompute_reference(policy, encoded, ids, cfg, pad_id, device, dtype, out)
        reference = M.Precomputed(table, SEQUENCES[cfg.method])
    policy.train()
    return policy, reference


def precompute_reference(policy, encoded, ids, cfg, pad_id, device, dtype, path: Path | None = None) -> dict:
    """Reference log-probs of every sequence, by the untrained policy (adapter off under LoRA),
    stored with the data in `path` (JSON lines: id and one value per sequence) when given."""
    table = {}
    names = SEQUENCES[cfg.method]
    scorer = M.AdapterDisabled(policy) if cfg.lora else M.FrozenCopy(policy)
    policy.eval()
    for start in range(0, len(encoded), cfg.micro_batch):
        chunk_ids = ids[start:start + cfg.micro_batch]
        batch = _to(collate(encoded[start:start + cfg.micro_batch], cfg.method, pad_id), device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            values = split_by_sequence(scorer.logps(batch, chunk_ids), cfg.method)
        for j, example_id in enumerate(chunk_ids):
            table[example_id] = {n: values[n][j].item() for n in names}
    policy.train()
    if path is not None:
        path.write_text("".join(json.dumps({"id": i, **v}) + "\n" for i, v in table.items()), encoding="utf-8")
    return table


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None) -> dict:
    out = cfg.output_dir
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = M.pick_device(cfg.device)
    dtype = M.pick_dtype(cfg.dtype, device)

    # Data: examples -> token sequences (prompt masked), truncations counted.
    examples = load_examples(cfg.data, cfg.method)[:cfg.limit]
    tokenizer = M.load_tokenizer(cfg.model)
    encoded = [encode_example(tokenizer, e, cfg.method, cfg.max_length) for e in examples]
    ids = [e.id for e in examples]
    truncated = {"prompt": 0, "response": 0}
    for seqs in encoded:
        for s in seqs.values():
            for part in (s.truncated or "").split("+"):
                if part:
                    truncated[part] += 1

    # Data and tokenizer are good: only now replace what an earlier run left in `out`.
    _clear_previous(out)
    out.mkdir(parents=True, exist_ok=True)

    # Models: the policy (LoRA adapter or all weights) and its reference.
    policy, reference = setup_models(cfg, device, dtype, encoded, ids, tokenizer.pad_token_id,
                                     out / "ref_logps.jsonl")

    # Optimizer and schedule: a step is grad_accum micro-batches; an epoch ends with a short one.
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    micro_per_epoch = math.ceil(len(encoded) / cfg.micro_batch)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total_steps, warmup))

    def batches():  # micro-batches forever, reshuffled every epoch
        epoch = 0
        while True:
            order = list(range(len(encoded)))
            random.Random(cfg.seed + epoch).shuffle(order)
            for start in range(0, len(order), cfg.micro_batch):
                chosen = order[start:start + cfg.micro_batch]
                yield epoch, [ids[i] for i in chosen], collate([encoded[i] for i in chosen], cfg.method,
                                                               tokenizer.pad_token_id)
            epoch += 1

    metrics_file = (out / "metrics.jsonl").open("w", encoding="utf-8")
    stream, history = batches(), []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for step in range(total_steps):
        t0, tokens, parts = time.perf_counter(), 0, []
        micro = [next(stream) for _ in range(cfg.grad_accum)]
        n_examples = sum(len(batch_ids) for _, batch_ids, _ in micro)
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        for epoch, batch_ids, batch in micro:
            batch = _to(batch, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss, metrics = compute_loss(cfg, policy, reference, batch, batch_ids)
            # Each example weighs the same in the step, however the micro-batches fell.
            (loss * len(batch_ids) / n_examples).backward()
            tokens += int(batch["attention_mask"].sum())
            parts.append((len(batch_ids), metrics))
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        record = {k: sum(n * m[k] for n, m in parts) / n_examples for k in parts[0][1]}
        record |= {"step": step + 1, "epoch": epoch, "lr": lr, "grad_norm": grad_norm,
                   "tokens_per_s": tokens / (time.perf_counter() - t0),
                   "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
        history.append(record)
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == total_steps:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            if on_log:
                on_log(record | {"total_steps": total_steps})
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < total_steps:
            _save(policy, tokenizer, out / f"checkpoint-{step + 1}")
    metrics_file.close()

    _save(policy, tokenizer, out / "final")
    if cfg.lora and cfg.save_merged:  # weights a server such as vLLM loads as they are
        _save(policy.merge_and_unload(), tokenizer, out / "merged")
    report = {
        "method": cfg.method, "model": cfg.model, "data": cfg.data, "examples": len(encoded),
        "steps": total_steps, "seconds": round(time.perf_counter() - started, 2), "device": str(device),
        "dtype": str(dtype).removeprefix("torch."), "reference": cfg.reference_mode, "lora": cfg.lora,
        "truncated_sequences": truncated, "first": history[0], "last": history[-1],
        "config": cfg.model_dump(), "out": str(out), "final": str(out / "final"),
    }
    write_json_atomic(out / "train_report.json", report)
    return report


def _save(policy, tokenizer, path: Path) -> None:
    """Write to a temporary folder, then rename: a checkpoint is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp)  # under LoRA: the adapter only
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _clear_previous(out: Path) -> None:
    """A rerun into the same folder replaces what a previous run left, nothing else there."""
    for old in [*out.glob("checkpoint-*"), out / "final", out / "merged"]:
        shutil.rmtree(old, ignore_errors=True)
    for name in ("metrics.jsonl", "ref_logps.jsonl", "train_report.json"):
        (out / name).unlink(missing_ok=True)
