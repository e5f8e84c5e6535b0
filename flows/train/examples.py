"""Training examples from what users have: a trace-build run (its folder or manifest.json) or a
LLaMA-Factory ShareGPT file such as the official IOPO example.

Every example is one `Example`: x1 -> y1 is the answer to learn; DPO adds y2 (the rejected
answer to x1); IOPO adds x2 (x1 with edited constraints) and y2 (its answer). A method takes the
examples that carry what it needs (an IOPO quadruple also serves DPO and SFT); a file that
cannot serve it is refused in one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flows.contracts import SYSTEM_PROMPT, content_id
from flows.errors import InputError
from flows.words import plural

# The split of a trace-build run that feeds each method.
SPLIT_FOR = {"sft": "sft", "dpo": "dpo", "iopo": "iopo", "iopo-light": "iopo",
             "iopo-input-only": "iopo", "iopo-output-only": "iopo"}
NEEDS = {"sft": "sft", "dpo": "pair", "iopo": "quad"}  # kind of example per method family


@dataclass(frozen=True)
class Example:
    id: str
    system: str
    x1: str
    y1: str
    y2: str | None = None  # DPO: rejected answer to x1; IOPO: answer to x2
    x2: str | None = None  # IOPO only

    @property
    def kind(self) -> str:
        return "quad" if self.x2 is not None else "pair" if self.y2 is not None else "sft"

    def reduced_to(self, kind: str) -> "Example":
        if kind == self.kind:
            return self
        return Example(self.id, self.system, self.x1, self.y1, self.y2 if kind == "pair" else None)


def family(method: str) -> str:
    return "sft" if method == "sft" else "dpo" if method == "dpo" else "iopo"


def load_examples(source: str | Path, method: str) -> list[Example]:
    """Examples for `method` from a run folder, a manifest.json, or a LLaMA-Factory JSON file."""
    path = Path(source)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.exists():
        raise InputError(f"{path}: no such file (give a trace-build run folder, its manifest.json, "
                         "or a LLaMA-Factory JSON file)")
    if path.name == "manifest.json":
        examples = _from_manifest(path, method)
    else:
        examples = _from_sharegpt(path)
    need = NEEDS[family(method)]
    # Richer examples serve simpler methods: a quadruple holds the DPO pair (x1: y1 over y2, since
    # y2 was graded to fail x1) and the SFT pair (x1, y1); a DPO pair holds (x1, chosen).
    rank = {"sft": 0, "pair": 1, "quad": 2}
    usable = [e.reduced_to(need) for e in examples if rank[e.kind] >= rank[need]]
    if not usable:
        raise InputError(no_examples_line(path, method, need, examples))
    return usable


def no_examples_line(path: Path, method: str, need: str, examples: list[Example]) -> str:
    if path.name == "manifest.json" and not examples:  # the build made none: say which split, and why it may be
        split = SPLIT_FOR[method]
        return (f"{path.parent}: the {split} split has no rows, nothing to train {method} on (see the funnel: "
                f"trace-build status {path.parent}; a build of more seeds makes more)")
    kinds = sorted({e.kind for e in examples}) or ["no rows"]
    return f"{path}: method {method} needs {need} examples, the file holds {', '.join(kinds)}"


def _from_manifest(path: Path, method: str) -> list[Example]:
    import pyarrow.parquet as pq

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from None
    split = SPLIT_FOR[method]
    entry = manifest.get("splits", {}).get(split)
    if not entry:
        raise InputError(f"{path}: the run has no {split} split (method {method})")
    table_path = path.parent / entry["path"]
    rows = pq.read_table(table_path).to_pylist()
    examples = []
    for i, row in enumerate(rows):
        system = next((m["content"] for m in row.get("messages") or [] if m["role"] == "system"), SYSTEM_PROMPT)
        fields = {"x1": "prompt", "y1": "response"}
        if split == "dpo":
            fields["y2"] = "rejected_response"
        if split == "iopo":
            fields |= {"x2": "prompt2", "y2": "response2"}
        values = {}
        for key, column in fields.items():
            if not isinstance(row.get(column), str) or not row[column]:
                raise InputError(f"{table_path}: row {i}: field {column!r} is missing or empty")
            values[key] = row[column]
        examples.append(Example(id=row["row_id"], system=system, **values))
    return examples


def _turn(path: Path, i: int, field: str, turn, role: str) -> str:
    if not isinstance(turn, dict) or turn.get("from") != role or not isinstance(turn.get("value"), str):
        raise InputError(f"{path}: row {i}: field {field!r} must be {{\"from\": \"{role}\", \"value\": text}}")
    return turn["value"]


def _from_sharegpt(path: Path) -> list[Example]:
    """ShareGPT rows: SFT (human, gpt), ranking (human + chosen/rejected), or the IOPO layout
    (two human turns x1, x2 + chosen y1 / rejected y2, as in official_iopo_example.json)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of rows")
    examples = []
    for i, row in enumerate(rows):
        turns = row.get("conversations") if isinstance(row, dict) else None
        if not isinstance(turns, list) or not turns:
            raise InputError(f"{path}: row {i}: field 'conversations' is missing or empty")
        system = row.get("system") or SYSTEM_PROMPT
        if "chosen" in row or "rejected" in row:
            y1 = _turn(path, i, "chosen", row.get("chosen"), "gpt")
            y2 = _turn(path, i, "rejected", row.get("rejected"), "gpt")
            prompts = [_turn(path, i, f"conversations[{j}]", t, "human") for j, t in enumerate(turns)]
            if len(prompts) > 2:
                raise InputError(f"{path}: row {i}: field 'conversations' has {plural(len(prompts), 'turn')}; "
                                 "ranking rows take one (DPO) or two (IOPO: x1, x2)")
            x2 = prompts[1] if len(prompts) == 2 else None
            examples.append(Example(content_id(system, prompts, y1, y2), system, prompts[0], y1, y2, x2))
        else:
            if len(turns) != 2:
                raise InputError(f"{path}: row {i}: field 'conversations' must be one human and one gpt turn")
            x1 = _turn(path, i, "conversations[0]", turns[0], "human")
            y1 = _turn(path, i, "conversations[1]", turns[1], "gpt")
            examples.append(Example(content_id(system, x1, y1), system, x1, y1))
    return examples
