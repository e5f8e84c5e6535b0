"""The `trace-eval` Prefect flow: the evaluation of a model behind an OpenAI-compatible API, on
Trace (suite "trace", judged by an LLM) or IFEval (suite "ifeval", decided by rules).

The work is flows.evaluation.evaluate and flows.ifeval.suite.evaluate_ifeval; this module names
it for Prefect and reports it: progress artifacts while answers and scores come in
(trace-eval-progress-answer / -judge), then the result tables as a markdown artifact
(trace-eval-results, ifeval-results).
"""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.config import EvalConfig, eval_overrides, load_config
from flows.evaluation import PHASES, evaluate, metrics_markdown
from flows.ifeval import scoring as ifeval_scoring
from flows.ifeval.suite import evaluate_ifeval
from flows.trace_build import ArtifactProgress


@flow(name="trace-eval", log_prints=True)
async def trace_eval(
    suite: str = "trace",
    data: str | None = None,
    responses: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    out: str | None = None,
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
    split) or on IFEval (suite "ifeval": the 541 prompts, or score a `responses` file). The model
    under test is at base_urls (or a backend started for the run); the Trace judge at
    judge_base_urls / judge_backend, by default the same server."""
    cfg = load_config(config, eval_overrides(
        suite=suite, responses=responses, data=data, limit=limit, sample=sample, out=out, base_urls=base_urls, model=model, backend=backend,
        backend_model=backend_model, judge_base_urls=judge_base_urls, judge_model=judge_model,
        judge_backend=judge_backend, judge_backend_model=judge_backend_model), model=EvalConfig)
    progress = ArtifactProgress(prefix="trace-eval-progress", unit="rows")
    if cfg.suite == "ifeval":
        return await _ifeval(cfg, progress)
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


async def _ifeval(cfg, progress: ArtifactProgress) -> dict:
    result = await evaluate_ifeval(cfg, progress)
    await progress.finish()
    metrics = result.metrics
    markdown = ifeval_scoring.metrics_markdown(metrics)
    print(markdown)
    await create_markdown_artifact(key="ifeval-results", markdown=markdown,
                                   description="IFEval strict and loose accuracy, by category and instruction")
    if metrics["incomplete"]:  # results so far are written; a rerun asks only for what is missing
        raise RuntimeError(f"{metrics['incomplete']} prompts not answered because of server errors: {metrics['failures']}")
    return {"out": str(result.out_dir), "strict_prompt_level": metrics["strict"]["prompt_level"]["rate"],
            "loose_prompt_level": metrics["loose"]["prompt_level"]["rate"],
            "strict_instruction_level": metrics["strict"]["instruction_level"]["rate"],
            "loose_instruction_level": metrics["loose"]["instruction_level"]["rate"]}
