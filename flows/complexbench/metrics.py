"""ComplexBench's scores: DRFR with dependencies applied, its breakdowns, and the coherent test.

Each scoring question has a verdict (met or not: from its rule, or from the LLM judge). A
question counts as met only if it is met and every question in its `dep` is met: a constraint
that applies to "the article for country A" fails when the model did not decide that A
qualifies. DRFR (dependency-aware requirement following rate) is the share of all scoring
questions met so, over every scored instruction. It is broken down, as the official aggregation
does, by the question's constraint dimensions (Length, Keywords ...), their constraint type
(Lexical, Structure, Semantic, Utility; "Others" for a dimension outside the 19), the question's
composition types (And, Chain, Selection), and by the instruction's category (Selection_2 ...),
category base (Selection ...), task type and composition set (its sorted composition types
joined with _, the official "nested methods").

The coherent test (Section 5.2.3) looks at Selection task groups: instructions sharing a `group`
with the same branches and different inputs. A group counts as passed only if every one of its
instructions passes (all of its questions met). Groups whose first instruction has one Selection
question form the "single" test, two or more the "multiple" one; for each: the share of
instructions passed ("origin"), of groups passed ("coherent"), and the relative drop between.

These follow the official code (thu-coai/ComplexBench, evaluation/aggregation.py), checked
against it. Where this knowingly differs:

- An instruction without all its verdicts is not scored: it is listed under `unscored` and left
  out of every share, and a group with an unscored instruction is left out of the coherent test
  (both its origin and coherent shares), counted under `unscored_groups`. The official pipeline
  has no unscored rows: a judge that fails after its retries counts as "not met".
- Like the official code, dependencies are one level deep: a question fails when a question it
  lists in `dep` was judged not met, not when that question only failed through its own
  dependencies (the data lists a question's dependencies in full).
- A question with two dimensions of one type counts twice for that type, as officially.
- The type is spelled "Utility" (the official code writes "Utillity"); a relative drop with no
  instruction passed is None where the official code divides by zero.

    metrics = aggregate(rows, {row.id: [True, False, ...], ...})   # one verdict per question
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from flows.complexbench.data import Row
from flows.errors import InputError
from flows.judged_suite import checked_verdicts

CONSTRAINT_TYPES = {
    "Lexical": ("Word Matching", "Keywords"),
    "Structure": ("JSON Format", "Markdown Format", "Bullets Format", "Length", "Start with", "End with",
                  "Punctuation", "Template"),
    "Semantic": ("Language Style", "Personalization", "Topic", "Sentiment"),
    "Utility": ("Helpfulness", "Target Language", "Supportiveness", "Consistency", "Factuality"),
}
_TYPE_OF = {dimension: kind for kind, dimensions in CONSTRAINT_TYPES.items() for dimension in dimensions}


def constraint_type(dimension: str) -> str:
    return _TYPE_OF.get(dimension, "Others")


def _verdicts(row: Row, verdicts: Sequence | None) -> list[bool] | None:
    """The row's verdicts, or None when any is missing (the row is not scored)."""
    met = checked_verdicts(verdicts, len(row.questions), f"main_id {row.id}", "scoring questions", "question",
                           "true or false")
    return None if met is None else [bool(v) for v in met]


def with_dependencies(row: Row, verdicts: Sequence[bool]) -> list[bool]:
    """Each question met and every question it depends on met (one level, as officially)."""
    met = _verdicts(row, verdicts)
    if met is None:
        raise InputError(f"verdicts for main_id {row.id}: a verdict is missing")
    return [met[q.point_id] and all(met[d] for d in q.dep) for q in row.questions]


def _share(met: int, n: int) -> dict:
    return {"n": n, "met": met, "rate": round(met / n, 4) if n else None}


def _shares(counts: dict[str, list[int]]) -> dict:
    return {key: _share(k, n) for key, (n, k) in sorted(counts.items())}


def _coherent(groups: list[list[list[bool]]], unscored_groups: int) -> dict:
    passed = [[all(row) for row in group] for group in groups]
    rows = [p for group in passed for p in group]
    origin = sum(rows) / len(rows) if rows else None
    coherent = sum(all(group) for group in passed) / len(groups) if groups else None
    drop = (origin - coherent) / origin if origin else None
    return {"groups": len(groups), "unscored_groups": unscored_groups, "instructions": len(rows),
            "origin": round(origin, 4) if origin is not None else None,
            "coherent": round(coherent, 4) if coherent is not None else None,
            "relative_drop": round(drop, 4) if drop is not None else None}


def aggregate(rows: Sequence[Row], verdicts: Mapping[int, Sequence | None]) -> dict:
    """DRFR and its breakdowns over the rows with verdicts (by main_id, one per question), and
    the coherent test. Rows whose verdicts are missing are listed under `unscored`."""
    tables = {name: defaultdict(lambda: [0, 0]) for name in (
        "by_dimension", "by_type", "by_composition", "by_category", "by_category_base", "by_task_type",
        "by_composition_set")}
    total = [0, 0]
    unscored: list[int] = []
    relied: dict[int, list[bool]] = {}
    for row in rows:
        met = _verdicts(row, verdicts.get(row.id))
        if met is None:
            unscored.append(row.id)
            continue
        relied[row.id] = met = with_dependencies(row, met)
        row_keys = {"by_category": row.category, "by_category_base": row.category.split("_")[0],
                    "by_task_type": row.task_type, "by_composition_set": "_".join(sorted(row.compositions))}
        for question, ok in zip(row.questions, met):
            keys = [("by_dimension", d) for d in question.dimensions]
            keys += [("by_type", constraint_type(d)) for d in question.dimensions]
            keys += [("by_composition", c) for c in question.compositions]
            keys += list(row_keys.items())
            for table, key in keys:
                tables[table][key][0] += 1
                tables[table][key][1] += ok
            total[0] += 1
            total[1] += ok
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        if row.group:
            by_group.setdefault(row.group, []).append(row)
    tests: dict[str, tuple[list, list]] = {"single": ([], []), "multiple": ([], [])}
    for members in by_group.values():
        depth = sum("Selection" in q.compositions for q in members[0].questions)
        if depth == 0:
            continue
        scored, left_out = tests["single" if depth == 1 else "multiple"]
        if all(row.id in relied for row in members):
            scored.append([relied[row.id] for row in members])
        else:
            left_out.append(members)
    return {
        "instructions": len(rows), "scored": len(relied), "unscored": unscored,
        "drfr": _share(total[1], total[0]),
        **{name: _shares(counts) for name, counts in tables.items()},
        "coherent_test": {name: _coherent(scored, len(left_out)) for name, (scored, left_out) in tests.items()},
    }
