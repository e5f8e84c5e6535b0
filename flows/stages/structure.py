"""Stage 3, structuring: split the flat instruction into description / constraints / input,
each constraint carrying its taxonomy dimension and the official Chinese label."""
from __future__ import annotations

import re

from flows.checks import DIMENSION_KINDS
from flows.llm.client import LLMFailure
from flows.material import material_lost
from flows.rules import accept_checks, checkable_constraints, checkable_ids, checks_schema, needs_checks
from flows.stages.base import Reject, RowTrace, Stage, StageContext

_NUMBERING = re.compile(r"^\s*(?:\d+[.)、．]|[-*•])\s*")


def strip_numbering(text: str) -> str:
    """A constraint's text without the list number or bullet an LLM or a file put before it."""
    return _NUMBERING.sub("", text).strip()
_NO_INPUT = {"", "null", "none", "n/a", "无", "空"}


def structure_schema(dimension_ids: list[str], max_constraints: int) -> dict:
    return {
        "type": "object",
        "properties": {
            "extractable": {"type": "boolean"},
            "reason": {"type": "string"},
            "description": {"type": "string", "minLength": 1},
            "constraints": {
                "type": "array", "minItems": 1, "maxItems": max_constraints,
                "items": {
                    "type": "object",
                    "properties": {"text": {"type": "string", "minLength": 1},
                                   "dimension": {"type": "string", "enum": dimension_ids}},
                    "required": ["text", "dimension"],
                },
            },
            "input": {"type": "string"},
        },
        "required": ["extractable", "reason", "description", "constraints", "input"],
    }


def normalise_input(text: str) -> str:
    text = text.strip()
    return "NULL" if text.lower() in _NO_INPUT else text


class StructureStage(Stage):
    name = "structure"
    calls = {"structure": "structure", "extract_checks": "checks"}
    settings = ("max_constraints", "rule_checks")

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        # the expansion wrote one constraint per drawn dimension, in order: the labels come from them
        drawn = [ctx.taxonomy.dimension(d) for d in row["target_dimensions"]]
        schema = structure_schema(list(dict.fromkeys(d.id for d in drawn)), ctx.config.max_constraints)
        result = await self.ask(ctx, trace, row, "structure", schema,
                                instruction=row["instruction"], dimensions=ctx.taxonomy.dimensions, drawn=drawn)
        data = result.data
        if not data["extractable"]:
            raise Reject("structuring_refused", data["reason"][:500])
        constraints = []
        for item in data["constraints"]:
            text = strip_numbering(item["text"])
            if not text:
                continue
            dim = ctx.taxonomy.dimension(item["dimension"])
            constraints.append({"id": f"c{len(constraints) + 1}", "text": text, "dimension": dim.id,
                                "dimension_zh": dim.zh, "type": dim.type, "check": None})
        description = data["description"].strip()
        if not description or not constraints:
            raise Reject("structure_empty", "no task description or no constraint after cleaning")
        lost = material_lost(row["text"], description, data["input"], *(c["text"] for c in constraints))
        if lost:  # structuring must be faithful: the seed's material is somewhere in the three parts
            raise Reject("material_lost", lost)
        if ctx.config.rule_checks and needs_checks(constraints, ctx.taxonomy):
            constraints = await self.attach_checks(row, constraints, ctx, trace)
        return {"description": description, "constraints": constraints, "input": normalise_input(data["input"])}

    async def attach_checks(self, row: dict, constraints: list[dict], ctx: StageContext,
                            trace: RowTrace) -> list[dict]:
        """A rule check on each constraint a rule can decide, where the LLM gives a valid one. Checks
        are optional: when the extraction fails the row goes on without them (the client counts it)."""
        try:
            asked = checkable_constraints(constraints, ctx.taxonomy)
            result = await self.ask(ctx, trace, row, "extract_checks", checks_schema(len(asked)),
                                    constraints=asked, checkable=checkable_ids(ctx.taxonomy), kinds=DIMENSION_KINDS)
        except LLMFailure:
            return constraints
        checks = accept_checks(constraints, result.data["checks"], ctx.taxonomy)
        return [{**c, "check": spec} for c, spec in zip(constraints, checks)]
