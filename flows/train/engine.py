"""trace-build on transformers' Trainer (accelerate underneath): the engine owns the loop, devices,
mixed precision, gradient accumulation, data parallelism and FSDP, checkpoints with optimizer,
scheduler, RNG and data position, and resuming from them. What is ours plugs in here:

    PreferenceTrainer   Trainer.compute_loss -> objective.batch_loss with our reference, and
                        Trainer.log -> our per-example metrics averaged over micro-batches and
                        processes (every process reduces, so the numbers are the global batch's)
    MetricsSink         each logged step -> metrics.jsonl, TensorBoard, and a callback (progress)
    training_arguments  TrainConfig -> TrainingArguments
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from flows.train.config import TrainConfig
from flows.train.encode import collate
from flows.train.objective import batch_loss

TENSORBOARD_DIR = "tensorboard"
# Trainer's names -> ours (metrics.jsonl kept the names it had before the engine).
RENAMED = {"learning_rate": "lr"}


def training_arguments(cfg: TrainConfig, out: Path, bf16: bool) -> TrainingArguments:
    fsdp = {}
    if cfg.strategy == "fsdp":
        # Full shard of parameters, gradients and optimizer state, one unit per decoder layer
        # (the model's own _no_split_modules); the full state dict is gathered for saving.
        fsdp = {"fsdp": True, "fsdp_config": {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                              "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"}}
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # below 1: a share of the steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch",
        bf16=bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps or 10**9,  # Trainer also saves at the last step: a finished run resumes at its end
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=cfg.device == "cpu",
        dataloader_pin_memory=cfg.device != "cpu" and torch.cuda.is_available(),  # only copies to a GPU gain
        report_to="none",  # MetricsSink writes TensorBoard itself: it must purge the steps a resume redoes
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_drop_last=False,
        ddp_find_unused_parameters=False,
        **fsdp,
    )


def collator(method: str, pad_id: int) -> Callable[[list[dict]], dict]:
    def collate_examples(items: list[dict]) -> dict:
        return collate([item["seqs"] for item in items], method, pad_id) | {"ids": [item["id"] for item in items]}
    return collate_examples


class PreferenceTrainer(Trainer):
    """Trainer with the loss and metrics of SFT, DPO and IOPO."""

    def __init__(self, *args, method: str, beta: float, reference, **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.beta, self.reference = method, beta, reference
        # batch_loss is a mean over examples: Trainer divides it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._sums: dict[str, torch.Tensor] = {}
        self._examples = 0
        self._tokens = 0
        self._since = time.perf_counter()

    def planned_steps(self) -> int:
        """The optimizer steps of the whole run, as the engine counts them (epochs or max_steps)."""
        return self.set_initial_training_values(self.args, self.get_train_dataloader())[-1]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop("ids")
        # The reference too computes under the engine's autocast (only the prepared policy would
        # otherwise): at step 0 policy and reference must score alike, under bf16 as under fp32.
        with self.accelerator.autocast():
            loss, metrics = batch_loss(self.method, self.beta, model, self.reference, inputs, ids)
        for name, values in metrics.items():
            self._sums[name] = self._sums.get(name, 0.0) + values.float().sum()
        self._examples += len(ids)
        self._tokens += int(inputs["attention_mask"].sum())
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._examples:  # a training step's log: every process is here
            logs.update(self._reduced_metrics())
        super().log({RENAMED.get(k, k): v for k, v in logs.items()}, start_time)

    def _reduced_metrics(self) -> dict[str, float]:
        names = sorted(self._sums)  # the same names on every process: the same method
        device = self.args.device
        local = torch.stack([torch.as_tensor(self._sums[n], device=device) for n in names]
                            + [torch.tensor(float(self._examples), device=device),
                               torch.tensor(float(self._tokens), device=device)])
        total = self.accelerator.reduce(local, reduction="sum")
        examples, tokens = total[-2].item(), total[-1].item()
        now = time.perf_counter()
        metrics = {n: total[i].item() / examples for i, n in enumerate(names)}
        metrics["tokens_per_s"] = tokens / max(now - self._since, 1e-9)
        if device.type == "cuda":
            metrics["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        self._sums, self._examples, self._tokens, self._since = {}, 0, 0, now
        return metrics


class MetricsSink(TrainerCallback):
    """On the main process: every logged training step to metrics.jsonl (appended: a resumed run
    continues the file) and to TensorBoard (events of the steps a resume redoes are purged), and
    to `on_log(record)`; a record is the metrics, its step and total_steps."""

    def __init__(self, out: Path, resumed_at: int, on_log: Callable[[dict], None] | None):
        self.out, self.resumed_at, self.progress = out, resumed_at, on_log
        self.writer = self.file = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.out / TENSORBOARD_DIR), purge_step=self.resumed_at + 1)
        self.file = (self.out / "metrics.jsonl").open("a", encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        metrics = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        for name, value in metrics.items():
            self.writer.add_scalar(f"train/{name}", value, state.global_step)
        self.writer.flush()
        record = metrics | {"step": state.global_step, "total_steps": state.max_steps}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.progress:
            self.progress(record)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.file.close()
