"""ComplexBench's data file, read into rows the metrics can trust.

The official layout (data/data_final.json) is one JSON array of objects:

    {"main_id": 899, "group": "complex_instruction_eval_1285" (Selection only), "idx_in_group": 1,
     "instruction": "...", "instruction_en": "...", "task_types": "Professional Writing",
     "constraint_dimensions": ["Length", ...], "composition_types": ["And", "Selection"],
     "category": "Selection_2",
     "scoring_questions": [{"point_id": 0, "question": "...", "question_en": "...",
                            "rule": null or "model_length:[300,10000]",
                            "constraint_dimensions": ["Length"], "composition_types": [],
                            "dep": [0, ...]}, ...]}

A question's `dep` lists the questions (by point_id) it depends on. The official code uses a
question's position in the list as its point_id, so a point_id that is not its position is an
error here rather than a silent mix-up. `group` and `idx_in_group` may be missing or null
(instructions without Selection); `instruction_en` and `question_en` may be missing (the first
release had none). Every rule is read by flows.complexbench.rules, so an unknown rule form is an
error at load time. A file that does not fit is an InputError of one line naming the file, the
row (1-based position in the array) and the field.

    rows = load_rows("data_final.json")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.complexbench.rules import Rule, parse_rule
from flows.jsonl import rows_with_unique_ids
from flows.errors import InputError


@dataclass(frozen=True)
class Question:
    point_id: int  # its position in the row's list
    question: str
    question_en: str | None
    rule: Rule | None  # None: an LLM judge decides
    dimensions: tuple[str, ...]  # constraint dimensions it verifies ("Length", ...)
    compositions: tuple[str, ...]  # composition types it verifies ("Selection", ...)
    dep: tuple[int, ...]  # point_ids it depends on


@dataclass(frozen=True)
class Row:
    id: int  # main_id
    instruction: str
    instruction_en: str | None
    task_type: str
    dimensions: tuple[str, ...]
    compositions: tuple[str, ...]
    category: str  # "And", "Chain_2", "Selection_1" ...
    group: str | None  # Selection task group, for the coherent test
    idx_in_group: int | None
    questions: tuple[Question, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(raw: dict, field: str, where: str, optional: bool = False) -> str | None:
    value = raw.get(field)
    if optional and value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {field!r} must be a non-empty string")
    return value


def _names(raw: dict, field: str, where: str) -> tuple[str, ...]:
    value = raw.get(field)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{where}: field {field!r} must be a list of names")
    return tuple(value)


def _question(raw: object, position: int, count: int, where: str) -> Question:
    field = f"scoring_questions[{position}]"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: field {field!r} must be an object")
    point_id = raw.get("point_id")
    if not _is_int(point_id) or point_id != position:
        raise InputError(f"{where}: field '{field}.point_id' must be {position} (its position), not {point_id!r}")
    rule = raw.get("rule")
    if rule is not None and not isinstance(rule, str):
        raise InputError(f"{where}: field '{field}.rule' must be a string or null")
    dep = raw.get("dep")
    if not isinstance(dep, list) or not all(_is_int(d) for d in dep):
        raise InputError(f"{where}: field '{field}.dep' must be a list of point_ids")
    for d in dep:
        if not 0 <= d < count or d == position:
            raise InputError(f"{where}: field '{field}.dep': {d} is not another question of the row (0-{count - 1})")
    return Question(position, _text(raw, "question", f"{where}: {field}"),
                    _text(raw, "question_en", f"{where}: {field}", optional=True),
                    parse_rule(rule, f"{where}: field '{field}.rule'") if rule is not None else None,
                    _names(raw, "constraint_dimensions", f"{where}: {field}"),
                    _names(raw, "composition_types", f"{where}: {field}"), tuple(dep))


def parse_row(raw: object, where: str) -> Row:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a JSON object")
    main_id = raw.get("main_id")
    if not _is_int(main_id):
        raise InputError(f"{where}: field 'main_id' must be an integer")
    group, idx_in_group = raw.get("group"), raw.get("idx_in_group")
    if group is not None and not isinstance(group, str):
        raise InputError(f"{where}: field 'group' must be a string or null")
    if idx_in_group is not None and not _is_int(idx_in_group):
        raise InputError(f"{where}: field 'idx_in_group' must be an integer or null")
    questions = raw.get("scoring_questions")
    if not isinstance(questions, list) or not questions:
        raise InputError(f"{where}: field 'scoring_questions' must be a non-empty list")
    category = _text(raw, "category", where)
    return Row(main_id, _text(raw, "instruction", where), _text(raw, "instruction_en", where, optional=True),
               _text(raw, "task_types", where), _names(raw, "constraint_dimensions", where),
               _names(raw, "composition_types", where), category, group or None, idx_in_group,
               tuple(_question(q, i, len(questions), where) for i, q in enumerate(questions)))


def load_rows(source: str | Path) -> list[Row]:
    """Every row of a ComplexBench file, in file order; main_ids must be unique."""
    return rows_with_unique_ids(source, parse_row, "main_id")
