"""What a build writes after its stages: splits, reports, exports and the manifest.

Everything here reads the stage shards from the run folder, never rows held by the executor,
so it runs the same after a fresh build, a resumed one or a fan-out over several machines.
"""
from __future__ import annotations

import json
import time

from flows.config import RunConfig
from flows.contracts import PAIR_STAGES, SCHEMA_VERSION, SPLIT_REJECTS, SYSTEM_PROMPT, split_schema
from flows.exports import write_exports
from flows.prompts import PromptLibrary
from flows.report import funnel, taxonomy_report, taxonomy_report_markdown
from flows.rules import agreement
from flows.splits import SplitConfig, build_splits, official_eval_instructions
from flows.store import ShardStore, write_json_atomic, write_text_atomic


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


def write_outputs(cfg: RunConfig, store: ShardStore, model: str, dialect: str, prompts: PromptLibrary,
                  taxonomy, usage: dict, started: float, timing: dict | None = None) -> dict:
    """Splits, reports, exports and the manifest, from the stage shards in the run folder."""
    outputs = {stage: store.read_stage(stage) for stage in ("respond",) + PAIR_STAGES}
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
