"""One trace build from seeds to the SFT split, as plain async Python.

The Prefect flow (flows/trace_build.py) and the CLI both call `build_trace`; the flow only
tracks each (stage, shard) as a Prefect task through `track`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from flows.config import RunConfig
from flows.contracts import PAIR_STAGES, SCHEMA_VERSION, STAGES, SYSTEM_PROMPT, stage_schema
from flows.llm.backends import llm_endpoints, resolve_api_key
from flows.llm.cache import RequestCache
from flows.llm.client import LLMClient
from flows.pipeline import NoProgress, Progress, Tracker, run_all, shard_rows, untracked
from flows.prompts import PromptLibrary, default_library
from flows.report import funnel, taxonomy_report, taxonomy_report_markdown
from flows.seeds import load_seeds
from flows.stages import default_stages
from flows.stages.base import StageContext
from flows.store import ShardStore, input_hash, write_json_atomic, write_text_atomic
from flows.taxonomy import load_taxonomy

log = logging.getLogger("trace_build")

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SFT_SCHEMA = stage_schema("respond").append(pa.field("messages", _MESSAGES))
SFT_REJECTS = pa.schema([("row_id", pa.string()), ("seed_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


@dataclass
class BuildResult:
    run_dir: Path
    manifest: dict
    sft_rows: int


def remove_stale_shards(store: ShardStore, n_shards: int) -> None:
    """Shards beyond this run's count come from an earlier, larger run: they must not count."""
    for stage in ("seeds",) + STAGES + PAIR_STAGES:
        for path in (store.run_dir / "stages" / stage).glob("*-*.parquet"):
            if int(path.stem.split("-")[1]) >= n_shards:
                path.unlink()


def sft_split(final_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    keep, rejects = [], []
    for row in final_rows:
        if row["full_score"]:
            messages = [{"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": row["prompt"]},
                        {"role": "assistant", "content": row["response"]}]
            keep.append({**row, "messages": messages})
        else:
            low = [f"{s['constraint_id']}={s['score']}" for s in row["scores"] if s["score"] < 10]
            rejects.append({"row_id": row["row_id"], "seed_id": row["seed_id"], "reason": "score_below_10",
                            "detail": ", ".join(low)})
    return keep, rejects


async def build_trace(cfg: RunConfig, progress: Progress = NoProgress(),
                      track: Tracker = untracked) -> BuildResult:
    started = time.time()
    store = ShardStore(cfg.out)
    taxonomy = load_taxonomy()
    prompts = PromptLibrary(cfg.prompts_dir) if cfg.prompts_dir else default_library()
    batch = load_seeds(cfg.seeds, cfg.text_field, cfg.limit, cfg.pipeline.max_seed_chars)
    shards = shard_rows(batch.rows, cfg.pipeline.shard_size) or [[]]
    remove_stale_shards(store, len(shards))
    for i, rows in enumerate(shards):
        store.write_shard("seeds", i, stage_schema("seeds"), rows, batch.rejects if i == 0 else [], input_hash(rows))
    progress.start(len(batch.rows))
    log.info("%d seeds in %d shards (%d rejected on input)", len(batch.rows), len(shards), len(batch.rejects))

    cache = RequestCache(cfg.llm.cache_path or store.run_dir / "llm-cache.sqlite")
    with llm_endpoints(cfg.llm) as (base_urls, dialect):
        client = LLMClient(
            base_urls, cache, model=cfg.llm.model, dialect=dialect, max_in_flight=cfg.llm.max_in_flight,
            timeout_s=cfg.llm.timeout_s, max_attempts=cfg.llm.max_attempts,
            parse_attempts=cfg.llm.parse_attempts, backoff_s=cfg.llm.backoff_s,
            api_key=resolve_api_key(cfg.llm),
        )
        try:
            model = await client.resolve_model()
            log.info("LLM %s at %s (dialect %s)", model, ", ".join(base_urls), dialect)
            ctx = StageContext(client=client, prompts=prompts, taxonomy=taxonomy, config=cfg.pipeline)
            outputs = await run_all(shards, default_stages(cfg.pipeline.preference_data), ctx, store, progress, track)
        finally:
            await client.aclose()
            cache.close()

    sft, sft_rejects = sft_split(outputs["respond"])
    store.write_split("sft", SFT_SCHEMA, sft, {"model": model})
    store.write_split("sft-rejects", SFT_REJECTS, sft_rejects, {})
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
        "usage": {stage: u.as_dict() for stage, u in client.usage.items()},
        "splits": {"sft": {"path": "splits/sft.parquet", "rows": len(sft)}},
        "files": store.files(),
    }
    write_json_atomic(store.run_dir / "manifest.json", manifest)
    return BuildResult(store.run_dir, manifest, len(sft))
