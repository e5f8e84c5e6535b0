"""Read seed instructions from a file or a folder of JSONL, Parquet or CSV files.

A user's mistake (missing file, no text column, bad bytes) is an InputError with one line that
names the file, row and field. A bad row inside a good file (empty text, too long, duplicate) is
not an error: it becomes a reject of the `seeds` stage with a reason, so nothing is lost silently.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from flows.contracts import content_id

SUFFIXES = (".jsonl", ".parquet", ".csv")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class InputError(ValueError):
    """Unusable seed input; the message is one line naming the file (and row, field)."""


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


def _read_records(fs, name: str, field: str) -> list[tuple[int, object]]:
    """(row number, value of `field`) for every row; row numbers are 1-based lines or rows."""
    path = display_name(fs, name)
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".parquet":
            try:
                with fs.open(name, "rb") as fh:
                    table = pq.read_table(fh)
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
            if field not in table.column_names:
                raise InputError(f"{path}: no '{field}' column (columns: {', '.join(table.column_names)})")
            return list(enumerate(table.column(field).to_pylist(), start=1))
        with fs.open(name, "rb") as fh:
            raw = fh.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise InputError(f"{path}:{line}: not UTF-8 (byte {exc.start})") from None
        if suffix == ".csv":
            reader = csv.DictReader(text.splitlines())
            if reader.fieldnames is None or field not in reader.fieldnames:
                cols = ", ".join(reader.fieldnames or []) or "none"
                raise InputError(f"{path}: no '{field}' column (columns: {cols})")
            return [(i, rec.get(field)) for i, rec in enumerate(reader, start=2)]
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
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
            records.append((lineno, rec[field]))
        return records
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def load_seeds(path: str | Path, field: str = "text", limit: int | None = None,
               max_chars: int = 8000) -> SeedBatch:
    fs, files = seed_files(path)
    rows: list[dict] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    total = 0
    for file in files:
        records = _read_records(fs, file, field)
        for rowno, value in records:
            if limit is not None and len(rows) >= limit:
                break
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
                rejects.append({"row_id": seed_id, "seed_id": seed_id, "stage": "seeds", "reason": reason,
                                "detail": detail, "row": json.dumps({"text": shown, "source": source}, ensure_ascii=False)})
                continue
            seen.add(seed_id)
            rows.append({"row_id": seed_id, "seed_id": seed_id, "parent_id": None, "stage": "seeds",
                         "model": None, "templates": "{}", "sampling": "{}", "taxonomy_version": None,
                         "text": text, "lang": detect_lang(text), "source": source})
    if total == 0:
        raise InputError(f"{path}: no seed rows found")
    return SeedBatch(rows, rejects)
