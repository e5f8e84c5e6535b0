"""The `trace-eval` Prefect flow: the evaluation of a model behind an OpenAI-compatible API, on
Trace (suite "trace", judged by an LLM), IFEval (suite "ifeval", decided by rules), CFBench
("cfbench"), ComplexBench ("complexbench"), or all of them as the IOPO paper's Table 3 ("all").

The work is flows.evaluation.evaluate, flows.ifeval.suite.evaluate_ifeval,
flows.cfbench.suite.evaluate_cfbench, flows.complexbench.suite.evaluate_complexbench and
flows.table3.evaluate_all; this module names it for Prefect and reports it: progress artifacts
while answers and scores come in (trace-eval-progress-answer / -judge), then the result tables as
markdown artifacts (trace-eval-results, ifeval-results, cfbench-results, complexbench-results; and
table-3 for "all").
"""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.cfbench import suite as cfbench_suite
from flows.complexbench import suite as complexbench_suite
from flows.config import EvalConfig, eval_overrides, load_config
from flows.evaluation import PHASES, evaluate, metrics_markdown
from flows.ifeval import scoring as ifeval_scoring
from flows.ifeval.suite import evaluate_ifeval
from flows.table3 import evaluate_all, table_markdown
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
    lang: str | None = None,
    cfbench_data: str | None = None,
    complexbench_data: str | None = None,
    checks_cache: str | None = None,
) -> dict:
    """Evaluate a model on Trace (default: the official 1,042-row set; or a run folder's eval
    split), on IFEval (suite "ifeval": the 541 prompts, or score a `responses` file), on CFBench or
    ComplexBench (suite "cfbench" / "complexbench" with `data`, ComplexBench in `lang` zh or en),
    or on all of them (suite "all": Trace and IFEval, CFBench and ComplexBench where
    `cfbench_data` / `complexbench_data` are given) as the paper's Table 3. The model under test
    is at base_urls (or a backend started for the run); the judge at judge_base_urls /
    judge_backend, by default the same server. `checks_cache`: the request cache of rule-check
    extractions, to share among evaluations with the same judge."""
    cfg = load_config(config, eval_overrides(
        suite=suite, responses=responses, data=data, limit=limit, sample=sample, out=out, base_urls=base_urls, model=model, backend=backend,
        backend_model=backend_model, judge_base_urls=judge_base_urls, judge_model=judge_model,
        judge_backend=judge_backend, judge_backend_model=judge_backend_model, lang=lang, cfbench_data=cfbench_data,
        complexbench_data=complexbench_data, checks_cache=checks_cache), model=EvalConfig)
    progress = ArtifactProgress(prefix="trace-eval-progress", unit="rows")
    if cfg.suite == "ifeval":
        return await _ifeval(cfg, progress)
    if cfg.suite in BENCHMARKS:
        return await _benchmark(cfg, progress)
    if cfg.suite == "all":
        return await _all(cfg, progress)
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


# suite -> (its module, the artifact key, what the artifact holds)
BENCHMARKS = {"cfbench": (cfbench_suite, "cfbench-results", "CFBench CSR / ISR / PSR (easy, hard, full), by type"),
              "complexbench": (complexbench_suite, "complexbench-results",
                               "ComplexBench DRFR, its breakdowns and the coherent test")}


async def _benchmark(cfg, progress: ArtifactProgress) -> dict:
    module, key, description = BENCHMARKS[cfg.suite]
    result = await getattr(module, f"evaluate_{cfg.suite}")(cfg, progress)
    await progress.finish()
    metrics = result.metrics
    markdown = module.metrics_markdown(metrics)
    print(markdown)
    await create_markdown_artifact(key=key, markdown=markdown, description=description)
    if metrics["incomplete"]:  # results so far are written; a rerun asks only for what is missing
        raise RuntimeError(f"{metrics['incomplete']} rows not scored because of server errors: {metrics['failures']}")
    if cfg.suite == "cfbench":
        return {"out": str(result.out_dir), **{k: metrics["full"][k] for k in ("CSR", "ISR", "PSR")}}
    return {"out": str(result.out_dir), "drfr": metrics["drfr"]["rate"]}


async def _all(cfg, progress: ArtifactProgress) -> dict:
    result = await evaluate_all(cfg, progress)
    await progress.finish()
    metrics = result.metrics
    for suite, done in result.suites.items():  # each suite's own tables, as when it runs alone
        if suite == "trace":
            tables = metrics_markdown(done.metrics, done.metrics["model"], done.metrics["judge"])
            key, description = "trace-eval-results", "IF-S / IF-M and breakdowns of the Trace evaluation"
        elif suite == "ifeval":
            tables = ifeval_scoring.metrics_markdown(done.metrics)
            key, description = "ifeval-results", "IFEval strict and loose accuracy, by category and instruction"
        else:
            module, key, description = BENCHMARKS[suite]
            tables = module.metrics_markdown(done.metrics)
        await create_markdown_artifact(key=key, markdown=tables, description=description)
    markdown = table_markdown(metrics)
    print(markdown)
    await create_markdown_artifact(key="table-3", markdown=markdown,
                                   description="The IOPO paper's Table 3 for this model, beside the paper's Qwen2-7B IOPO")
    if metrics["incomplete"]:  # results so far are written; a rerun asks only for what is missing
        raise RuntimeError(f"{metrics['incomplete']} rows not scored because of server errors: "
                           + ", ".join(f"{s} {i['failures']}" for s, i in metrics["suites"].items() if i["incomplete"]))
    return {"out": str(result.out_dir), "table": metrics["table"]}
