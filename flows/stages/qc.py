"""Stage 4, quality control: the completeness and the redundancy discriminators, asked at once;
an instruction goes on only if it passes both."""
from __future__ import annotations

import asyncio

from flows.stages.base import Reject, RowTrace, Stage, StageContext


def verdict_schema(key: str) -> dict:
    return {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, key: {"type": "boolean"}},
        "required": ["reasoning", key],
    }


class QualityStage(Stage):
    name = "qc"
    templates = ("check_completeness", "check_redundancy")

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        parts = {"description": row["description"], "constraints": row["constraints"], "input": row["input"]}
        complete, non_redundant = await asyncio.gather(
            self.ask(ctx, trace, row, "check_completeness", "qc", verdict_schema("complete"), **parts),
            self.ask(ctx, trace, row, "check_redundancy", "qc", verdict_schema("non_redundant"), **parts),
        )
        if not complete.data["complete"]:
            raise Reject("qc_incomplete", complete.data["reasoning"][:500])
        if not non_redundant.data["non_redundant"]:
            raise Reject("qc_redundant", non_redundant.data["reasoning"][:500])
        return {
            "qc_complete": True, "qc_complete_reasoning": complete.data["reasoning"],
            "qc_non_redundant": True, "qc_non_redundant_reasoning": non_redundant.data["reasoning"],
        }
