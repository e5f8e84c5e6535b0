"""One trace build from seeds to the splits and exports, as plain async Python.

    result = await build_trace(cfg, progress)           # the CLI: both halves below

    built = await build_stages(cfg, progress, track, ranges_on_pool)   # the trace-build flow,
    result = await splits_and_exports(cfg, built)                      # finish_build as a task

One plan for every build, in two halves. build_stages: the layout is prepared (every seed row
read once), then the seeds go through the stages. finish_build: the splits, exports and manifest
are written over every shard. With execution.ranges > 1 the seeds are cut into ranges, each
built into its own part of the run folder by a range runner: `ranges_here` builds them in this
process one after another, trace_build.ranges_on_pool as flow runs of the range deployment on a
work pool (any worker, any machine sharing the run folder). The flow also tracks each window of
seeds as a Prefect task (`track`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable

from flows.config import RunConfig
from flows.contracts import PAIR_STAGES, PARENT, STAGES
from flows.errors import BugBudget
from flows.llm.backends import client_for, llm_endpoints
from flows.llm.cache import RequestCache
from flows.outputs import write_outputs
from flows.pipeline import StageClock, WindowTracker, run_all, untracked_window
from flows.progress import NoProgress, Progress
from flows.prompts import library_for
from flows.ranges import (keep_only_layout, merge_timing, merge_usage, part_name, range_config, range_dir, range_of,
                          range_store, read_range_results, write_range_result)
from flows.seeds import SeedCount, count_seeds, iter_seeds, seed_shards, shard_count
from flows.stages import default_stages
from flows.stages.base import StageContext
from flows.store import ShardStore
from flows.taxonomy import load_taxonomy
from flows.words import plural

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


# Builds the ranges of a build (execution.ranges > 1) into their parts of the run folder; raises
# when any did not finish. Two of them: ranges_here, and trace_build.ranges_on_pool.
RangeRunner = Callable[[RunConfig], Awaitable[None]]


@dataclass
class StagesBuilt:
    """What finish_build needs of the stages: when the build started, and each part's
    StagesResult as a dict (one part, or one per range)."""
    started: float
    parts: list[dict]


async def build_trace(cfg: RunConfig, progress: Progress = NoProgress(),
                      track: WindowTracker = untracked_window) -> BuildResult:
    """The whole build in this process: the stages, then the outputs over every shard."""
    return finish_build(cfg, await build_stages(cfg, progress, track))


async def build_stages(cfg: RunConfig, progress: Progress = NoProgress(), track: WindowTracker = untracked_window,
                       run_ranges: RangeRunner | None = None) -> StagesBuilt:
    """The layout, then the stages: in this process, or as ranges by `run_ranges` (default
    ranges_here)."""
    started = time.time()
    count = prepare_layout(cfg)
    if cfg.execution.ranges == 1:
        parts = [asdict(await run_stages(cfg, ShardStore(cfg.out), progress, track, count=count))]
    else:
        await (run_ranges or ranges_here(progress, track))(cfg)
        parts = read_range_results(cfg.out, cfg.execution.ranges)
    return StagesBuilt(started, parts)


def ranges_here(progress: Progress = NoProgress(), track: WindowTracker = untracked_window) -> RangeRunner:
    """The ranges built in this process, one after another."""
    async def run(cfg: RunConfig) -> None:
        for index in range(cfg.execution.ranges):
            await build_range(cfg, index, progress, track)
    return run


def seed_items(cfg: RunConfig, index: int | None = None):
    """The seed source's items, lazily; with a range index, only the seeds of that range."""
    items = iter_seeds(cfg.seeds, cfg.text_field, cfg.limit, cfg.pipeline.max_seed_chars)
    if index is None:
        return items
    return (item for item in items if range_of((item[0] or item[1])["seed_id"], cfg.execution.ranges) == index)


