"""One build over several machines: the seeds split into K disjoint ranges by a stable hash of
their id, each range built by its own flow run on any worker of the pool, then the splits and
exports made once over all of them.

A seed's range depends on its id alone (its text), never on its position or on the other seeds,
so a nightly run's new seeds land in stable ranges and old ones stay where their shards are.
Every range writes its shards under stages/<stage>/<part>/, its own request cache and a small
result file under ranges/<part>/; nothing two ranges write is shared (SQLite is not for
concurrent writers on a network filesystem).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from flows.config import RunConfig
from flows.contracts import PAIR_STAGES, STAGES
from flows.store import ShardStore, write_json_atomic


def range_of(seed_id: str, ranges: int) -> int:
    """The range a seed belongs to: its id is a content hash, so this is uniform and stable."""
    return int(seed_id, 16) % ranges


def part_name(index: int, ranges: int) -> str:
    return f"range-{index:02d}-of-{ranges:02d}"


def range_dir(run_dir: Path | str, index: int, ranges: int) -> Path:
    return Path(run_dir) / "ranges" / part_name(index, ranges)


def range_store(cfg: RunConfig, index: int) -> ShardStore:
    return ShardStore(cfg.out, part_name(index, cfg.execution.ranges) if cfg.execution.ranges > 1 else None)


def range_config(cfg: RunConfig, index: int) -> RunConfig:
    """The config one range builds with: its own group of LLM endpoints (a GPU node per range,
    when the config lists groups) and its own request cache beside its result."""
    llm = cfg.llm.model_copy()
    groups = cfg.execution.range_endpoints
    if groups:
        llm.base_urls, llm.backend = list(groups[index % len(groups)]), None
    if cfg.execution.ranges > 1 and cfg.llm.cache_path is None:
        llm.cache_path = str(range_dir(cfg.out, index, cfg.execution.ranges) / "llm-cache.sqlite")
    return cfg.model_copy(update={"llm": llm})


def shared_paths(cfg: RunConfig) -> RunConfig:
    """The config as a worker on another machine needs it: local paths made absolute (the
    checkout and the run folder are at the same paths on every worker); URLs left as they are."""
    def absolute(value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        return str(Path(value).resolve())

    llm = cfg.llm.model_copy(update={"cache_path": absolute(cfg.llm.cache_path)})
    return cfg.model_copy(update={"seeds": absolute(cfg.seeds), "out": absolute(cfg.out),
                                  "prompts_dir": absolute(cfg.prompts_dir), "llm": llm})


def keep_only_layout(run_dir: Path | str, ranges: int) -> None:
    """Shards of another layout (a one-process build before a fanned-out one, or K=4 before
    K=2) come from an earlier run of the folder: remove them before this run's ranges start.
    Their answers stay in the request caches they were paid into."""
    stages_dir = Path(run_dir) / "stages"
    parts = {part_name(i, ranges) for i in range(ranges)} if ranges > 1 else set()
    for stage in ("seeds",) + STAGES + PAIR_STAGES:
        folder = stages_dir / stage
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_dir() and path.name not in parts:
                shutil.rmtree(path)
            elif path.is_file() and ranges > 1 and path.suffix == ".parquet":
                path.unlink()


def write_range_result(run_dir: Path | str, index: int, ranges: int, result: dict) -> None:
    write_json_atomic(range_dir(run_dir, index, ranges) / "result.json", result)


def read_range_results(run_dir: Path | str, ranges: int) -> list[dict]:
    """What each range reported (model, dialect, usage, timing, rows out); a range that has not
    finished has no result file, and the merge must not start without it."""
    results = []
    for i in range(ranges):
        path = range_dir(run_dir, i, ranges) / "result.json"
        if not path.exists():
            raise RuntimeError(f"range {part_name(i, ranges)} has not finished ({path} is missing)")
        results.append(json.loads(path.read_text(encoding="utf-8")))
    return results


def merge_usage(usages: list[dict]) -> dict:
    """LLM usage per stage summed over the ranges."""
    def add(into: dict, counts: dict) -> dict:
        for key, value in counts.items():
            into[key] = add(into.get(key, {}), value) if isinstance(value, dict) else into.get(key, 0) + value
        return into

    total: dict = {}
    for usage in usages:
        add(total, usage)
    return total


def merge_timing(timings: list[dict]) -> dict:
    """Per stage: the longest span of any range (they run side by side), and the row mean."""
    merged: dict = {}
    for timing in timings:
        for stage, t in timing.items():
            m = merged.setdefault(stage, {"wall_s": 0.0, "busy": 0.0, "rows": 0})
            m["wall_s"] = max(m["wall_s"], t["wall_s"])
            m["busy"] += t["row_s_mean"] * t["rows"]
            m["rows"] += t["rows"]
    return {stage: {"wall_s": m["wall_s"], "row_s_mean": round(m["busy"] / max(m["rows"], 1), 3), "rows": m["rows"]}
            for stage, m in merged.items()}
