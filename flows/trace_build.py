"""The `trace-build` Prefect flow: seeds -> five stages -> DPO / IOPO -> splits and exports.

The work itself is flows.build's two halves, build_stages and finish_build, as from the command
line; what this module adds is Prefect's: each window of seeds and the splits-and-exports step as
tasks (so the UI shows where a build is), a progress artifact per stage, the funnel and summary
artifacts (best effort, flows/reporting.py: a build outlives the API's restarts), the range runner
that fans a build out as flow runs of `trace-build-range` on a work pool (ranges_on_pool), and the
training deployment started when the build is done.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import aio
from flows.build import BuildResult, StagesBuilt, build_range, build_stages, finish_build
from flows.config import RunConfig, build_overrides, load_config
from flows.errors import RangesIncomplete, StageBug, bug_message, internal_errors
from flows.ranges import part_name, shared_paths
from flows.reporting import ArtifactProgress, best_effort, report_failures_in_one_line
from flows.report import agreement_markdown, cost_text, format_funnel, reasons_text, written_exports
from flows.train.trigger import start_training, training_line

aio.prefer_uvloop()  # the loop the CLI runs on (flows/aio.py): less client CPU per request


@task(cache_policy=NO_CACHE, persist_result=False)
async def seed_window(number: int, first_shard: int, last_shard: int, run) -> dict:
    """One window of seeds through every stage: its rows move on one by one, not in a batch,
    and the next window starts while this one drains."""
    counts = await run()
    get_run_logger().info("window %05d (shards %05d-%05d): rows out per stage %s", number, first_shard, last_shard, counts)
    return counts


async def as_prefect_task(number: int, first_shard: int, last_shard: int, run) -> dict:
    return await seed_window.with_options(task_run_name=f"window-{number:05d}")(number, first_shard, last_shard, run)


@task(name="splits-and-exports", task_run_name="splits-and-exports", cache_policy=NO_CACHE, persist_result=False)
def splits_and_exports(cfg: RunConfig, built: StagesBuilt) -> BuildResult:
    """The splits, exports and manifest over every shard, once the stages are done."""
    return finish_build(cfg, built)


def stage_table(manifest: dict) -> list[dict]:
    """One row per stage: rows in / out / rejected by reason, LLM usage, and wall time."""
    usage, timing = manifest["usage"], manifest.get("timing", {})
    return [{"stage": r["stage"], "in": r["in"], "out": r["out"], "rejected": r["rejected"],
             "reasons": reasons_text(r),
             **{k: usage.get(r["stage"], {}).get(k, 0) for k in
                ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "retries")},
             "wall_s": timing.get(r["stage"], {}).get("wall_s", 0.0)}
            for r in manifest["funnel"]]


def summary_markdown(result: BuildResult, training: dict | None) -> str:
    funnel = result.manifest["funnel"]
    report = Path(result.run_dir).resolve() / "reports" / "report.html"
    text = (f"# Trace build\n\nRun folder `{result.run_dir}`, model `{result.manifest['model']}`, "
            f"{result.sft_rows} SFT rows; exports: {', '.join(written_exports(result.manifest)) or 'none'}.\n\n"
            f"Cost: {cost_text(result.manifest)}.\n\n"
            f"Report with charts: [{report}]({report.as_uri()}) (open it on a machine that sees the run folder).\n\n"
            f"```\n{format_funnel(funnel)}\n```\n")
    text += agreement_markdown(result.manifest.get("rule_agreement", {}))
    if training and training.get("flow_run_id"):
        text += (f"\n## Training\n\nStarted `{training['deployment']}` ({training['method']}): flow run "
                 f"`{training['flow_run_name']}`, id `{training['flow_run_id']}`.\n")
    elif training:
        text += f"\n## Training\n\nNot started: {training['skipped']}.\n"
    return text


async def ranges_on_pool(cfg: RunConfig) -> None:
    """build.RangeRunner: each range a flow run of the range deployment, which any worker
    polling the pool takes, on any machine sharing the run folder. A range that fails fails the
    build; the next run reuses every shard the ranges finished, so only what is missing is paid."""
    from prefect.deployments.flow_runs import arun_deployment

    ranges = cfg.execution.ranges
    shared = json.loads(shared_paths(cfg).model_dump_json())
    get_run_logger().info("%d ranges on %s", ranges, cfg.execution.range_deployment)
    runs = await asyncio.gather(*(
        arun_deployment(cfg.execution.range_deployment, parameters={"run_config": shared, "index": index},
                        timeout=None, poll_interval=2, tags=["trace-build-range"])
        for index in range(ranges)))
    failed = [f"{part_name(i, ranges)} ({run.name}: {run.state.name if run.state else 'no state'})"
              for i, run in enumerate(runs) if not (run.state and run.state.is_completed())]
    if failed:
        raise RangesIncomplete(f"ranges did not complete: {', '.join(failed)}; run the build again to finish them "
                           "(finished shards are reused)")


@flow(name="trace-build-range", log_prints=True)
async def trace_build_range(run_config: dict, index: int) -> dict:
    """One range of a fanned-out trace build (started by `trace-build` with `ranges`): the
    range's seeds through every stage into its own part of the shared run folder."""
    report_failures_in_one_line()
    cfg = RunConfig.model_validate(run_config)
    progress = ArtifactProgress()
    result = await build_range(cfg, index, progress=progress, track=as_prefect_task)
    await progress.finish()
    print(f"{result['range']}: rows out per stage {result['rows_out']}")
    return {"range": result["range"], "rows_out": result["rows_out"], "model": result["model"]}


