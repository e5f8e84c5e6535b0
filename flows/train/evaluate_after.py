"""The loop closed: a finished training run's model evaluated as the IOPO paper's Table 3, beside
its base model.

    table = evaluate_after(cfg, report, evaluate)   # cfg.evaluate_after set; report from run_training

Each model is served by the project's launcher (vLLM, or the simulator for a dry run) for as long
as its evaluation lasts, through trace-eval's `--suite all` (Trace and IFEval, CFBench and
ComplexBench where their files are given). `evaluate(evaluation)` runs one: the iopo-train flow
passes the trace-eval flow (a subflow in the UI), the CLI the plain function (`evaluate_plainly`).

Where the results live, and why:
- the trained model: <train out>/eval/. The server names the model by its folder, and the request
  cache answers by name, so the folder records the weights' digest and is started afresh when
  the weights changed (a rerun that trained further); a rerun on the same weights pays nothing.
- the base model: <base_results>/<model>-<settings digest>/, evaluated once per model, weights and
  evaluation settings, and reused by every later training run while complete.
- both share one cache of rule-check extractions (judge requests paid once per row).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.config import ConfigError, EvalConfig, eval_overrides, load_config
from flows.errors import OneLineError
from flows.store import write_json_atomic, write_text_atomic
from flows.train.config import TrainConfig

WEIGHTS_RECORD = "weights.json"
# The files that make a model what it is; optimizer states and logs are not.
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.txt", "*.jinja")


class EvaluationIncomplete(OneLineError, RuntimeError):
    """Servers left rows unscored: no table from part of the rows; a rerun finishes from the caches."""


@dataclass(frozen=True)
class Evaluation:
    label: str  # the row's name in Table 3
    parameters: dict  # the trace-eval flow's parameters (suite "all")

    @property
    def out(self) -> Path:
        return Path(self.parameters["out"])

    def finished(self) -> dict | None:
        """The results of a complete earlier evaluation in `out`, else None."""
        path = self.out / "results.json"
        if not path.exists():
            return None
        results = json.loads(path.read_text(encoding="utf-8"))
        return None if results.get("incomplete") else results


def weights_digest(folder: str | Path) -> str:
    """sha256 over a model folder's weight, config and tokenizer files (names and contents); a
    name that is not a local folder (a hub name) stands for itself."""
    root = Path(folder)
    if not root.is_dir():
        return hashlib.sha256(str(folder).encode()).hexdigest()
    digest = hashlib.sha256()
    files = sorted({p for pattern in _WEIGHT_FILES for p in root.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def served_weights(report: dict) -> str:
    """What a server loads: under LoRA the base with the adapter merged in, else the final weights."""
    return report.get("merged") or report["final"]


def base_weights(cfg: TrainConfig) -> str:
    """What a server loads for the base model. A LoRA output folder (the paper's chain: DPO or IOPO
    from the SFT model) is an adapter, which vLLM does not load as a model: its run's merged/."""
    model = Path(cfg.model)
    if not (model / "adapter_config.json").exists():
        return cfg.model
    merged = model.parent / "merged"
    if (merged / "config.json").exists():
        return str(merged)
    raise ConfigError(f"evaluate_after: the base model {cfg.model} is a LoRA adapter, which a server does not load; "
                      f"train it with --save-merged (it writes {merged}), or set evaluate_after.base: false")


def eval_parameters(cfg: TrainConfig, weights: str, out: Path, checks_cache: Path) -> dict:
    """trace-eval's parameters for `weights` served by cfg.evaluate_after.serve."""
    after = cfg.evaluate_after
    return {"suite": "all", "config": after.config, "out": str(out), "backend": after.serve,
            "backend_model": str(weights), "judge_base_urls": after.judge_base_urls, "judge_model": after.judge_model,
            "cfbench_data": after.cfbench_data, "complexbench_data": after.complexbench_data, "limit": after.limit,
            "checks_cache": str(checks_cache)}


def eval_config(parameters: dict) -> EvalConfig:
    """The EvalConfig trace-eval builds from these parameters."""
    rest = {k: v for k, v in parameters.items() if k != "config"}
    return load_config(parameters.get("config"), eval_overrides(**rest), model=EvalConfig)


