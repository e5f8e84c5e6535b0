"""A training run, top to bottom: SFT, DPO and the IOPO variants on transformers' Trainer.

    report = train(cfg, on_log=print)   # -> out/metrics.jsonl, out/tensorboard/, out/final/, out/train_report.json

One process runs it as it is; under a launcher (torchrun, accelerate launch, or `trace-build train
--nproc N`, see launch.py) every process runs it and the engine splits the batches. One optimizer
step = grad_accum micro-batches of micro_batch examples on each process; a micro-batch is one
forward pass over all the sequences its method scores (IOPO: four per example).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from flows.errors import InputError
from flows.store import write_json_atomic
from flows.train import checkpoints as C
from flows.train import model as M
from flows.train import reference as R
from flows.train.config import FSDP_NEEDS_GPUS, TrainConfig
from flows.train.encode import encode_example
from flows.train.examples import load_examples
from flows.train.methods import SEQUENCES


@dataclass
class TrainingData:
    tokenizer: object
    items: list[dict]  # {"id": example id, "seqs": {sequence name: Encoded}}
    truncated: dict[str, int]  # sequences whose prompt / response was cut to max_length

    def digest(self) -> str:
        """sha256 of the encoded examples: ids, tokens and masks, as the model sees them."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(str(item["id"]).encode() + b"\0")
            for name, seq in sorted(item["seqs"].items()):
                digest.update(name.encode() + array("q", seq.input_ids).tobytes() + array("q", seq.labels).tobytes())
        return digest.hexdigest()[:16]


def load_training_data(cfg: TrainConfig) -> TrainingData:
    """Examples -> token sequences (prompt masked), truncations counted. Raises InputError, in one
    line, for data or a model folder that cannot serve."""
    examples = load_examples(cfg.data, cfg.method)[:cfg.limit]
    tokenizer = M.load_tokenizer(cfg.model)
    items = [{"id": e.id, "seqs": encode_example(tokenizer, e, cfg.method, cfg.max_length)} for e in examples]
    truncated = {"prompt": 0, "response": 0}
    for item in items:
        for seq in item["seqs"].values():
            for part in (seq.truncated or "").split("+"):
                if part:
                    truncated[part] += 1
    return TrainingData(tokenizer, items, truncated)


def compute_dtype(cfg: TrainConfig) -> torch.dtype:
    on_gpu = cfg.device != "cpu" and torch.cuda.is_available()
    return M.pick_dtype(cfg.dtype, torch.device("cuda" if on_gpu else "cpu"))


