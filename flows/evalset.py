"""Evaluation rows in the official Trace layout (data/trace-eval/SOURCE.md), from the official
set, a trace-build run's eval export, or any file written the same way.

    rows = load_eval_rows("data/trace-eval/202409_trace_evaluation.jsonl", taxonomy, limit=5)

Each row becomes: id, system and prompt (from `messages`), description, input, category, and
constraints as the pipeline writes them (id c1.., text without its number, dimension mapped from
the Chinese `levels2` label onto the taxonomy; `unknown` when the label is outside it).
"""
from __future__ import annotations

from pathlib import Path

from flows.contracts import SYSTEM_PROMPT
from flows.jsonl import json_objects
from flows.errors import InputError
from flows.stages.structure import strip_numbering

OFFICIAL_EVAL = Path(__file__).resolve().parent.parent / "data" / "trace-eval" / "202409_trace_evaluation.jsonl"
UNKNOWN = "unknown"
REQUIRED = ("id", "messages", "description", "constraints_splits", "levels2")


def resolve_eval_path(source: str | Path | None) -> Path:
    """A file, or a trace-build run folder (its exports/trace/eval.jsonl); default: the official set."""
    if source is None:
        return OFFICIAL_EVAL
    path = Path(source)
    if path.is_dir():
        path = path / "exports" / "trace" / "eval.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: no such eval file (give an official-layout JSONL file or a run folder)")
    return path


def load_eval_rows(source: str | Path | None, taxonomy, limit: int | None = None) -> list[dict]:
    path = resolve_eval_path(source)
    rows = []
    for number, raw in json_objects(path):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(_row(path, number, raw, taxonomy))
    if not rows:
        raise InputError(f"{path}: no eval rows")
    return rows


def count_rows(path: Path) -> int:
    """How many rows (non-blank lines) a JSON-lines file holds, without reading them: what a
    --limit or --sample run is a part of."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def coverage(in_data: int, evaluated: int, limit: int | None, sample: int | None) -> dict:
    """What part of its data a run evaluated: {"in_data": rows in the file, "selected_by": the
    options that left some out ("--limit 3"), None when every row was evaluated}, for Table 3's `*`."""
    flags = " ".join(f"--{name} {value}" for name, value in (("limit", limit), ("sample", sample)) if value)
    return {"in_data": in_data, "selected_by": flags if evaluated < in_data else None}


def spread_sample(rows: list[dict], n: int) -> list[dict]:
    """n rows spread evenly over the file: a quick run that sees IF-S and IF-M rows alike (the
    official file lists its single-constraint rows first), the same rows every time."""
    if n >= len(rows):
        return rows
    return [rows[i * len(rows) // n] for i in range(n)]


def _row(path: Path, number: int, raw, taxonomy) -> dict:
    where = f"{path}: line {number}"
    for field in REQUIRED:
        if field not in raw:
            raise InputError(f"{where}: field {field!r} is missing")
    messages = raw["messages"]
    user = next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), None) \
        if isinstance(messages, list) else None
    if not isinstance(user, str) or not user.strip():
        raise InputError(f"{where}: field 'messages' has no user message")
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None) or SYSTEM_PROMPT
    splits, labels = raw["constraints_splits"], raw["levels2"]
    if not isinstance(splits, list) or not splits or not all(isinstance(c, str) for c in splits):
        raise InputError(f"{where}: field 'constraints_splits' must be a non-empty list of strings")
    if not isinstance(labels, list) or len(labels) != len(splits):
        raise InputError(f"{where}: field 'levels2' must have one label per constraint ({len(splits)})")
    constraints = []
    for i, (text, label) in enumerate(zip(splits, labels), start=1):
        dim = taxonomy.by_zh(label) if isinstance(label, str) else None
        constraints.append({"id": f"c{i}", "text": strip_numbering(text) or text.strip(),
                            "dimension": dim.id if dim else UNKNOWN, "dimension_zh": label,
                            "type": dim.type if dim else UNKNOWN, "check": None})
    return {"id": str(raw["id"]), "system": system, "prompt": user, "description": raw["description"],
            "input": raw.get("input") or "NULL", "category": raw.get("category") or "", "constraints": constraints}
