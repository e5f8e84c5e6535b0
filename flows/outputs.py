"""What a build writes after its stages: splits, reports, exports and the manifest.

Everything here reads the stage shards from the run folder, never rows held by the executor,
so it runs the same after a fresh build, a resumed one or a fan-out over several machines.

Memory does not grow with the rows: shards are read a batch at a time, and what stays for the
whole run is a few small records per row (flows/splits.py: `Candidates`, stream_splits).
    1. Records of the candidate rows; graded rows below full score go straight to the rejects.
    2. The split decisions (stream_splits reads the texts it compares once, and keeps their
       shingles in a temporary file in the run folder).
    3. The split files: kept rows are read in file order and spilled to a temporary Arrow file in
       buckets of output positions, then written a bucket (a row group) at a time in the order
       they were kept.
    4. Reports and exports from the files, a batch at a time.
"""
from __future__ import annotations

import json
import tempfile
import time
from bisect import bisect_right
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.config import RunConfig, request_sampling
from flows.contracts import (
    MESSAGES,
    PAIR_STAGES,
    SCHEMA_VERSION,
    SPLIT_REJECTS,
    SYSTEM_PROMPT,
    split_schema,
)
from flows.exports import export_split_files
from flows.heap import release_freed_memory
from flows.prompts import PromptLibrary
from flows.ranges import merge_usage
from flows.report import funnel, taxonomy_report, taxonomy_report_markdown
from flows.report_html import write_report_html
from flows.rules import Agreement
from flows.split_plan import ALL_SPLITS, COMPACT_EVERY, TRAIN_SPLITS, Candidates, SplitConfig
from flows.splits import official_eval_instructions, stream_splits
from flows.store import (
    BATCH_ROWS,
    ParquetStreamWriter,
    ShardStore,
    read_batches,
    write_json_atomic,
    write_text_atomic,
)

CANDIDATE_STAGE = {"sft": "respond", "dpo": "dpo", "iopo": "iopo"}  # where each split's candidates are
CANDIDATE_COLUMNS = {"sft": ["row_id", "seed_id", "full_score", "constraints", "scores"],
                  "dpo": ["row_id", "seed_id"], "iopo": ["row_id", "seed_id"]}
_POS = "__position"  # a spilled row's position in its split file
_COMPACT_EVERY = COMPACT_EVERY  # tables _coalesce holds before it copies them into one


def below_full_score(row: dict) -> dict:
    """The rejects row of a graded row that may not enter a split: its scores below 10, failed rules."""
    low = [f"{s['constraint_id']}={s['score']}" for s in row["scores"] if s["score"] < 10]
    low += [f"{s['constraint_id']}:rule_failed" for s in row["scores"] if s.get("rule_passed") is False]
    return {"row_id": row["row_id"], "seed_id": row["seed_id"], "split": "sft",
            "reason": "score_below_10", "detail": ", ".join(low)}


def messages_column(prompt: pa.ChunkedArray, response: pa.ChunkedArray) -> pa.Array:
    """The chat `messages` of each row: [system, user = prompt, assistant = response]."""
    n = len(prompt)
    content = pa.concat_arrays([pa.array([SYSTEM_PROMPT] * n, pa.string()),
                                prompt.combine_chunks(), response.combine_chunks()])
    content = content.take(np.arange(3 * n).reshape(3, n).T.ravel())  # per row: system, user, assistant
    turns = pa.StructArray.from_arrays([pa.array(["system", "user", "assistant"] * n, pa.string()), content],
                                       fields=list(MESSAGES.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, 3 * n + 1, 3), pa.int32()), turns, type=MESSAGES)


