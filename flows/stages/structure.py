"""Stage 3, structuring: split the flat instruction into description / constraints / input,
each constraint carrying its taxonomy dimension and the official Chinese label."""
from __future__ import annotations

import re

from flows.stages.base import Reject, RowTrace, Stage, StageContext

_NUMBERING = re.compile(r"^\s*(?:\d+[.)、．]|[-*•])\s*")
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
    templates = ("structure",)

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        schema = structure_schema(list(ctx.taxonomy.ids), ctx.config.max_constraints)
        result = await self.ask(ctx, trace, row, "structure", "structure", schema,
                                instruction=row["instruction"], dimensions=ctx.taxonomy.dimensions)
        data = result.data
        if not data["extractable"]:
            raise Reject("structuring_refused", data["reason"][:500])
        constraints = []
        for item in data["constraints"]:
            text = _NUMBERING.sub("", item["text"]).strip()
            if not text:
                continue
            dim = ctx.taxonomy.dimension(item["dimension"])
            constraints.append({"id": f"c{len(constraints) + 1}", "text": text, "dimension": dim.id,
                                "dimension_zh": dim.zh, "type": dim.type})
        description = data["description"].strip()
        if not description or not constraints:
            raise Reject("structure_empty", "no task description or no constraint after cleaning")
        return {"description": description, "constraints": constraints, "input": normalise_input(data["input"])}
