"""The `trace-build` Prefect flow: seeds -> five stages -> DPO / IOPO -> splits and exports.

The work itself is flows.build.build_trace; this module only names it for Prefect, runs each
(stage, shard) as a task so the UI shows where a build is, and reports the funnel as artifacts.
"""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.build import build_trace
from flows.config import load_config
from flows.report import format_funnel, reasons_text


@task(cache_policy=NO_CACHE, persist_result=False)
async def stage_shard(stage: str, shard: int, wait) -> dict:
    """Lasts while the shard is in the stage; its rows move on one by one, not in a batch."""
    collector = await wait()
    counts = {"in": len(collector.inputs), "out": len(collector.outputs), "rejected": len(collector.rejects)}
    get_run_logger().info("stage %s, shard %05d: %s", stage, shard, counts)
    return counts


async def as_prefect_task(stage: str, shard: int, wait):
    await stage_shard.with_options(task_run_name=f"{stage}-shard-{shard:05d}")(stage, shard, wait)


async def as_prefect_step(name: str, fn, **kwargs):
    return task(fn, name=name, task_run_name=name, cache_policy=NO_CACHE, persist_result=False)(**kwargs)


@flow(name="trace-build", log_prints=True)
async def trace_build(
    seeds: str = "data/seeds",
    limit: int | None = None,
    out: str = "runs/latest",
    base_urls: list[str] | None = None,
    backend: str | None = None,
    backend_model: str | None = None,
    config: str | None = None,
) -> dict:
    """Build Trace data from seed instructions. Give base_urls of running OpenAI-compatible
    servers, or a backend (simulated, embedded, vllm) to start for the run."""
    cfg = load_config(config, {
        "seeds": seeds, "limit": limit, "out": out, "llm.base_urls": base_urls,
        "llm.backend": None if base_urls else backend, "llm.backend_model": backend_model,
    })
    result = await build_trace(cfg, track=as_prefect_task, step=as_prefect_step)
    funnel = result.manifest["funnel"]
    print(format_funnel(funnel))
    await create_table_artifact(
        key="trace-build-funnel",
        table=[{**r, "reasons": reasons_text(r)} for r in funnel],
        description="Rows in, out and rejected per stage",
    )
    await create_markdown_artifact(
        key="trace-build-summary",
        markdown=f"# Trace build\n\nRun folder `{result.run_dir}`, model `{result.manifest['model']}`, "
                 f"{result.sft_rows} SFT rows.\n\n```\n{format_funnel(funnel)}\n```\n",
        description="Summary of the trace build",
    )
    return {"run_dir": str(result.run_dir), "sft_rows": result.sft_rows, "model": result.manifest["model"]}
