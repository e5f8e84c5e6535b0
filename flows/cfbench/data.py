"""CFBench's data file, read into rows the metrics can trust.

The official layout (data/cfbench_data.json) is one JSON array of objects:

    {"idx": 0, "prompt": "...", "gold": "" or a reference answer, "split": "easy" | "hard",
     "criteria": [[text, "主需" | "次需", type, subtype], ...],
     "isanswer", "doamin" (sic), "scenario", "source": not used here}

A criterion's type and subtype (the third and fourth fields: 内容约束 / 元素内容约束 ...) may be
empty strings: the official file has 129 such criteria, and they are kept as they are; so is its
one row with an empty prompt (idx 810), which the official evaluation scores too. A file
that does not fit (not JSON, a row without a prompt, an unknown priority, a criterion of three
fields) is an InputError of one line naming the file, the row (its 1-based position in the
array) and the field, never a traceback or a silently skipped row.

    rows = load_rows("cfbench_data.json")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.jsonl import rows_with_unique_ids
from flows.errors import InputError

PRIMARY, SECONDARY = "主需", "次需"
SPLITS = ("easy", "hard")


@dataclass(frozen=True)
class Criterion:
    text: str
    priority: str  # PRIMARY or SECONDARY
    type: str  # third field, e.g. 内容约束; may be ""
    subtype: str  # fourth field, e.g. 元素内容约束; may be ""


@dataclass(frozen=True)
class Row:
    id: int  # the file's idx
    prompt: str
    gold: str | None  # the reference answer, None where the file has none ("")
    split: str  # "easy" or "hard"
    criteria: tuple[Criterion, ...]


def _text(raw: dict, field: str, where: str, empty_ok: bool = False) -> str:
    value = raw.get(field)
    if not isinstance(value, str):
        raise InputError(f"{where}: field {field!r} must be a string")
    if not empty_ok and not value.strip():
        raise InputError(f"{where}: field {field!r} is empty")
    return value


def _criterion(raw: object, where: str, field: str) -> Criterion:
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(part, str) for part in raw)):
        raise InputError(f"{where}: field {field!r} must be a list of four strings "
                         "(text, priority, type, subtype)")
    text, priority, kind, subtype = raw
    if not text.strip():
        raise InputError(f"{where}: field {field!r}: the criterion text is empty")
    if priority not in (PRIMARY, SECONDARY):
        raise InputError(f"{where}: field {field!r}: priority must be {PRIMARY} or {SECONDARY}, not {priority!r}")
    return Criterion(text, priority, kind, subtype)


def parse_row(raw: object, where: str) -> Row:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a JSON object")
    idx = raw.get("idx")
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise InputError(f"{where}: field 'idx' must be an integer")
    prompt = _text(raw, "prompt", where, empty_ok=True)  # the official idx 810 has an empty one
    gold = raw.get("gold")
    if gold is not None and not isinstance(gold, str):
        raise InputError(f"{where}: field 'gold' must be a string or null")
    split = raw.get("split")
    if split not in SPLITS:
        raise InputError(f"{where}: field 'split' must be 'easy' or 'hard', not {split!r}")
    criteria = raw.get("criteria")
    if not isinstance(criteria, list) or not criteria:
        raise InputError(f"{where}: field 'criteria' must be a non-empty list")
    return Row(idx, prompt, gold if gold and gold.strip() else None, split,
               tuple(_criterion(c, where, f"criteria[{i}]") for i, c in enumerate(criteria)))


def load_rows(source: str | Path) -> list[Row]:
    """Every row of a CFBench file, in file order; ids (idx) must be unique."""
    return rows_with_unique_ids(source, parse_row, "idx")
