"""The `trace-eval` Prefect flow: the evaluation of a model behind an OpenAI-compatible API, on
any suite of the registry (flows/suites.py: Trace, IFEval, CFBench, ComplexBench), or all of
them as the IOPO paper's Table 3 ("all", flows/table3.py).

The work is each suite's own; this module names it for Prefect and reports it: progress
artifacts while answers and scores come in, then each suite's result tables as a markdown
artifact (its key in the registry; and table-3 for "all"), all best effort (flows/reporting.py).
Rows left unscored, for any reason, fail the run with one line saying how many and why.
"""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.config import EvalConfig, eval_overrides, load_config
from flows.suites import ALL, SUITES, unscored_lines
from flows.table3 import evaluate_all, table_markdown
from flows.reporting import ArtifactProgress, best_effort, report_failures_in_one_line


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
    report_failures_in_one_line()
    cfg = load_config(config, eval_overrides(
        suite=suite, responses=responses, data=data, limit=limit, sample=sample, out=out, base_urls=base_urls, model=model, backend=backend,
        backend_model=backend_model, judge_base_urls=judge_base_urls, judge_model=judge_model,
        judge_backend=judge_backend, judge_backend_model=judge_backend_model, lang=lang, cfbench_data=cfbench_data,
        complexbench_data=complexbench_data, checks_cache=checks_cache), model=EvalConfig)
    progress = ArtifactProgress(prefix="trace-eval-progress", unit="rows")
    if cfg.suite == ALL:
        result = await evaluate_all(cfg, progress)
        done = {name: suite_result.metrics for name, suite_result in result.suites.items()}
    else:
        result = await SUITES[cfg.suite].runner()(cfg, progress)
        done = {cfg.suite: result.metrics}
    await progress.finish()
    for name, metrics in done.items():  # each suite's own tables, as when it runs alone
        key, description = SUITES[name].artifact
        markdown = SUITES[name].markdown()(metrics)
        print(markdown)
        await best_effort(create_markdown_artifact(key=key, markdown=markdown, description=description), key)
    if cfg.suite == ALL:
        markdown = table_markdown(result.metrics)
        print(markdown)
        await best_effort(create_markdown_artifact(
            key="table-3", markdown=markdown,
            description="The IOPO paper's Table 3 for this model, beside the paper's Qwen2-7B IOPO"), "table-3")
    unscored = unscored_lines(done)
    if unscored:  # results so far are written; a rerun asks only for what is missing
        raise RuntimeError("; ".join(unscored))
    if cfg.suite == ALL:
        return {"out": str(result.out_dir), "table": result.metrics["table"]}
    return {"out": str(result.out_dir), **SUITES[cfg.suite].headline(result.metrics)}