def as_split_rows(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Stage rows as rows of a split: its columns in its order (null where a file has none), with messages."""
    columns = []
    for f in schema:
        if f.name == "messages":
            columns.append(messages_column(rows["prompt"], rows["response"]))
        elif f.name not in rows.column_names:
            columns.append(pa.nulls(rows.num_rows, f.type))
        else:
            column = rows[f.name]
            columns.append(column if column.type == f.type else column.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


class RunCandidates:
    """The rows of a run folder that may enter a split, read a batch at a time: sft = respond rows
    with full score; dpo, iopo = every row of those stages. A candidate's position counts its
    split's candidates in file order (read_stage's order). It is flows.splits' TextSource."""

    def __init__(self, store: ShardStore, batch_rows: int = BATCH_ROWS):
        self.batch_rows = batch_rows
        self.files = {split: store.stage_files(stage) for split, stage in CANDIDATE_STAGE.items()}
        self.starts: dict[str, list[int]] = {}  # per split: position of each file's first candidate, then the total

    def read_candidates(self, rejects: ParquetStreamWriter, graded: Agreement) -> Candidates:
        """The first pass: the split rules' records of every candidate, and where each file's
        candidates start. Graded rows feed the rule agreement; one below full score goes to
        `rejects` instead of the candidates, in row id order: the same whatever the layout of
        the run folder (one process, or ranges), like the rest of the splits."""
        cands = Candidates()
        below: list[pa.Table] = []  # rejects rows, held as Arrow columns: a few bytes a row
        pending: list[dict] = []
        for split in TRAIN_SPLITS:
            self.starts[split] = [0]
            for path in self.files[split]:
                for batch in read_batches(path, CANDIDATE_COLUMNS[split], self.batch_rows):
                    if split == "sft":
                        rows = batch.to_pylist()
                        for row in rows:
                            graded.add(row["scores"], row["constraints"])
                        full = pc.fill_null(batch["full_score"], False)
                        pending += [below_full_score(row) for row in rows if not row["full_score"]]
                        if len(pending) >= self.batch_rows:
                            below.append(pa.Table.from_pylist(pending, SPLIT_REJECTS))
                            pending = []
                        batch = batch.filter(full)
                        counts = pc.fill_null(pc.list_value_length(batch["constraints"]), 0)
                        cands.add_batch(split, batch["row_id"], batch["seed_id"], counts.to_numpy())
                    else:
                        cands.add_batch(split, batch["row_id"], batch["seed_id"])
                self.starts[split].append(cands.size(split))
        below_rows = pa.concat_tables([*below, pa.Table.from_pylist(pending, SPLIT_REJECTS)]).combine_chunks()
        below_rows = below_rows.take(pc.sort_indices(below_rows, [("row_id", "ascending")]))
        for batch in below_rows.to_batches(self.batch_rows):
            for row in batch.to_pylist():  # a row at a time: the writer's row groups stay as they were
                rejects.add_row(row)
        return cands

    def batches(self, split: str, columns: list[str] | None = None,
                files: list[int] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(position of the first row, candidate rows with `columns` or all) per batch of each
        file, or of the files numbered in `files`."""
        read = columns if columns is None or split != "sft" else [*columns, "full_score"]
        for i in range(len(self.files[split])) if files is None else files:
            pos = self.starts[split][i]
            for batch in read_batches(self.files[split][i], read, self.batch_rows):
                rows = pa.Table.from_batches([batch])
                if split == "sft":
                    rows = rows.filter(pc.fill_null(rows["full_score"], False))
                    rows = rows if columns is None else rows.select(columns)
                yield pos, rows
                pos += rows.num_rows

    def read_texts(self, wanted: dict[str, list[int]]) -> Iterator[tuple[str, int, dict]]:
        """The instruction texts of the wanted candidates, reading only the files that hold them."""
        for split, positions in wanted.items():
            want = set(positions)
            files = sorted({bisect_right(self.starts[split], p) - 1 for p in want})
            columns = ["prompt", "prompt2"] if split == "iopo" else ["prompt"]
            for pos, rows in self.batches(split, columns, files):
                for i, row in enumerate(rows.to_pylist()):
                    if pos + i in want:
                        yield split, pos + i, row


class _Destinations:
    """Where each kept candidate goes: per train split and position, the index in ALL_SPLITS of
    its split (-1: rejected) and its position in that split's file."""

    def __init__(self, cands: Candidates):
        self.split = {name: np.full(cands.size(name), -1, np.int8) for name in TRAIN_SPLITS}
        self.pos = {name: np.zeros(cands.size(name), np.int64) for name in TRAIN_SPLITS}
        self.sizes = dict.fromkeys(ALL_SPLITS, 0)

    def keep(self, key: tuple[str, int], name: str) -> None:
        self.split[key[0]][key[1]] = ALL_SPLITS.index(name)
        self.pos[key[0]][key[1]] = self.sizes[name]
        self.sizes[name] += 1


class _Spill:
    """A split's kept rows between reading order and writing order, on disk: an Arrow IPC file of
    small batches, each of one bucket of `batch_rows` output positions; read back a bucket at a
    time (random access by batch), sorted by position."""

    def __init__(self, path: Path, schema: pa.Schema, batch_rows: int):
        self.path, self.batch_rows = path, batch_rows
        self.schema = schema.append(pa.field(_POS, pa.int64()))
        self.rows = 0
        self._buckets: dict[int, list[int]] = defaultdict(list)  # bucket -> its batches in the file
        self._written = 0
        self._writer = pa.ipc.new_file(str(path), self.schema)

    def add(self, rows: pa.Table, positions: np.ndarray) -> None:
        buckets = positions // self.batch_rows
        for bucket in np.unique(buckets).tolist():
            sel = np.flatnonzero(buckets == bucket)
            part = rows.take(sel).append_column(self.schema.field(_POS), pa.array(positions[sel]))
            for batch in part.combine_chunks().to_batches():
                self._writer.write_batch(batch)
                self._buckets[bucket].append(self._written)
                self._written += 1
        self.rows += len(positions)

    def in_order(self) -> Iterator[pa.Table]:
        self._writer.close()
        with pa.OSFile(str(self.path)) as f:  # not memory-mapped: only the bucket read is in memory
            reader = pa.ipc.open_file(f)
            for bucket in range(-(-self.rows // self.batch_rows)):
                part = pa.Table.from_batches([reader.get_batch(i) for i in self._buckets[bucket]], self.schema)
                yield part.take(pc.sort_indices(part[_POS])).drop_columns([_POS]).combine_chunks()


def _coalesce(batches: Iterator[tuple[int, pa.Table]], rows: int) -> Iterator[tuple[int, pa.Table]]:
    """Consecutive batches (of small shard files) joined to about `rows` rows."""
    pending: list[pa.Table] = []
    start = n = 0
    for pos, table in batches:
        if not pending:
            start = pos
        assert pos == start + n, "batches must be consecutive"
        pending.append(table)
        n += table.num_rows
        if len(pending) >= _COMPACT_EVERY:  # tables of tiny files each hold buffers far larger than their rows
            pending = [pa.concat_tables(pending).combine_chunks()]
        if n >= rows:
            yield start, pa.concat_tables(pending)
            pending, n = [], 0
    if pending:
        yield start, pa.concat_tables(pending)


def _write_split_files(store: ShardStore, source: RunCandidates, dest: _Destinations, model: str,
                       batch_rows: int) -> None:
    """Every split file, its rows in the order they were kept, each written to a temporary name
    and renamed when complete (sft, dpo, iopo, eval)."""
    schemas = {name: split_schema(name) for name in ALL_SPLITS}
    with tempfile.TemporaryDirectory(prefix=".spill-", dir=store.run_dir) as tmp:
        spills = {name: _Spill(Path(tmp) / f"{name}.arrow", schemas[name], batch_rows) for name in ALL_SPLITS}
        for split in TRAIN_SPLITS:
            for start, rows in _coalesce(source.batches(split), batch_rows):
                to = dest.split[split][start:start + rows.num_rows]
                at = dest.pos[split][start:start + rows.num_rows]
                for code in np.unique(to[to >= 0]).tolist():
                    sel = np.flatnonzero(to == code)
                    name = ALL_SPLITS[code]
                    spills[name].add(as_split_rows(rows.take(sel), schemas[name]), at[sel])
        for name in ALL_SPLITS:
            with store.split_writer(name, schemas[name], {"model": model}, batch_rows) as writer:
                for table in spills[name].in_order():
                    writer.write(table)


def write_splits(store: ShardStore, config: SplitConfig, references: list[str], model: str, graded: Agreement,
                 batch_rows: int = BATCH_ROWS) -> dict[str, int]:
    """The split files and the split rejects (flows/splits.py rules) from the stage shards; rows
    per split. The graded rows read on the way feed `graded`."""
    source = RunCandidates(store, batch_rows)
    # the rejects file is renamed last, after the split files, as it always was
    with store.split_writer("rejects", SPLIT_REJECTS, {}, batch_rows) as rejects:
        cands = source.read_candidates(rejects, graded)
        dest = _Destinations(cands)
        for event in stream_splits(cands, source, config, references, workdir=store.run_dir):
            if event[0] == "keep":
                dest.keep(event[1], event[2])
            else:
                rejects.add_row(event[2])
        _write_split_files(store, source, dest, model, batch_rows)
    return dest.sizes


def acceptance(store: ShardStore) -> dict:
    """Tried and accepted per preference stage, and per edit kind for IOPO."""
    out: dict = {}
    for stage in PAIR_STAGES:
        accepted = store.count_rows(stage)
        out[stage] = {"tried": accepted, "accepted": accepted}
    by_op: dict = {}
    for row in store.iter_rows("iopo", columns=["edit_op"]):
        by_op.setdefault(row["edit_op"], {"tried": 0, "accepted": 0})
        by_op[row["edit_op"]]["tried"] += 1
        by_op[row["edit_op"]]["accepted"] += 1
    for stage in PAIR_STAGES:
        for row in store.iter_rows(stage, "rejects", ["reason", "detail"]):
            out[stage]["tried"] += row["reason"] != "score_below_10"
            if stage == "iopo" and row["detail"].startswith("op="):
                op = row["detail"][3:].split(";")[0]
                by_op.setdefault(op, {"tried": 0, "accepted": 0})["tried"] += 1
    out["iopo_by_edit"] = dict(sorted(by_op.items()))  # the same order however the shards are laid out
    return out


def paid(usage: dict) -> dict:
    """Requests paid, answers from the request cache and tokens of one run, over its stages."""
    total = merge_usage(list(usage.values())) if usage else {}
    return {key: total.get(key, 0) for key in ("requests", "cache_hits", "prompt_tokens", "completion_tokens")}


def earlier_runs(manifest_path: Path) -> list[dict]:
    """The runs an existing manifest of the folder records (one, for a manifest written before
    the list existed); none when there is no readable manifest."""
    try:
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(old.get("runs"), list):
        return old["runs"]
    if "usage" not in old:
        return []
    return [{"created": old.get("created"), "seconds": old.get("seconds"), "model": old.get("model"),
             **paid(old["usage"]), "usage": old["usage"], "timing": old.get("timing", {})}]


def write_outputs(cfg: RunConfig, store: ShardStore, model: str, dialect: str, prompts: PromptLibrary,
                  taxonomy, usage: dict, started: float, timing: dict | None = None,
                  batch_rows: int = BATCH_ROWS) -> dict:
    """Splits, reports, exports and the manifest, from the stage shards in the run folder.
    Freed memory goes back to the system after the stages and after each phase (flows/heap.py)."""
    release_freed_memory()
    references = official_eval_instructions() if cfg.splits.decontaminate_official_eval else []
    graded = Agreement()
    sizes = write_splits(store, SplitConfig(
        eval_size=cfg.splits.eval_size, eval_fraction=cfg.splits.eval_fraction, weights=cfg.splits.weights,
        near_duplicate_threshold=cfg.splits.near_duplicate_threshold, seed=cfg.pipeline.seed),
        references, model, graded, batch_rows)
    release_freed_memory()
    report = taxonomy_report(store.iter_rows("taxonomy", columns=["fit_dimensions", "new_constraint_types", "text"]),
                             taxonomy)
    write_json_atomic(store.run_dir / "reports" / "taxonomy_report.json", report)
    write_text_atomic(store.run_dir / "reports" / "taxonomy_report.md", taxonomy_report_markdown(report))
    release_freed_memory()

    this_run = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.time() - started, 2), "model": model, **paid(usage),
                "usage": usage, "timing": timing or {}}
    runs = [*earlier_runs(store.run_dir / "manifest.json"), this_run]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": this_run["created"],
        "seconds": this_run["seconds"],
        "model": model,
        "dialect": dialect,
        "sampling": request_sampling(cfg),  # per call kind, what its requests sent
        "templates": {name: prompts.version(name) for name in prompts.names()},
        "taxonomy_version": taxonomy.version_id,
        "config": json.loads(cfg.model_dump_json()),
        "funnel": funnel(store.run_dir),
        "usage": usage,  # this run's, per stage (a rerun of a finished folder pays nothing)
        "timing": timing or {},  # per stage: wall_s (first row in to last row out), row_s_mean
        # every run of this folder, oldest first: what each paid and how long it took
        "runs": runs,
        "usage_total": merge_usage([r["usage"] for r in runs]),
        "splits": {name: {"path": f"splits/{name}.parquet", "rows": sizes[name]} for name in ALL_SPLITS},
        "acceptance": acceptance(store),
        # stage 5: how often the rule checks and the judge agree, per dimension
        "rule_agreement": graded.result(),
    }
    card = {"funnel": manifest["funnel"], "models": [model], "templates": manifest["templates"],
            "taxonomy_version": manifest["taxonomy_version"], "acceptance": manifest["acceptance"]}
    manifest["exports"] = export_split_files(store.run_dir / "exports",
                                             {name: store.split_path(name) for name in ALL_SPLITS}, card, batch_rows)
    release_freed_memory()
    manifest["files"] = store.files()
    manifest["stage_files"] = store.stage_files_summary()
    manifest["report"] = "reports/report.html"
    write_json_atomic(store.run_dir / "manifest.json", manifest)
    write_report_html(store.run_dir)  # from the manifest just written and the split and stage files
    return manifest
