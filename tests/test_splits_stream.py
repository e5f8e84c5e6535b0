"""The streaming splits, reports and exports give exactly what the in-memory path gives.

- flows.splits.stream_splits against the in-memory implementation it replaced
  (tests/splits_reference.py) on the scenarios of test_splits.py and on pools full of exact and
  near duplicates and official eval instructions;
- flows.outputs.write_outputs on a run folder of several shards in two range parts, with exact
  and near duplicates, rows that contaminate eval and the official eval set, rows below full
  score and pair-stage rejects, against the in-memory reference (every row read, its splits,
  the JSON files as json.dumps writes a list): the same rows in the same order in every split,
  the same rejects, the same manifest numbers, export files byte for byte (a Parquet file of more
  than one batch: the same table and metadata, a row group per batch).
Memory and speed at 10k and 100k rows: benchmarks/splits_memory.py.
"""
from __future__ import annotations

import filecmp
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from splits_reference import reference_splits
from test_splits import en_text, make_candidates, pool, seed_rows, zh_text

from flows.config import RunConfig
from flows.contracts import (
    SCHEMA_VERSION,
    SPLIT_REJECTS,
    SYSTEM_PROMPT,
    split_schema,
    stage_schema,
)
from flows.exports import LF_RECORD, TRACE_RECORD, TRL_RECORD, write_exports
from flows.outputs import below_full_score, write_outputs
from flows.prompts import default_library
from flows.report import taxonomy_report
from flows.rules import agreement
from flows.split_plan import ALL_SPLITS, Candidates, SplitConfig
from flows.splits import build_splits, collect, official_eval_instructions, stream_splits
from flows.store import ShardStore, to_table, write_table_atomic
from flows.taxonomy import load_taxonomy

# --- stream_splits == the in-memory reference ------------------------------------------------------------


class RowTexts:
    """A TextSource over rows in memory, counting how often it is asked."""

    def __init__(self, cands: dict[str, list[dict]]):
        self.cands, self.reads = cands, 0

    def read_texts(self, wanted):
        self.reads += 1
        for split, positions in wanted.items():
            for pos in positions:
                yield split, pos, self.cands[split][pos]


def streamed(candidates, config, references=()):
    """stream_splits' events collected the way build_splits collects them, and how often it read."""
    cands = {name: list(candidates.get(name) or ()) for name in ("sft", "dpo", "iopo")}
    source = RowTexts(cands)
    result = collect(stream_splits(Candidates.from_rows(cands), source, config, references), cands)
    return result.splits, result.rejects, source.reads


