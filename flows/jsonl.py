"""Reading the JSON files a user gives: JSON lines (eval sets, IFEval prompts and responses; one
object per line) and JSON arrays of rows (CFBench, ComplexBench). A bad line or row is one error
naming the file and the line or row, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from flows.errors import InputError

Row = TypeVar("Row")


def require_file(path: Path) -> None:
    """A file to read: one line when it is missing or a folder."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")


def json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line, lazily."""
    require_file(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {number}: not UTF-8 (byte {exc.start} of the line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {number}: expected a JSON object")
            yield number, obj


def json_array(path: Path) -> list:
    """The file's top-level JSON array; anything else is one InputError line."""
    require_file(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of rows, not {type(data).__name__}")
    return data


def rows_with_unique_ids(source: str | Path, parse_row: Callable[[dict, str], Row], id_field: str) -> list[Row]:
    """Every row of a JSON array file parsed by `parse_row(raw, where)`, in file order; the rows'
    `id` (the file's `id_field`) must be unique and there must be at least one."""
    path = Path(source)
    rows: list = []
    seen: dict = {}
    for number, raw in enumerate(json_array(path), start=1):
        where = f"{path}: row {number}"
        row = parse_row(raw, where)
        if row.id in seen:
            raise InputError(f"{where}: field {id_field!r}: {row.id} is also row {seen[row.id]}")
        seen[row.id] = number
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows
