"""The typed configuration of a training run, from YAML (configs/train.yaml) plus overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.config import ConfigError, Folder, load_config
from flows.train.methods import METHODS

# accelerate runs CPU processes data parallel only: it would drop an FSDP request without a word.
FSDP_NEEDS_GPUS = "strategy fsdp: needs CUDA GPUs (on CPUs the engine runs data parallel only: use strategy ddp)"


class EvaluateAfter(BaseModel):
    """The evaluation a finished training run starts: its final weights (merged under LoRA) served,
    the IOPO paper's Table 3 suites run on them, and the base model's row beside them."""

    model_config = ConfigDict(extra="forbid")

    serve: Literal["vllm", "simulated"] = Field(
        "vllm", description="what serves the weights: vLLM (the project's launcher), or the simulator, which "
                            "tests the wiring without a GPU (its numbers mean nothing)")
    config: str | None = Field(None, description="an evaluation config (EvalConfig YAML): the judge, sampling, "
                                                 "the server's engine settings (model.tensor_parallel_size, ...)")
    judge_base_urls: list[str] | None = Field(None, description="the judge of Trace, CFBench and ComplexBench; "
                                                                "default: the config's, else the served model itself")
    judge_model: str | None = None
    cfbench_data: str | None = Field(None, description="CFBench's data file: adds its columns (Trace and IFEval "
                                                       "always run)")
    complexbench_data: str | None = Field(None, description="ComplexBench's data file: adds its column")
    limit: int | None = Field(None, ge=1, description="the first N rows of each suite only (a quick look)")
    base: bool = Field(True, description="also the base model's row, evaluated once and kept in base_results")
    base_results: str = Field("runs/eval-base", description="where base models' evaluations are kept, one folder "
                                                            "per model and evaluation settings")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal[METHODS] = "iopo"  # type: ignore[valid-type]
    model: str = Field(..., description="base model: a local folder, or a hub name already in the local cache")
    data: str = Field(..., description="trace-build run folder, its manifest.json, or a LLaMA-Factory JSON file")
    out: Folder | None = Field(None, description="checkpoints, metrics.jsonl, train_report.json; default: "
                            "<run folder>/train-<method>, or runs/train-<method> for a file")
    beta: float = Field(0.1, gt=0, description="DPO / IOPO: how far the trained policy may move from the reference")
    learning_rate: float | None = Field(None, gt=0, description="default: 1e-4 for sft, 5e-6 otherwise (the paper's)")
    epochs: float = Field(3, gt=0, description="passes over the examples")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    max_length: int = Field(6000, ge=8, description="tokens per sequence, prompt and response")
    micro_batch: int = Field(1, ge=1, description="examples per forward pass (IOPO: 4 sequences each)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    lora: bool = True
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    save_merged: bool = Field(False, description="under LoRA, also save the base with the adapter merged "
                                                     "(merged/), as a server such as vLLM loads it; on with "
                                                     "evaluate_after")
    reference: Literal["auto", "copy", "adapter", "precomputed"] = Field(
        "auto", description="auto: adapter under LoRA, copy otherwise")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, "
                                                                   "more time")
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="compute dtype: bf16 on a GPU by default "
                                                                       "(fp16 would need loss scaling)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cuda: every process on its own GPU "
                                                   "(choose which with CUDA_VISIBLE_DEVICES)")
    nproc: int | None = Field(None, ge=1, description="processes, data parallel (one per GPU); default: every GPU "
                              "of the host, 1 on a CPU")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="ddp: a whole model per process; fsdp: weights, "
                                             "gradients and optimizer state sharded over the processes")
    resume: Literal["auto", "fresh", "replace"] = Field(
        "auto", description="auto: continue from the newest complete checkpoint of the same run in `out`, refuse "
                            "another run's folder; replace: the same, but clear another run's folder (other data: "
                            "a refreshed build; what a build's training trigger asks); fresh: clear `out`, start over")
    seed: int = Field(0, description="random seed: example order, LoRA initialization")
    limit: int | None = Field(None, ge=1, description="train on the first N examples only")
    evaluate_after: EvaluateAfter | None = Field(
        None, description="when training ends, evaluate the final model (true: with the defaults)")
    logging_steps: int = Field(1, ge=1)
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N steps (always at the end); "
                                   "a killed run resumes from the last one")

    @field_validator("evaluate_after", mode="before")
    @classmethod
    def _evaluate_after_switch(cls, value):
        return {} if value is True else None if value is False else value

    @property
    def output_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data = Path(self.data)
        run = data if data.is_dir() else data.parent if data.name == "manifest.json" else Path("runs")
        return run / f"train-{self.method}"

    @property
    def saves_merged(self) -> bool:
        return self.lora and (self.save_merged or self.evaluate_after is not None)

    @property
    def lr(self) -> float:
        return self.learning_rate or (1e-4 if self.method == "sft" else 5e-6)

    @property
    def reference_mode(self) -> str | None:
        if self.method == "sft":
            return None
        if self.reference == "auto":
            return "adapter" if self.lora else "copy"
        if self.reference == "adapter" and not self.lora:
            raise ConfigError("reference 'adapter' needs LoRA (lora: true); use copy or precomputed")
        return self.reference


def load_train_config(path: str | Path | None, overrides: dict) -> TrainConfig:
    """Config file (optional) + overrides (keys whose value is None are left alone), validated
    now, the choice of reference included, not mid-run."""
    cfg = load_config(path, overrides, model=TrainConfig)
    cfg.reference_mode  # noqa: B018 -- raises ConfigError for an impossible combination
    return cfg
