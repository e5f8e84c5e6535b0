"""Read seed instructions from a file or a folder of JSONL, Parquet or CSV files, lazily.

A user's mistake (missing file, no text column, bad bytes) is an InputError with one line that
names the file, row and field. A bad row inside a good file (empty text, too long, duplicate) is
not an error: it becomes a reject of the `seeds` stage with a reason, so nothing is lost silently.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow.parquet as pq

from flows.errors import InputError
from flows.contracts import content_id

SUFFIXES = (".jsonl", ".parquet", ".csv")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class SeedBatch:
    rows: list[dict]  # seed rows that go on (row_id == seed_id)
    rejects: list[dict]  # rows that do not, with a reason


def detect_lang(text: str) -> str:
    cjk = len(_CJK.findall(text))
    return "zh" if cjk and cjk >= 0.2 * len(text.replace(" ", "")) else "en"


def seed_files(source: str | Path) -> tuple[object, list[str]]:
    """(filesystem, files) for a file, a folder (searched recursively), a glob pattern, or any
    of those behind an fsspec URL (s3://bucket/seeds/, gs://..., memory://...)."""
    import fsspec

    source = str(source)
    try:
        fs, root = fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{source}: cannot open this location ({exc})") from None
    wanted = lambda p: p.lower().endswith(SUFFIXES)  # noqa: E731
    if any(ch in root for ch in "*?["):
        files = sorted(p for p in fs.glob(root) if wanted(p) and fs.isfile(p))
        if not files:
            raise InputError(f"{source}: no .jsonl, .parquet or .csv files match this pattern")
        return fs, files
    if not fs.exists(root):
        raise InputError(f"{source}: no such file or folder")
    if fs.isdir(root):
        files = sorted(p for p in fs.find(root) if wanted(p))
        if not files:
            raise InputError(f"{source}: no .jsonl, .parquet or .csv files in this folder")
        return fs, files
    if not wanted(root):
        raise InputError(f"{source}: unsupported file type (use .jsonl, .parquet or .csv)")
    return fs, [root]


def display_name(fs, name: str) -> str:
    """How a file is named in messages and lineage: a plain path locally, a URL elsewhere."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return name if "file" in protocols else fs.unstrip_protocol(name)


def _jsonl_records(fh, path: str, field: str) -> Iterator[tuple[int, object]]:
    offset = 0
    for lineno, raw in enumerate(fh, start=1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not UTF-8 (byte {offset + exc.start})") from None
        offset += len(raw)
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object")
        if field not in rec:
            raise InputError(f"{path}:{lineno}: no '{field}' field")
        yield lineno, rec[field]


def _csv_records(fh, path: str, field: str) -> Iterator[tuple[int, object]]:
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text)
    try:
        if reader.fieldnames is None or field not in reader.fieldnames:
            cols = ", ".join(reader.fieldnames or []) or "none"
            raise InputError(f"{path}: no '{field}' column (columns: {cols})")
        for i, rec in enumerate(reader, start=2):
            yield i, rec.get(field)
    except UnicodeDecodeError:
        raise InputError(f"{path}:{reader.line_num + 1}: not UTF-8") from None


def _parquet_records(fh, path: str, field: str) -> Iterator[tuple[int, object]]:
    try:
        parquet = pq.ParquetFile(fh)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    names = parquet.schema_arrow.names
    if field not in names:
        raise InputError(f"{path}: no '{field}' column (columns: {', '.join(names)})")
    rowno = 0
    for batch in parquet.iter_batches(batch_size=4096, columns=[field]):
        for value in batch.column(0).to_pylist():
            rowno += 1
            yield rowno, value


def _read_records(fs, name: str, field: str) -> Iterator[tuple[int, object]]:
    """(row number, value of `field`) for every row, read lazily (a file is never loaded
    whole); row numbers are 1-based lines (JSONL, CSV) or rows (Parquet)."""
    path = display_name(fs, name)
    reader = {".parquet": _parquet_records, ".csv": _csv_records}.get(Path(name).suffix.lower(), _jsonl_records)
    try:
        with fs.open(name, "rb") as fh:
            yield from reader(fh, path, field)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def iter_seeds(path: str | Path, field: str = "text", limit: int | None = None,
               max_chars: int = 8000) -> Iterator[tuple[dict | None, dict | None]]:
    """(seed row, None) or (None, reject row) for every row of the source, in order, read
    lazily; an unusable source raises InputError when the reading gets there."""
    fs, files = seed_files(path)
    seen: set[str] = set()  # seed ids only: 16 characters a seed, never the texts
    accepted = total = 0
    for file in files:
        for rowno, value in _read_records(fs, file, field):
            if limit is not None and accepted >= limit:
                return
            total += 1
            source = f"{display_name(fs, file)}:{rowno}"
            text = value.strip() if isinstance(value, str) else value
            seed_id = content_id("seed", text if isinstance(text, str) else repr(value))
            reason = None
            if not isinstance(text, str):
                reason, detail = "not_text", f"{source}: '{field}' is {type(value).__name__}, not text"
            elif not text:
                reason, detail = "empty_seed", f"{source}: '{field}' is empty"
            elif len(text) > max_chars:
                reason, detail = "seed_too_long", f"{source}: {len(text)} characters (max {max_chars})"
            elif seed_id in seen:
                reason, detail = "duplicate_seed", f"{source}: same text as an earlier seed"
            if reason:
                shown = text[:200] if isinstance(text, str) else repr(value)[:200]
                yield None, {"row_id": seed_id, "seed_id": seed_id, "stage": "seeds", "reason": reason,
                             "detail": detail, "row": json.dumps({"text": shown, "source": source}, ensure_ascii=False)}
                continue
            seen.add(seed_id)
            accepted += 1
            yield {"row_id": seed_id, "seed_id": seed_id, "parent_id": None, "stage": "seeds",
                   "model": None, "templates": "{}", "sampling": "{}", "taxonomy_version": None,
                   "text": text, "lang": detect_lang(text), "source": source}, None
    if total == 0:
        raise InputError(f"{path}: no seed rows found")


@dataclass(frozen=True)
class SeedCount:
    rows: int  # seeds that go on
    rejects: int  # rows rejected on input


def count_seeds(items: Iterable[tuple[dict | None, dict | None]]) -> SeedCount:
    """Run through the seed items without keeping them: as the cheap streaming pass before any
    LLM request is paid, it turns a bad row at the end of a million-row file into an InputError
    now, not after hours of building."""
    rows = rejects = 0
    for row, _ in items:
        rows += row is not None
        rejects += row is None
    return SeedCount(rows, rejects)


def seed_shards(items: Iterable[tuple[dict | None, dict | None]], shard_size: int
                ) -> Iterator[tuple[list[dict], list[dict]]]:
    """(seed rows, input rejects) per shard of `shard_size` seeds, lazily. A reject goes with the
    shard being filled when it is read (trailing ones with the last shard); no seeds at all still
    make one shard, so the rejects are written."""
    rows: list[dict] = []
    rejects: list[dict] = []
    for row, reject in items:
        if row is None:
            rejects.append(reject)
            continue
        if len(rows) == shard_size:
            yield rows, rejects
            rows, rejects = [], []
        rows.append(row)
    yield rows, rejects


def shard_count(seeds: int, shard_size: int) -> int:
    return max(1, -(-seeds // shard_size))


def load_seeds(path: str | Path, field: str = "text", limit: int | None = None,
               max_chars: int = 8000) -> SeedBatch:
    """Every seed in memory at once: for small sources and tests (builds stream, see iter_seeds)."""
    rows: list[dict] = []
    rejects: list[dict] = []
    for row, reject in iter_seeds(path, field, limit, max_chars):
        (rows.append(row) if row is not None else rejects.append(reject))
    return SeedBatch(rows, rejects)