def prepare_layout(cfg: RunConfig) -> SeedCount:
    """Before anything runs: the whole source read once (a bad row is an error now, before any
    range pays a request), shards of another layout removed, old range results forgotten."""
    count = count_seeds(seed_items(cfg))
    keep_only_layout(cfg.out, cfg.execution.ranges)
    for index in range(cfg.execution.ranges if cfg.execution.ranges > 1 else 0):
        (range_dir(cfg.out, index, cfg.execution.ranges) / "result.json").unlink(missing_ok=True)
    return count


async def build_range(cfg: RunConfig, index: int, progress: Progress = NoProgress(),
                      track: WindowTracker = untracked_window) -> dict:
    """One range's seeds through the stages, into its own part of the run folder."""
    built = await run_stages(range_config(cfg, index), range_store(cfg, index), progress, track, index)
    result = asdict(built) | {"range": part_name(index, cfg.execution.ranges)}
    write_range_result(cfg.out, index, cfg.execution.ranges, result)
    return result


def finish_build(cfg: RunConfig, built: StagesBuilt) -> BuildResult:
    """Splits, exports and the manifest over every part's shards."""
    parts = built.parts
    models = sorted({part["model"] for part in parts})
    if len(models) > 1:
        log.warning("ranges were built by different models: %s", ", ".join(models))
    store = ShardStore(cfg.out)
    manifest = write_outputs(cfg=cfg, store=store, model=parts[0]["model"], dialect=parts[0]["dialect"],
                             prompts=library_for(cfg.prompts_dir, cfg.prompt_set), taxonomy=load_taxonomy(),
                             usage=merge_usage([part["usage"] for part in parts]),
                             timing=merge_timing([part["timing"] for part in parts]), started=built.started)
    return BuildResult(store.run_dir, manifest, manifest["splits"]["sft"]["rows"])


@dataclass
class StagesResult:
    model: str
    dialect: str
    usage: dict  # per stage: requests, cache hits, tokens
    timing: dict  # per stage: wall_s, row_s_mean
    rows_out: dict  # per stage


async def run_stages(cfg: RunConfig, store: ShardStore, progress: Progress = NoProgress(),
                     track: WindowTracker = untracked_window, index: int | None = None,
                     count: SeedCount | None = None) -> StagesResult:
    """The seeds (of range `index`, if given) through the stages into the store's shards. The
    source is read lazily, twice: a count (unless given), then the build itself."""
    taxonomy = load_taxonomy()
    prompts = library_for(cfg.prompts_dir, cfg.prompt_set)
    stages = default_stages(cfg.pipeline.preference_data)
    count = count or count_seeds(seed_items(cfg, index))
    n_shards = shard_count(count.rows, cfg.pipeline.shard_size)
    remove_stale_shards(store, n_shards, ["seeds"] + [stage.name for stage in stages])
    progress.start({stage.name: count.rows if PARENT[stage.name] == "seeds" else 0 for stage in stages})
    log.info("%s in %s (%d rejected on input)", plural(count.rows, "seed"), plural(n_shards, "shard"), count.rejects)

    clock = StageClock()
    cache = RequestCache(cfg.llm.cache_path or store.run_dir / "llm-cache.sqlite")
    with llm_endpoints(cfg.llm) as (base_urls, dialect):
        client = client_for(cfg.llm, base_urls, dialect, cache)
        try:
            model = await client.resolve_model()
            log.info("LLM %s at %s (dialect %s)", model, ", ".join(base_urls), dialect)
            ctx = StageContext(client=client, prompts=prompts, taxonomy=taxonomy, config=cfg.pipeline,
                               bugs=BugBudget(cfg.execution.max_internal_errors))
            shards = seed_shards(seed_items(cfg, index), cfg.pipeline.shard_size)
            rows_out = await run_all(shards, stages, ctx, store, progress, track, clock,
                                     shard_size=cfg.pipeline.shard_size, window_size=cfg.execution.window_size,
                                     seeds_in_flight=cfg.execution.seeds_at_once(client.slots))
        finally:
            await client.aclose()
            cache.close()
    return StagesResult(model, dialect, {stage: u.as_dict() for stage, u in client.usage.items()},
                        clock.as_dict(), rows_out)
