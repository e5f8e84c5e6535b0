"""The shard store: Parquet shards per stage, rejects beside them, a manifest derived from them.

Layout of a run folder:
    stages/<stage>/shard-00003.parquet     rows that went on
    stages/<stage>/rejects-00003.parquet   rows that did not, each with a reason code
    splits/<split>.parquet                 final splits (sft, ...)
    manifest.json                          schema version, files, row counts, hashes, usage

Each file is written to a temporary name and renamed when complete (rejects first, then the
shard), so a shard file that exists is a finished shard. Its metadata holds the hash of the
input row ids it was computed from: a shard whose input changed is computed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from flows.contracts import REJECTS, SCHEMA_VERSION, content_id

META_KEY = b"trace_build"
BATCH_ROWS = 1024  # rows at a time when a file is read or written in pieces (a row group when written)

def input_hash(rows: list[dict], fingerprint: str = "") -> str:
    """What a shard was computed from: its input rows and the fingerprint of the stage
    (templates, config, model) that computed it."""
    return content_id(fingerprint, *[r["row_id"] for r in rows])


def write_table_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def to_table(rows: list[dict], schema: pa.Schema, meta: dict) -> pa.Table:
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_batches(path: Path, columns: list[str] | None = None,
                 batch_size: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows (only `columns`, if given), `batch_size` at most at a time, one row
    group in memory at a time (ParquetFile.iter_batches reads ahead many)."""
    with pq.ParquetFile(path) as f:
        for group in range(f.metadata.num_row_groups):
            yield from f.read_row_group(group, columns=columns).to_batches(max_chunksize=batch_size)


def read_rows(path: Path, columns: list[str] | None = None, batch_size: int = BATCH_ROWS) -> Iterator[dict]:
    """read_batches a row at a time, as dicts."""
    for batch in read_batches(path, columns, batch_size):
        yield from batch.to_pylist()


def schema_with_meta(schema: pa.Schema, meta: dict) -> pa.Schema:
    """`schema` carrying `meta` as to_table puts it on a table."""
    return schema.with_metadata({META_KEY: json.dumps(meta).encode()})


class _AtomicFile:
    """A file written in pieces under a temporary name and renamed by close(), so a file that
    exists is complete. As a context manager: closed at the end of the block, or on an error
    removed (temporary name included), the file of an earlier run left as it was."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")

    def _finish(self) -> None:  # what a complete file still needs before it is closed
        pass

    def _close_file(self) -> None:
        raise NotImplementedError

    def close(self) -> Path:
        self._finish()
        self._close_file()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._close_file()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ParquetStreamWriter(_AtomicFile):
    """A Parquet file written a table at a time, one row group per table; rows given one by one
    (add_row) are grouped `group_rows` at a time. A file without rows gets one empty row group,
    as write_table_atomic writes it, so a small file is the same bytes either way."""

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int = BATCH_ROWS):
        super().__init__(path)
        self.schema = schema
        self.rows = 0
        self._group_rows = group_rows
        self._pending: list[dict] = []
        self._writer = pq.ParquetWriter(self.tmp, schema)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        self._flush_rows()
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def add_row(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self._group_rows:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self.write(to_table(rows, self.schema, {}))

    def _finish(self) -> None:
        self._flush_rows()
        if not self.rows:
            self._writer.write_table(self.schema.empty_table())

    def _close_file(self) -> None:
        self._writer.close()


class TextStreamWriter(_AtomicFile):
    """A UTF-8 text file written in pieces: write_text_atomic for text too large to hold."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._fh = open(self.tmp, "w", encoding="utf-8")

    def write(self, text: str) -> None:
        self._fh.write(text)

    def _close_file(self) -> None:
        self._fh.close()


class ShardStore:
    """A run folder. With `part` (a range of a build fanned out over several machines) the
    shards it writes go to stages/<stage>/<part>/, so ranges never write the same file; reading
    a stage always sees the shards of every part."""

    def __init__(self, run_dir: Path | str, part: str | None = None):
        self.run_dir = Path(run_dir)
        self.part = part

    def stage_dir(self, stage: str) -> Path:
        folder = self.run_dir / "stages" / stage
        return folder / self.part if self.part else folder

    def shard_path(self, stage: str, shard: int) -> Path:
        return self.stage_dir(stage) / f"shard-{shard:05d}.parquet"

    def rejects_path(self, stage: str, shard: int) -> Path:
        return self.stage_dir(stage) / f"rejects-{shard:05d}.parquet"

    def stage_files(self, stage: str, kind: str = "shard") -> list[Path]:
        """Every finished file of a stage (kind "shard" or "rejects"), of every part."""
        folder = self.run_dir / "stages" / stage
        return sorted(folder.glob(f"{kind}-*.parquet")) + sorted(folder.glob(f"*/{kind}-*.parquet"))

    def split_path(self, split: str) -> Path:
        return self.run_dir / "splits" / f"{split}.parquet"

    def load_shard(self, stage: str, shard: int, expected_input: str) -> tuple[list[dict], list[dict]] | None:
        """The finished shard's (rows, rejects), or None when it must be computed (again)."""
        path, rejects = self.shard_path(stage, shard), self.rejects_path(stage, shard)
        if not (path.exists() and rejects.exists()):
            return None
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        if meta.get("input_hash") != expected_input or meta.get("schema_version") != SCHEMA_VERSION or meta.get("retry"):
            return None
        return table.to_pylist(), pq.read_table(rejects).to_pylist()

    def write_shard(self, stage: str, shard: int, schema: pa.Schema, rows: list[dict],
                    rejects: list[dict], input_hash_: str, retry: bool = False) -> None:
        """retry: the shard holds rows a bug rejected (errors.py): the next run computes it again."""
        meta = {"stage": stage, "shard": shard, "input_hash": input_hash_, "schema_version": SCHEMA_VERSION}
        if retry:
            meta["retry"] = True
        write_table_atomic(self.rejects_path(stage, shard), to_table(rejects, REJECTS, meta))
        write_table_atomic(self.shard_path(stage, shard), to_table(rows, schema, meta))

    def iter_rows(self, stage: str, kind: str = "shard", columns: list[str] | None = None) -> Iterator[dict]:
        """read_stage one row at a time (only `columns` if given), in read_stage's order, a batch
        in memory at a time."""
        for path in self.stage_files(stage, kind):
            yield from read_rows(path, columns)

    def count_rows(self, stage: str, kind: str = "shard") -> int:
        """Rows in every file of a stage, from the files' footers."""
        total = 0
        for path in self.stage_files(stage, kind):
            with pq.ParquetFile(path) as f:
                total += f.metadata.num_rows
        return total

    def read_stage(self, stage: str, kind: str = "shard") -> list[dict]:
        rows: list[dict] = []
        for path in self.stage_files(stage, kind):
            rows += pq.read_table(path).to_pylist()
        return rows

    def write_split(self, split: str, schema: pa.Schema, rows: list[dict], meta: dict) -> Path:
        path = self.split_path(split)
        write_table_atomic(path, to_table(rows, schema, {"split": split, "schema_version": SCHEMA_VERSION, **meta}))
        return path

    def split_writer(self, split: str, schema: pa.Schema, meta: dict,
                     group_rows: int = BATCH_ROWS) -> ParquetStreamWriter:
        """write_split a table (or a row) at a time; the file appears when the writer is closed."""
        meta = {"split": split, "schema_version": SCHEMA_VERSION, **meta}
        return ParquetStreamWriter(self.split_path(split), schema_with_meta(schema, meta), group_rows)

    def files(self) -> list[dict]:
        """Every Parquet file a user takes from the run (splits, exports) with its row count and
        sha256. Stage shards are not listed one by one: there are thousands (see stage_files_summary)."""
        out = []
        for path in sorted(self.run_dir.glob("*/**/*.parquet")):
            relative = path.relative_to(self.run_dir)
            if path.name.startswith(".") or relative.parts[0] == "stages":
                continue
            out.append({
                "path": str(relative),
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "sha256": file_sha256(path),
            })
        return out

    def stage_files_summary(self) -> dict[str, dict]:
        """Per stage: how many shard and rejects files, and their bytes (rows are in the funnel)."""
        out = {}
        for folder in sorted(p for p in (self.run_dir / "stages").glob("*") if p.is_dir()):
            shards, rejects = self.stage_files(folder.name), self.stage_files(folder.name, "rejects")
            out[folder.name] = {"shard_files": len(shards), "rejects_files": len(rejects),
                                "bytes": sum(p.stat().st_size for p in shards + rejects)}
        return out
