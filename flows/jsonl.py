"""Reading a JSON-lines file a user gives (eval sets, IFEval prompts and responses): one object
per line, and a bad line is one error naming the file and the line, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from flows.seeds import InputError


def json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line, lazily."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
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
