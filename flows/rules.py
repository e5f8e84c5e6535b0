"""Rule checks beside the judge: which constraints get a check, the verdicts, and who decides.

A constraint whose dimension a rule can decide (taxonomy `rule_checkable`) may carry a check spec
(flows/checks/), extracted once by the LLM, which is shown only those constraints, and kept only
when it validates and its constraint's text supports it (flows/checks/grounding.py). When a response
is graded, each such constraint gets a rule verdict next to the judge's score, and the policy
says what counts as passing:
    both   a checkable constraint must score 10 and pass its rule (the default)
    judge  the judge alone decides; verdicts are recorded for the agreement report
    rule   the rule decides where there is one, the judge elsewhere
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Iterable

from flows.checks import CHECK_SCHEMA, check, validate_spec
from flows.checks.grounding import ground

RULE_POLICIES = ("both", "judge", "rule")


def checkable_ids(taxonomy) -> list[str]:
    return [d.id for d in taxonomy.dimensions if d.rule_checkable]


def checkable_constraints(constraints: list[dict], taxonomy) -> list[dict]:
    """The constraints the extraction call is asked about: those a rule can decide. The others
    are left out rather than answered null, so that a small model cannot misalign its answers."""
    ids = set(checkable_ids(taxonomy))
    return [c for c in constraints if c["dimension"] in ids]


def needs_checks(constraints: list[dict], taxonomy) -> bool:
    return bool(checkable_constraints(constraints, taxonomy))


def checks_schema(n_constraints: int) -> dict:
    """Structured output of the extraction call: one check or null per constraint, in order."""
    item = {"anyOf": [{"type": "null"}, CHECK_SCHEMA]}
    return {"type": "object", "required": ["checks"],
            "properties": {"checks": {"type": "array", "minItems": n_constraints, "maxItems": n_constraints,
                                      "items": item}}}


def accept_checks(constraints: list[dict], checks: list, taxonomy) -> list[str | None]:
    """One check (JSON text) or None per constraint. ``checks`` are the extraction's answers, one
    per checkable constraint in order; a check is kept when it is valid for its constraint's
    dimension and grounded in the constraint's text, as much of it as the text supports."""
    answers = iter(checks)
    ids = set(checkable_ids(taxonomy))
    kept = []
    for constraint in constraints:
        spec = next(answers, None) if constraint["dimension"] in ids else None
        if spec is not None and validate_spec(spec, constraint["dimension"]) is None:
            spec = ground(spec, constraint["text"])
        else:
            spec = None
        kept.append(json.dumps(spec, ensure_ascii=False, sort_keys=True) if spec else None)
    return kept


def with_rule_verdicts(scores: list[dict], constraints: list[dict], response: str) -> list[dict]:
    """The judge's scores, each with the rule verdict of its constraint (None where none)."""
    out = []
    for score, constraint in zip(scores, constraints):
        spec = constraint.get("check")
        verdict = check(json.loads(spec), response) if spec else None
        out.append({**score, "rule_passed": None if verdict is None else verdict.passed,
                    "rule_reason": None if verdict is None else verdict.reason})
    return out


def passes(score: dict, policy: str = "both") -> bool:
    judge = score["score"] == 10
    rule = score.get("rule_passed")
    if rule is None or policy == "judge":
        return judge
    if policy == "rule":
        return rule
    return judge and rule


class Agreement:
    """agreement() fed a graded row at a time: add(scores, constraints) as rows are read, then result()."""

    def __init__(self):
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # key -> [n, agree]

    def add(self, scores: list[dict], constraints: list[dict]) -> None:
        for score, constraint in zip(scores, constraints):
            if score.get("rule_passed") is None:
                continue
            agree = int(score["rule_passed"] == (score["score"] == 10))
            for key in (constraint["dimension"], "all"):
                self.counts[key][0] += 1
                self.counts[key][1] += agree

    def result(self) -> dict:
        return {key: {"n": n, "agree": a, "rate": round(a / n, 4)} for key, (n, a) in sorted(self.counts.items())}


def agreement(graded: Iterable[tuple[list[dict], list[dict]]]) -> dict:
    """How often rule and judge agree (rule passed <=> judge gave 10), over (scores, constraints)
    pairs, per dimension and in all; only constraints that have both a verdict and a score."""
    acc = Agreement()
    for scores, constraints in graded:
        acc.add(scores, constraints)
    return acc.result()
