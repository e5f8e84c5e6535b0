"""One trace build from seeds to the splits and exports, as plain async Python.

The Prefect flow (flows/trace_build.py) and the CLI both call `build_trace`; the flow only
tracks each window of seeds as a Prefect task through `track`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.config import RunConfig
from flows.contracts import PAIR_STAGES, STAGES
from flows.llm.backends import client_for, llm_endpoints
from flows.llm.cache import RequestCache
from flows.outputs import write_outputs
from flows.pipeline import NoProgress, Progress, StageClock, WindowTracker, run_all, untracked_window
from flows.prompts import PromptLibrary, default_library
from flows.seeds import iter_seeds, scan_seeds, seed_shards, shard_count
from flows.stages import default_stages
from flows.stages.base import StageContext
from flows.store import ShardStore
from flows.taxonomy import load_taxonomy

log = logging.getLogger("trace_build")

@dataclass
class BuildResult:
    run_dir: Path
    manifest: dict
    sft_rows: int


def remove_stale_shards(store: ShardStore, n_shards: int, stages: list[str]) -> None:
    """Shards of this store's part beyond this run's count, or of stages this run does not run,
    come from an earlier run: they must not count. (Splits are rewritten whole by every run.)"""
    for stage in ("seeds",) + STAGES + PAIR_STAGES:
        for path in store.stage_dir(stage).glob("*-*.parquet"):
            if stage not in stages or int(path.stem.split("-")[1]) >= n_shards:
                path.unlink()


async def run_step(name: str, fn: Callable, **kwargs):
    """How build_trace runs a named step after the stages; the flow makes each a Prefect task."""
    return fn(**kwargs)


async def build_trace(cfg: RunConfig, progress: Progress = NoProgress(),
                      track: WindowTracker = untracked_window, step=run_step) -> BuildResult:
    started = time.time()
    store = ShardStore(cfg.out)
    stages = default_stages(cfg.pipeline.preference_data)
    built = await run_stages(cfg, store, stages, progress, track)
    prompts = PromptLibrary(cfg.prompts_dir) if cfg.prompts_dir else default_library()
    manifest = await step("splits-and-exports", write_outputs, cfg=cfg, store=store, model=built.model,
                          dialect=built.dialect, prompts=prompts, taxonomy=load_taxonomy(),
                          usage=built.usage, timing=built.timing, started=started)
    return BuildResult(store.run_dir, manifest, manifest["splits"]["sft"]["rows"])


@dataclass
class StagesResult:
    model: str
    dialect: str
    usage: dict  # per stage: requests, cache hits, tokens
    timing: dict  # per stage: wall_s, row_s_mean
    rows_out: dict  # per stage


async def run_stages(cfg: RunConfig, store: ShardStore, stages: list, progress: Progress = NoProgress(),
                     track: WindowTracker = untracked_window) -> StagesResult:
    """The seeds through the stages into the store's shards. The source is read twice, lazily:
    a cheap pass that finds a bad row before any request is paid, then the build itself."""
    taxonomy = load_taxonomy()
    prompts = PromptLibrary(cfg.prompts_dir) if cfg.prompts_dir else default_library()
    read = dict(path=cfg.seeds, field=cfg.text_field, limit=cfg.limit, max_chars=cfg.pipeline.max_seed_chars)
    count = scan_seeds(**read)
    n_shards = shard_count(count.rows, cfg.pipeline.shard_size)
    remove_stale_shards(store, n_shards, ["seeds"] + [stage.name for stage in stages])
    progress.start(count.rows, [stage.name for stage in stages])
    log.info("%d seeds in %d shards (%d rejected on input)", count.rows, n_shards, count.rejects)

    clock = StageClock()
    cache = RequestCache(cfg.llm.cache_path or store.run_dir / "llm-cache.sqlite")
    with llm_endpoints(cfg.llm) as (base_urls, dialect):
        client = client_for(cfg.llm, base_urls, dialect, cache)
        try:
            model = await client.resolve_model()
            log.info("LLM %s at %s (dialect %s)", model, ", ".join(base_urls), dialect)
            ctx = StageContext(client=client, prompts=prompts, taxonomy=taxonomy, config=cfg.pipeline)
            shards = seed_shards(iter_seeds(**read), cfg.pipeline.shard_size)
            rows_out = await run_all(shards, stages, ctx, store, progress, track, clock,
                                     shard_size=cfg.pipeline.shard_size, window_size=cfg.execution.window_size,
                                     windows_in_flight=cfg.execution.windows_in_flight)
        finally:
            await client.aclose()
            cache.close()
    return StagesResult(model, dialect, {stage: u.as_dict() for stage, u in client.usage.items()},
                        clock.as_dict(), rows_out)
