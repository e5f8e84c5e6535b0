"""The `trace-eval` Prefect flow: the Trace evaluation of a model behind an OpenAI-compatible API.

The work is flows.evaluation.evaluate; this module names it for Prefect and reports it: progress
artifacts while answers and scores come in (trace-eval-progress-answer / -judge), then the
result tables as a markdown artifact (trace-eval-results).
"""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.config import EvalConfig, eval_overrides, load_config
from flows.evaluation import PHASES, evaluate, metrics_markdown
from flows.trace_build import ArtifactProgress


@flow(name="trace-eval", log_prints=True)
async def trace_eval(
    data: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    out: str = "runs/eval",
    base_urls: list[str] | None = None,
    model: str | None = None,
    backend: str | None = None,
    backend_model: str | None = None,
    judge_base_urls: list[str] | None = None,
    judge_model: str | None = None,
    judge_backend: str | None = None,
    judge_backend_model: str | None = None,
    config: str | None = None,
) -> dict:
    """Evaluate a model on Trace (default: the official 1,042-row set; or a run folder's eval
    split). The model under test is at base_urls (or a backend started for the run); the judge at
    judge_base_urls / judge_backend, by default the same server."""
    cfg = load_config(config, eval_overrides(
        data=data, limit=limit, sample=sample, out=out, base_urls=base_urls, model=model, backend=backend,
        backend_model=backend_model, judge_base_urls=judge_base_urls, judge_model=judge_model,
        judge_backend=judge_backend, judge_backend_model=judge_backend_model), model=EvalConfig)
    progress = ArtifactProgress(prefix="trace-eval-progress", unit="rows")
    result = await evaluate(cfg, progress)
    await progress.finish()
    metrics = result.metrics
    markdown = metrics_markdown(metrics, metrics["model"], metrics["judge"])
    print(markdown)
    await create_markdown_artifact(key="trace-eval-results", markdown=markdown,
                                   description="IF-S / IF-M and breakdowns of the Trace evaluation")
    if metrics["incomplete"]:  # results so far are written; a rerun asks only for what is missing
        raise RuntimeError(f"{metrics['incomplete']} rows not evaluated because of server errors: {metrics['failures']}")
    return {"out": str(result.out_dir), "if_s": metrics["if_s"]["strict"]["rate"],
            "if_m": metrics["if_m"]["strict"]["rate"], "phases": PHASES}