def load_policy(cfg: TrainConfig, dtype: torch.dtype, load=M.load_model, device=torch.device("cpu")):
    """Full fine-tuning keeps fp32 master weights and computes in `dtype` under autocast (AdamW
    steps of 5e-6 vanish in bf16 weights); under LoRA the frozen base stays in `dtype` and peft
    keeps the adapter in fp32. `load(model, dtype, device, trainable)` makes the model (the cost
    benchmark passes one that builds random weights)."""
    policy = load(cfg.model, dtype if cfg.lora else torch.float32, device, True)
    if cfg.lora:
        if cfg.gradient_checkpointing:
            policy.enable_input_require_grads()  # checkpointed frozen layers still pass gradients on
        policy = M.add_lora(policy, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    return policy


def build_reference(cfg: TrainConfig, policy, data: TrainingData, device, dtype, out: Path, state,
                    load=M.load_model):
    """The reference the method compares against, as cfg.reference_mode says (see reference.py)."""
    mode = cfg.reference_mode
    if mode == "copy":
        # the same weight dtype as the policy: at step 0 policy and reference must agree exactly
        return R.FrozenCopy(load(cfg.model, dtype if cfg.lora else torch.float32, device, False))
    if mode == "adapter":
        return R.AdapterDisabled(policy)
    if mode == "precomputed":
        path = out / "ref_logps.jsonl"
        ids = [item["id"] for item in data.items]
        # Stored by this run before its first step: a resumed run must not score with trained weights.
        table = R.load_table(path, ids, cfg.method)
        if table is None:
            share = R.precompute(policy.to(device), cfg.lora, cfg.method,
                                 [(item["id"], item["seqs"]) for item in data.items], cfg.micro_batch,
                                 data.tokenizer.pad_token_id, device, dtype, state.process_index, state.num_processes)
            table = _gathered(share, state)
            if state.is_main_process:
                R.save_table(path, table)
        return R.Precomputed(table, SEQUENCES[cfg.method])
    return None


def _gathered(share: dict, state) -> dict:
    if state.num_processes == 1:
        return share
    import torch.distributed as dist

    shares = [None] * state.num_processes
    dist.all_gather_object(shares, share)
    return {k: v for part in shares for k, v in part.items()}


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None) -> dict:
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from flows.train.engine import MetricsSink, PreferenceTrainer, collator, training_arguments

    started = time.perf_counter()
    M.quiet_libraries()
    out = cfg.output_dir
    data = load_training_data(cfg)
    identity = C.run_identity(cfg, data.digest())
    checkpoint, clear = C.resume_point(out, identity, cfg.resume)
    dtype = compute_dtype(cfg)
    set_seed(cfg.seed)  # the LoRA adapter's initial weights too (the engine seeds its own part later)
    args = training_arguments(cfg, out, bf16=dtype == torch.bfloat16)
    device = args.device  # sets up the engine's state: the process group under a launcher
    state = args.distributed_state
    if cfg.strategy == "fsdp" and device.type != "cuda":
        raise InputError(FSDP_NEEDS_GPUS)
    policy = load_policy(cfg, dtype)

    # Data and model have loaded: only now may a fresh start clear what an earlier run left.
    if state.is_main_process:
        if clear:
            C.start_fresh(out)
        C.record_run(out, identity)
        C.keep_metrics_until(out, _step(checkpoint))
    state.wait_for_everyone()

    reference = build_reference(cfg, policy, data, device, dtype, out, state)
    trainer = PreferenceTrainer(
        model=policy, args=args, train_dataset=data.items, processing_class=data.tokenizer,
        data_collator=collator(cfg.method, data.tokenizer.pad_token_id),
        callbacks=[MetricsSink(out, _step(checkpoint), on_log)],
        method=cfg.method, beta=cfg.beta, reference=reference)
    trainer.remove_callback(PrinterCallback)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # A run that has taken all its steps trains no more: resumed mid-epoch, the engine would take
    # one more step before it looks at the count.
    finished = checkpoint is not None and _step(checkpoint) >= trainer.planned_steps()
    if not finished:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    elif not (out / "final").exists():  # killed between its last checkpoint and the final save
        trainer._load_from_checkpoint(str(checkpoint))  # what train() does first when it resumes
    trained = not finished or not (out / "final").exists()
    if trained:
        _save_final(trainer, out / "final", state)
    if state.is_main_process and cfg.saves_merged and (trained or not (out / "merged").exists()):
        # weights a server such as vLLM loads as they are: the base with the adapter merged in
        merged = M.load_model(str(out / "final"), dtype, torch.device("cpu"), trainable=False)
        _save_whole(lambda tmp: (merged.save_pretrained(tmp), data.tokenizer.save_pretrained(tmp)), out / "merged")
    report = {
        "method": cfg.method, "model": cfg.model, "data": cfg.data, "examples": len(data.items),
        "steps": trainer.state.global_step if not finished else _step(checkpoint), "resumed_from": _step(checkpoint) or None,
        "seconds": round(time.perf_counter() - started, 2), "processes": state.num_processes,
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "strategy": cfg.strategy,
        "distributed": state.distributed_type.value,  # what the engine ran: NO, MULTI_GPU, MULTI_CPU, FSDP
        "reference": cfg.reference_mode, "lora": cfg.lora, "truncated_sequences": data.truncated,
        "config": cfg.model_dump(), "out": str(out), "final": str(out / "final"),
        "merged": str(out / "merged") if cfg.saves_merged else None,
        "tensorboard": str(out / "tensorboard"),
    }
    history = read_metrics(out)
    if history:
        report |= {"first": history[0], "last": history[-1]}
    if state.is_main_process:
        write_json_atomic(out / "train_report.json", report)
    state.wait_for_everyone()
    return report


def read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _step(checkpoint: Path | None) -> int:
    return C.checkpoint_step(checkpoint) if checkpoint else 0


def _save_final(trainer, path: Path, state) -> None:
    """Every process takes part (FSDP gathers the shards); the main one writes, to a temporary
    folder renamed at the end: `final` is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(tmp))  # under LoRA: the adapter only; the tokenizer beside it
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    state.wait_for_everyone()


def _save_whole(write: Callable[[Path], object], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