def check(cfg: TrainConfig) -> None:
    """Before training: the evaluation settings and the benchmark files, so that a mistake in them
    is one line now rather than after the training."""
    from flows.table3 import check_data

    settings = eval_config(eval_parameters(cfg, base_weights(cfg) if cfg.evaluate_after.base else cfg.model,
                                           Path("."), Path(".")))
    check_data(settings)  # (the served weights replace any model server of evaluate_after.config)


def plan(cfg: TrainConfig, report: dict) -> list[Evaluation]:
    """The trained model's evaluation, then the base model's (when asked)."""
    after = cfg.evaluate_after
    checks = Path(after.base_results) / "eval-checks.sqlite"
    trained = Evaluation(f"`{cfg.method}` on `{_short(cfg.model)}` (this run)",
                         eval_parameters(cfg, served_weights(report), Path(report["out"]) / "eval", checks))
    if not after.base:
        return [trained]
    base = eval_parameters(cfg, base_weights(cfg), Path("."), checks)
    base["out"] = str(Path(after.base_results) / f"{_slug(cfg.model)}-{_settings_digest(base)}")
    return [trained, Evaluation(f"`{_short(cfg.model)}` (base)", base)]


def _settings_digest(parameters: dict) -> str:
    """What makes one base evaluation differ from another: the base weights and every evaluation
    setting (the config file's contents, not its name); not where the results go."""
    settings = eval_config(parameters).model_dump(mode="json", exclude={"out", "checks_cache"})
    settings["weights"] = weights_digest(parameters["backend_model"])
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _short(model: str) -> str:
    return Path(model).name or model


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", _short(model)).strip("-") or "model"


def prepare_trained_folder(evaluation: Evaluation) -> None:
    """Start <train out>/eval afresh unless it holds an evaluation of these very weights."""
    digest = weights_digest(evaluation.parameters["backend_model"])
    record = evaluation.out / WEIGHTS_RECORD
    if record.exists() and json.loads(record.read_text(encoding="utf-8")).get("sha256") == digest:
        return
    shutil.rmtree(evaluation.out, ignore_errors=True)
    write_json_atomic(record, {"weights": evaluation.parameters["backend_model"], "sha256": digest})


def evaluate_after(cfg: TrainConfig, report: dict, evaluate: Callable[[Evaluation], object]) -> dict:
    """Evaluate the trained model (and the base, unless already done), then write Table 3 with
    both rows into <train out>/eval/table-3.md and table-3.json. Returns {"markdown", "rows"}."""
    from flows.table3 import comparison_markdown

    evaluations = plan(cfg, report)  # its settings were checked before the training (check)
    prepare_trained_folder(evaluations[0])
    rows = []
    for evaluation in evaluations:
        results = evaluation.finished()
        if results is None:
            evaluate(evaluation)  # an incomplete evaluation raises: no table from part of the rows
            results = evaluation.finished()
        if results is None:
            raise EvaluationIncomplete(f"the evaluation of {evaluation.label} in {evaluation.out} did not finish")
        rows.append({"label": evaluation.label, "out": str(evaluation.out), **results})
    markdown = comparison_markdown([(row["label"], row) for row in rows])
    out = evaluations[0].out
    write_text_atomic(out / "table-3.md", markdown)
    write_json_atomic(out / "table-3.json", {"rows": [{"label": r["label"], "model": r["model"], "judge": r["judge"],
                                                       "out": r["out"], **r["table"]} for r in rows]})
    return {"markdown": markdown, "rows": rows}


def evaluate_plainly(progress=None) -> Callable[[Evaluation], object]:
    """An `evaluate` for evaluate_after outside Prefect: trace-eval's work without the flow."""
    from flows import aio
    from flows.llm.client import LLMFailure
    from flows.llm.running import BackendError
    from flows.progress import NoProgress
    from flows.suites import unscored_lines
    from flows.table3 import evaluate_all

    def evaluate(evaluation: Evaluation):
        try:
            result = aio.run(evaluate_all(eval_config(evaluation.parameters), progress or NoProgress()))
        except LLMFailure as exc:  # the server is not there: one line, not a traceback
            raise BackendError(f"LLM server: {exc}") from None
        lines = unscored_lines({name: suite_result.metrics for name, suite_result in result.suites.items()})
        if lines:
            raise EvaluationIncomplete(f"{evaluation.label} in {evaluation.out}: " + "; ".join(lines))
        return result

    return evaluate