def near_and_exact_pool(n: int, seed: int = 0) -> dict[str, list[dict]]:
    """Seeds with all three splits; every 7th prompt repeats an earlier one exactly (after
    normalisation), every 5th is one character off the previous, every 11th is an official eval
    instruction."""
    rng, official, seeds = random.Random(seed), official_eval_instructions(), []
    for i in range(n):
        text = zh_text(rng, rng.randrange(40, 160)) if i % 2 else en_text(rng, rng.randrange(60, 240))
        if i % 7 == 3 and seeds:
            text = "  " + seeds[rng.randrange(len(seeds))]["sft"]["prompt"].upper() + "!"
        elif i % 5 == 4 and seeds:
            prev = seeds[-1]["sft"]["prompt"]
            text = prev[:len(prev) // 2] + "变" + prev[len(prev) // 2 + 1:]
        elif i % 11 == 6:
            text = official[i % len(official)]
        seeds.append(seed_rows(f"s{i}", text, 1 + i % 9))
    return make_candidates(seeds)


@pytest.mark.parametrize("name, candidates, config, n_refs", [
    ("pool", pool(300), SplitConfig(eval_size=20), 50),
    ("duplicates", near_and_exact_pool(1500), SplitConfig(eval_size=150), 1042),
    ("low threshold", near_and_exact_pool(600, 1), SplitConfig(eval_size=60, near_duplicate_threshold=0.5), 1042),
    ("weights", near_and_exact_pool(600, 2), SplitConfig(eval_size=60, weights={"sft": 1, "dpo": 0, "iopo": 2}), 1042),
    ("eval only", near_and_exact_pool(60, 3), SplitConfig(eval_size=60, eval_fraction=1.0), 0),
])
def test_stream_splits_equals_the_in_memory_reference(name, candidates, config, n_refs):
    refs = official_eval_instructions()[:n_refs]
    expected = reference_splits(candidates, config, refs)
    assert build_splits(candidates, config, refs) == expected  # the same, from rows in memory
    splits, rejects, reads = streamed(candidates, config, refs)
    assert splits == expected.splits
    assert rejects == expected.rejects
    assert reads == 1  # every text it compares read once
    if name == "duplicates":  # the scenario has what it is meant to have
        reasons = Counter(r["reason"] for r in rejects)
        assert {"duplicate_instruction", "near_duplicate_instruction", "contaminates_eval",
                "contaminates_trace_eval"} <= set(reasons), reasons


def test_stream_splits_on_the_test_splits_scenarios():
    """Exact, near and cross-split duplicates, prompt2, contamination, duplicates inside eval."""
    rng = random.Random(11)
    official = official_eval_instructions()
    held = zh_text(rng, 60)
    a, b = zh_text(rng, 80), zh_text(rng, 80)
    seeds = [seed_rows("e", held, 3, ("sft", "dpo")), seed_rows("n", held[:20] + "某" + held[21:], 2, ("sft",)),
             seed_rows("o", official[5], 2, ("dpo",)), seed_rows("o2", official[6] + "！", 2, ("iopo",)),
             seed_rows("s1", a, 3, ("sft",)), seed_rows("s2", a, 3, ("dpo",)),
             seed_rows("s3", zh_text(rng, 80), 3, ("iopo",), prompt2=b), seed_rows("s4", b, 3, ("sft",)),
             seed_rows("s5", zh_text(rng, 200), 3, ("iopo",)), seed_rows("x", zh_text(rng, 3), 2, ("iopo",), prompt2="")]
    seeds += [seed_rows(f"f{i}", zh_text(rng, 60), 2, ("sft",)) for i in range(10)]
    cands = make_candidates(seeds)
    cands["iopo"][-1]["prompt2"] = None  # an iopo row without x2
    for config in (SplitConfig(eval_size=1, eval_histogram={3: 1}), SplitConfig(eval_size=0)):
        expected = reference_splits(cands, config, official)
        splits, rejects, _ = streamed(cands, config, official)
        assert (splits, rejects) == (expected.splits, expected.rejects)
    dup = make_candidates([seed_rows(f"d{i}", held if i < 2 else zh_text(rng, 60), 4, ("sft", "iopo"))
                           for i in range(20)])
    config = SplitConfig(eval_size=20, eval_fraction=1.0)
    expected = reference_splits(dup, config)
    assert streamed(dup, config)[:2] == (expected.splits, expected.rejects)


# --- write_outputs == the in-memory reference ---------------------------------------------------

DIMENSIONS = [("numerical", "数值约束"), ("inclusion", "包含约束"), ("tone_and_style", "语气风格约束")]


def graded_row(i: int, prompt: str, full: bool) -> dict:
    constraints = [{"id": f"c{j}", "text": f"constraint {j} of row {i}", "dimension": DIMENSIONS[(i + j) % 3][0],
                    "dimension_zh": DIMENSIONS[(i + j) % 3][1], "type": "content", "check": None}
                   for j in range(1 + i % 6)]
    scores = [{"constraint_id": c["id"], "score": 10 if full or j else 7, "explanation": f"e{j}",
               "rule_passed": None if j % 2 else (full or i % 4 == 0), "rule_reason": None}
              for j, c in enumerate(constraints)]
    return {"row_id": f"r{i:05d}", "seed_id": f"seed{i:05d}", "parent_id": f"q{i:05d}", "stage": "respond",
            "model": "m", "templates": "{}", "sampling": "{}", "taxonomy_version": "t", "text": f"seed text {i}",
            "lang": "en", "source": f"seeds.jsonl:{i}", "fit_dimensions": [DIMENSIONS[i % 3][0]],
            "new_constraint_types": [{"name": f"Kind {i % 4}", "description": f"d{i % 5}"}] if i % 3 == 0 else [],
            "target_dimensions": [], "instruction": prompt, "description": f"Task {i}", "constraints": constraints,
            "input": "NULL" if i % 2 else f"input {i}", "qc_complete": True, "qc_complete_reasoning": "",
            "qc_non_redundant": True, "qc_non_redundant_reasoning": "", "prompt": prompt,
            "response": f"answer {i} " + "内容" * (i % 7), "scores": scores, "overall": 10 if full else 7,
            "overall_explanation": "", "full_score": full}


def write_run(run_dir, n: int = 140, shard_size: int = 9) -> None:
    """A run folder: taxonomy, respond, dpo and iopo shards in two range parts, with rejects.
    Prompts: every 6th repeats an earlier one (case and spacing aside), every 4th is one word off
    the previous, every 13th is an official eval instruction; one in eight rows below full score."""
    rng, official, prompts = random.Random(5), official_eval_instructions(), []
    schemas = {stage: stage_schema(stage) for stage in ("taxonomy", "respond", "dpo", "iopo")}
    for shard, start in enumerate(range(0, n, shard_size)):
        store = ShardStore(run_dir, f"range-{shard % 2:02d}-of-02")
        rows = {stage: [] for stage in schemas}
        rejects = {stage: [] for stage in schemas}
        for i in range(start, min(start + shard_size, n)):
            prompt = en_text(rng, rng.randrange(100, 300)) if i % 3 else zh_text(rng, rng.randrange(60, 200))
            if i % 6 == 5:
                prompt = " ".join(prompts[rng.randrange(len(prompts))].upper().split(" ")) + "."
            elif i % 4 == 3:
                words = prompts[-1].split(" ")
                prompt = " ".join(words[:-1] + ["zzz"]) if len(words) > 3 else prompts[-1] + "变"
            elif i % 13 == 7:
                prompt = official[i]
            prompts.append(prompt)
            row = graded_row(i, prompt, full=i % 8 != 2)
            rows["respond"].append(row)
            rows["taxonomy"].append({**{k: row[k] for k in schemas["taxonomy"].names}, "stage": "taxonomy"})
            if row["full_score"] and i % 3 != 1:
                rows["dpo"].append({**row, "row_id": row["row_id"] + "d", "stage": "dpo", "rejected_response": "worse",
                                    "rejected_scores": row["scores"], "rejected_overall": 3})
            if row["full_score"] and i % 3 != 2:
                rows["iopo"].append({**row, "row_id": row["row_id"] + "i", "stage": "iopo",
                                     "edit_op": ("add", "delete", "revise")[i % 3], "edited_constraint_ids": ["c0"],
                                     "constraints2": row["constraints"], "response2": f"y2 {i}",
                                     "prompt2": None if i == 9 else prompt + f"\n9. extra constraint {i}",
                                     "scores_y2_x2": [], "scores_y1_x2": [], "scores_y2_x1": []})
            elif row["full_score"]:
                rejects["iopo"].append({"row_id": row["row_id"], "seed_id": row["seed_id"], "stage": "iopo",
                                        "reason": "edit_failed", "detail": f"op={('add', 'revise')[i % 2]};x"})
        rejects["dpo"].append({"row_id": "x", "seed_id": "x", "stage": "dpo", "reason": "score_below_10", "detail": ""})
        for stage, schema in schemas.items():
            store.write_shard(stage, shard, schema, rows[stage], rejects[stage], "test")


def reference(store: ShardStore, cfg: RunConfig, card: dict, out_dir) -> dict:
    """What write_outputs wrote before it streamed: every row in memory, the in-memory splits, each split
    file in one piece, the JSON exports as json.dumps writes a list."""
    outputs = {stage: store.read_stage(stage) for stage in ("respond", "dpo", "iopo")}

    def with_messages(row):
        return {**row, "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                    {"role": "user", "content": row["prompt"]},
                                    {"role": "assistant", "content": row["response"]}]}

    candidates = {"sft": [with_messages(r) for r in outputs["respond"] if r["full_score"]],
                  "dpo": [with_messages(r) for r in outputs["dpo"]], "iopo": [with_messages(r) for r in outputs["iopo"]]}
    below = sorted((below_full_score(r) for r in outputs["respond"] if not r["full_score"]), key=lambda r: r["row_id"])
    result = reference_splits(candidates, SplitConfig(
        eval_size=cfg.splits.eval_size, eval_fraction=cfg.splits.eval_fraction, weights=cfg.splits.weights,
        near_duplicate_threshold=cfg.splits.near_duplicate_threshold, seed=cfg.pipeline.seed),
        official_eval_instructions())
    for name, rows in result.splits.items():
        write_table_atomic(out_dir / "splits" / f"{name}.parquet", to_table(
            rows, split_schema(name), {"split": name, "schema_version": SCHEMA_VERSION, "model": "m"}))
    write_table_atomic(out_dir / "splits" / "rejects.parquet", to_table(
        below + result.rejects, SPLIT_REJECTS, {"split": "rejects", "schema_version": SCHEMA_VERSION}))
    exports = out_dir / "exports"
    write_exports(exports, result.splits, card)
    for name, rows in result.splits.items():  # the JSON files as they were written: whole lists
        if rows:
            (exports / "llamafactory" / f"trace_{name}.json").write_text(
                json.dumps([LF_RECORD[name](r) for r in rows], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            for export, records, rel in (("trl", TRL_RECORD, f"trl/{name}.jsonl"), ("trace", TRACE_RECORD, "trace/eval.jsonl")):
                if name in records:
                    (exports / rel).write_text("".join(json.dumps(records[name](r), ensure_ascii=False) + "\n"
                                                       for r in rows), encoding="utf-8")
    return {"splits": {name: {"path": f"splits/{name}.parquet", "rows": len(rows)}
                       for name, rows in result.splits.items()},
            "rule_agreement": agreement([(r["scores"], r["constraints"]) for r in outputs["respond"]]),
            "taxonomy": taxonomy_report(store.read_stage("taxonomy"), load_taxonomy()),
            "reasons": Counter(r["reason"] for r in below + result.rejects)}


def reference_acceptance(store: ShardStore) -> dict:
    out: dict = {}
    for stage in ("dpo", "iopo"):
        rejects = [r for r in store.read_stage(stage, "rejects") if r["reason"] != "score_below_10"]
        out[stage] = {"tried": len(rejects) + len(store.read_stage(stage)), "accepted": len(store.read_stage(stage))}
    by_op: dict = {}
    for row in store.read_stage("iopo"):
        by_op.setdefault(row["edit_op"], {"tried": 0, "accepted": 0})
        by_op[row["edit_op"]]["tried"] += 1
        by_op[row["edit_op"]]["accepted"] += 1
    for row in store.read_stage("iopo", "rejects"):
        if row["detail"].startswith("op="):
            by_op.setdefault(row["detail"][3:].split(";")[0], {"tried": 0, "accepted": 0})["tried"] += 1
    return out | {"iopo_by_edit": by_op}


@pytest.fixture(scope="module")
def run_and_reference(tmp_path_factory):
    """One synthetic run folder; write_outputs in small batches (many row groups, buckets and
    read-back rounds) and in the default batch size; the in-memory reference beside them."""
    base = tmp_path_factory.mktemp("stream")
    write_run(base / "run")
    cfg = RunConfig(out=str(base / "run"), splits={"eval_size": 14, "eval_fraction": 0.1})
    store = ShardStore(base / "run")
    manifests = {}
    for batch_rows in (4, None):
        run = base / f"run-{batch_rows}"
        shutil.copytree(base / "run", run)
        kwargs = {"batch_rows": batch_rows} if batch_rows else {}
        manifests[batch_rows] = write_outputs(cfg.model_copy(update={"out": str(run)}), ShardStore(run), "m",
                                              "openai", default_library(), load_taxonomy(), {}, time.time(), **kwargs)
    card = {"funnel": manifests[None]["funnel"], "models": ["m"], "templates": manifests[None]["templates"],
            "taxonomy_version": manifests[None]["taxonomy_version"], "acceptance": reference_acceptance(store)}
    expected = reference(store, cfg, card, base / "reference")
    return base, manifests, expected, store


@pytest.mark.slow
def test_the_run_has_what_it_is_meant_to_test(run_and_reference):
    _, manifests, expected, store = run_and_reference
    assert {"score_below_10", "seed_in_eval", "duplicate_instruction", "near_duplicate_instruction",
            "contaminates_eval", "contaminates_trace_eval"} <= set(expected["reasons"]), expected["reasons"]
    assert all(expected["splits"][name]["rows"] > 4 for name in ALL_SPLITS)
    assert len(store.stage_files("respond")) > 10 and len({p.parent for p in store.stage_files("respond")}) == 2


@pytest.mark.parametrize("batch_rows", [4, None])
def test_manifest_numbers_are_the_reference(run_and_reference, batch_rows):
    base, manifests, expected, store = run_and_reference
    manifest = manifests[batch_rows]
    assert manifest["splits"] == expected["splits"]
    assert manifest["acceptance"] == reference_acceptance(store)
    assert manifest["rule_agreement"] == expected["rule_agreement"]
    report = json.loads((base / f"run-{batch_rows}" / "reports" / "taxonomy_report.json").read_text())
    assert report == expected["taxonomy"]


@pytest.mark.parametrize("batch_rows", [4, None])
def test_split_files_are_the_reference(run_and_reference, batch_rows):
    base, _, _, _ = run_and_reference
    for name in (*ALL_SPLITS, "rejects"):
        got, want = base / f"run-{batch_rows}" / "splits" / f"{name}.parquet", base / "reference" / "splits" / f"{name}.parquet"
        assert pq.read_table(got).to_pylist() == pq.read_table(want).to_pylist(), name
        assert pq.read_schema(got) == pq.read_schema(want) and pq.read_schema(got).metadata == pq.read_schema(want).metadata
        if batch_rows is None:  # one row group: the same bytes as one write_table
            assert filecmp.cmp(got, want, shallow=False), name
        else:
            assert pq.ParquetFile(got).metadata.num_row_groups == -(-pq.ParquetFile(want).metadata.num_rows // 4)


@pytest.mark.parametrize("batch_rows", [4, None])
def test_export_files_are_the_reference_byte_for_byte(run_and_reference, batch_rows):
    base, _, _, _ = run_and_reference
    got_dir, want_dir = base / f"run-{batch_rows}" / "exports", base / "reference" / "exports"
    files = sorted(p.relative_to(want_dir) for p in want_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(got_dir) for p in got_dir.rglob("*") if p.is_file())
    assert len(files) == 14
    for rel in files:
        if rel.suffix == ".parquet" and batch_rows:  # a row group per batch: compare the tables
            assert pq.read_table(got_dir / rel).equals(pq.read_table(want_dir / rel)), rel
            assert pq.read_schema(got_dir / rel).metadata == pq.read_schema(want_dir / rel).metadata
        else:
            assert filecmp.cmp(got_dir / rel, want_dir / rel, shallow=False), rel
    assert not [p for p in (base / f"run-{batch_rows}").rglob(".*")], "temporary files left behind"


def test_a_failed_write_leaves_the_earlier_files(tmp_path, monkeypatch):
    """An error half-way through the exports leaves the earlier run's files and no temporary ones."""
    run = tmp_path / "run"
    write_run(run, n=40)
    cfg = RunConfig(out=str(run), splits={"eval_size": 3, "eval_fraction": 0.1})
    args = (cfg, ShardStore(run), "m", "openai", default_library(), load_taxonomy(), {}, time.time())
    write_outputs(*args)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "stages" not in p.parts}

    def broken(row):
        raise RuntimeError("disk full")

    monkeypatch.setitem(TRL_RECORD, "dpo", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_outputs(*args)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "stages" not in p.parts}
    assert after.keys() == before.keys()
    assert after[run / "exports" / "trl" / "dpo.jsonl"] == before[run / "exports" / "trl" / "dpo.jsonl"]
    assert not [p for p in run.rglob(".*")], "temporary files left behind"


@pytest.mark.slow
def test_memory_benchmark_runs(tmp_path):
    """benchmarks/splits_memory.py at a tiny size: it synthesises, measures in a child, prints a row."""
    done = subprocess.run([sys.executable, "benchmarks/splits_memory.py", "--rows", "300", "--keep", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1].split()
    assert line[0] == "300" and float(line[2]) > 0  # rows, then peak RSS in MB


def test_coalesce_joins_many_tiny_batches_in_order_and_compacts_them(monkeypatch):
    """Batches of tiny shard files are joined to about `rows` rows, in order and from their
    positions; held tables are copied into one every _COMPACT_EVERY, so a joined batch never
    holds more chunks than that (each tiny table's buffers cost far more than its rows)."""
    import pyarrow as pa

    from flows import outputs
    monkeypatch.setattr(outputs, "_COMPACT_EVERY", 5)
    sizes = [1, 0, 2, 1, 1, 3, 1, 1, 1, 2, 1, 1, 1, 1, 4, 1, 1]
    batches, pos = [], 0
    for n in sizes:
        batches.append((pos, pa.table({"v": pa.array(range(pos, pos + n), pa.int64())})))
        pos += n
    joined = list(outputs._coalesce(iter(batches), 9))
    assert [t["v"].to_pylist() for _, t in joined] == [list(range(s, s + t.num_rows)) for s, t in joined]
    assert [r for _, t in joined for r in t["v"].to_pylist()] == list(range(sum(sizes)))
    assert all(t.num_rows >= 9 for _, t in joined[:-1])
    assert max(t["v"].num_chunks for _, t in joined) <= 5
    assert len(joined) < len(sizes)
