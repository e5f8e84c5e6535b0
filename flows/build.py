"""One trace build from seeds to the splits and exports, as plain async Python.

The Prefect flow (flows/trace_build.py) and the CLI both call `build_trace`; the flow only
tracks each (stage, shard) as a Prefect task through `track`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path


from flows.config import RunConfig
from flows.contracts import PAIR_STAGES, SCHEMA_VERSION, SPLIT_REJECTS, STAGES, SYSTEM_PROMPT, split_schema, stage_schema
from flows.llm.backends import client_for, llm_endpoints
from flows.llm.cache import RequestCache
from flows.pipeline import NoProgress, Progress, StageClock, Tracker, run_all, shard_rows, untracked
from flows.prompts import PromptLibrary, default_library
from flows.report import funnel, taxonomy_report, taxonomy_report_markdown
from flows.rules import agreement
from flows.seeds import load_seeds
from flows.splits import SplitConfig, build_splits, official_eval_instructions
from flows.exports import write_exports
from flows.stages import default_stages
from flows.stages.base import StageContext
from flows.store import ShardStore, input_hash, write_json_atomic, write_text_atomic
from flows.taxonomy import load_taxonomy

log = logging.getLogger("trace_build")

@dataclass
class BuildResult:
    run_dir: Path
    manifest: dict
    sft_rows: int


def remove_stale_shards(store: ShardStore, n_shards: int, stages: list[str]) -> None:
    """Shards beyond this run's count, or of stages this run does not run, come from an earlier
    run: they must not count. (Splits are rewritten whole by every run.)"""
    for stage in ("seeds",) + STAGES + PAIR_STAGES:
        for path in (store.run_dir / "stages" / stage).glob("*-*.parquet"):
            if stage not in stages or int(path.stem.split("-")[1]) >= n_shards:
                path.unlink()


def with_messages(row: dict) -> dict:
    return {**row, "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                {"role": "user", "content": row["prompt"]},
                                {"role": "assistant", "content": row["response"]}]}


def split_candidates(outputs: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], list[dict]]:
    """Rows that may enter a split, and the graded rows that may not (score below 10)."""
    sft, below = [], []
    for row in outputs["respond"]:
        if row["full_score"]:
            sft.append(with_messages(row))
        else:
            low = [f"{s['constraint_id']}={s['score']}" for s in row["scores"] if s["score"] < 10]
            low += [f"{s['constraint_id']}:rule_failed" for s in row["scores"] if s.get("rule_passed") is False]
            below.append({"row_id": row["row_id"], "seed_id": row["seed_id"], "split": "sft",
                          "reason": "score_below_10", "detail": ", ".join(low)})
    candidates = {"sft": sft}
    for stage in PAIR_STAGES:
        candidates[stage] = [with_messages(r) for r in outputs.get(stage, [])]
    return candidates, below


def acceptance(outputs: dict[str, list[dict]], store: ShardStore) -> dict:
    """Tried and accepted per preference stage, and per edit kind for IOPO."""
    out: dict = {}
    for stage in PAIR_STAGES:
        rejects = [r for r in store.read_stage(stage, "rejects") if r["reason"] != "score_below_10"]
        accepted = outputs.get(stage, [])
        out[stage] = {"tried": len(rejects) + len(accepted), "accepted": len(accepted)}
    by_op: dict = {}
    for row in outputs.get("iopo", []):
        by_op.setdefault(row["edit_op"], {"tried": 0, "accepted": 0})
        by_op[row["edit_op"]]["tried"] += 1
        by_op[row["edit_op"]]["accepted"] += 1
    for row in store.read_stage("iopo", "rejects"):
        if row["detail"].startswith("op="):
            op = row["detail"][3:].split(";")[0]
            by_op.setdefault(op, {"tried": 0, "accepted": 0})["tried"] += 1
    out["iopo_by_edit"] = by_op
    return out


async def run_step(name: str, fn: Callable, **kwargs):
    """How build_trace runs a named step after the stages; the flow makes each a Prefect task."""
    return fn(**kwargs)


async def build_trace(cfg: RunConfig, progress: Progress = NoProgress(),
                      track: Tracker = untracked, step=run_step) -> BuildResult:
    started = time.time()
    store = ShardStore(cfg.out)
    taxonomy = load_taxonomy()
    prompts = PromptLibrary(cfg.prompts_dir) if cfg.prompts_dir else default_library()
    batch = load_seeds(cfg.seeds, cfg.text_field, cfg.limit, cfg.pipeline.max_seed_chars)
    shards = shard_rows(batch.rows, cfg.pipeline.shard_size) or [[]]
    stages = default_stages(cfg.pipeline.preference_data)
    remove_stale_shards(store, len(shards), ["seeds"] + [stage.name for stage in stages])
    for i, rows in enumerate(shards):
        store.write_shard("seeds", i, stage_schema("seeds"), rows, batch.rejects if i == 0 else [], input_hash(rows))
    progress.start(len(batch.rows), [stage.name for stage in stages])
    log.info("%d seeds in %d shards (%d rejected on input)", len(batch.rows), len(shards), len(batch.rejects))

    clock = StageClock()
    cache = RequestCache(cfg.llm.cache_path or store.run_dir / "llm-cache.sqlite")
    with llm_endpoints(cfg.llm) as (base_urls, dialect):
        client = client_for(cfg.llm, base_urls, dialect, cache)
        try:
            model = await client.resolve_model()
            log.info("LLM %s at %s (dialect %s)", model, ", ".join(base_urls), dialect)
            ctx = StageContext(client=client, prompts=prompts, taxonomy=taxonomy, config=cfg.pipeline)
            outputs = await run_all(shards, stages, ctx, store, progress, track, clock)
        finally:
            await client.aclose()
            cache.close()

    manifest = await step("splits-and-exports", write_outputs, cfg=cfg, store=store, outputs=outputs, model=model,
                          dialect=dialect, prompts=prompts, taxonomy=taxonomy,
                          usage={stage: u.as_dict() for stage, u in client.usage.items()}, timing=clock.as_dict(),
                          started=started)
    return BuildResult(store.run_dir, manifest, manifest["splits"]["sft"]["rows"])


def write_outputs(cfg: RunConfig, store: ShardStore, outputs: dict[str, list[dict]], model: str, dialect: str,
                  prompts: PromptLibrary, taxonomy, usage: dict, started: float, timing: dict | None = None) -> dict:
    """Splits, reports, exports and the manifest, from the stages' output rows."""
    candidates, below_10 = split_candidates(outputs)
    references = official_eval_instructions() if cfg.splits.decontaminate_official_eval else []
    result = build_splits(candidates, SplitConfig(
        eval_size=cfg.splits.eval_size, eval_fraction=cfg.splits.eval_fraction, weights=cfg.splits.weights,
        near_duplicate_threshold=cfg.splits.near_duplicate_threshold, seed=cfg.pipeline.seed), references)
    for name, rows in result.splits.items():
        store.write_split(name, split_schema(name), rows, {"model": model})
    store.write_split("rejects", SPLIT_REJECTS, below_10 + result.rejects, {})
    report = taxonomy_report(store.read_stage("taxonomy"), taxonomy)
    write_json_atomic(store.run_dir / "reports" / "taxonomy_report.json", report)
    write_text_atomic(store.run_dir / "reports" / "taxonomy_report.md", taxonomy_report_markdown(report))

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 2),
        "model": model,
        "dialect": dialect,
        "templates": {name: prompts.version(name) for name in sorted(p.stem for p in prompts.directory.glob("*.j2"))},
        "taxonomy_version": taxonomy.version_id,
        "config": json.loads(cfg.model_dump_json()),
        "funnel": funnel(store.run_dir),
        "usage": usage,
        "timing": timing or {},  # per stage: wall_s (first row in to last row out), row_s_mean
        "splits": {name: {"path": f"splits/{name}.parquet", "rows": len(rows)} for name, rows in result.splits.items()},
        "acceptance": acceptance(outputs, store),
        # stage 5: how often the rule checks and the judge agree, per dimension
        "rule_agreement": agreement([(r["scores"], r["constraints"]) for r in outputs["respond"]]),
    }
    card = {"funnel": manifest["funnel"], "models": [model], "templates": manifest["templates"],
            "taxonomy_version": manifest["taxonomy_version"], "acceptance": manifest["acceptance"]}
    manifest["exports"] = write_exports(store.run_dir / "exports", result.splits, card)
    manifest["files"] = store.files()
    write_json_atomic(store.run_dir / "manifest.json", manifest)
    return manifest