@flow(name="trace-build", log_prints=True)
async def trace_build(
    seeds: str = "data/seeds",
    limit: int | None = None,
    out: str = "runs/latest",
    base_urls: list[str] | None = None,
    backend: str | None = None,
    backend_model: str | None = None,
    model: str | None = None,
    max_in_flight: int | str | None = None,
    ranges: int | None = None,
    trigger_training: bool | None = None,
    training_method: str | None = None,
    config: str | None = None,
) -> dict:
    """Build Trace data from seed instructions. Give base_urls of running OpenAI-compatible
    servers, or a backend (simulated, embedded, vllm) to start for the run. With ranges > 1
    (or execution.ranges in the config), the seeds are split into that many ranges, each built
    by its own flow run on the work pool. With trigger_training (or training.trigger in the
    config), start the training deployment (default iopo-train/gpu) on the splits when done.
    The parameters are `trace-build run`'s options (config.BUILD_OPTIONS)."""
    report_failures_in_one_line()
    cfg = load_config(config, build_overrides(
        seeds=seeds, limit=limit, out=out, base_urls=base_urls, backend=backend, backend_model=backend_model,
        model=model, max_in_flight=max_in_flight, ranges=ranges, trigger_training=trigger_training,
        training_method=training_method))
    progress = ArtifactProgress()
    built = await build_stages(cfg, progress, track=as_prefect_task, run_ranges=ranges_on_pool)
    result = splits_and_exports(cfg, built)
    await progress.finish()
    print(format_funnel(result.manifest["funnel"]))
    await best_effort(create_table_artifact(
        key="trace-build-funnel", table=stage_table(result.manifest),
        description="Per stage: rows in, out, rejected by reason; LLM requests, cache hits and tokens of this run; "
                    "wall seconds from its first row in to its last row out",
    ), "the funnel table")
    bugs = internal_errors(result.manifest["funnel"])
    # rows a bug rejected: the outputs are written, but nothing trains on an incomplete build
    training = await start_training(result.manifest, result.run_dir, cfg.training) if cfg.training.trigger and not bugs \
        else None
    if training:
        print(training_line(training))
    await best_effort(create_markdown_artifact(key="trace-build-summary", markdown=summary_markdown(result, training),
                                               description="Summary of the trace build"), "the summary")
    if bugs:
        raise StageBug(bug_message(bugs))
    return {"run_dir": str(result.run_dir), "sft_rows": result.sft_rows, "model": result.manifest["model"],
            "training_flow_run_id": (training or {}).get("flow_run_id")}
