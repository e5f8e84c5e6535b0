"""Stage 4, quality control: the completeness and the redundancy discriminators, asked at once;
an instruction goes on only if it passes both."""
from __future__ import annotations

import asyncio

from flows.stages.base import Reject, RowTrace, Stage, StageContext


def verdict_schema(*keys: str) -> dict:
    return {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, **{key: {"type": "boolean"} for key in keys}},
        "required": ["reasoning", *keys],
    }


# The completeness check asks two narrow questions and the verdict is decided here, so that the
# rule its template states holds whatever the model makes of it: a NULL input alone never makes an
# instruction incomplete, only a task that works on material nobody gave it.
COMPLETENESS = ("defined", "answerable_as_given")


def completeness_verdict(answer: dict, input_text: str) -> str | None:
    """Why an instruction is incomplete, or None when it is complete."""
    if not answer["defined"]:
        return "something it refers to is not defined"
    if input_text == "NULL" and not answer["answerable_as_given"]:  # with material given, it is there
        return "the task works on material that is not given"
    return None


class QualityStage(Stage):
    name = "qc"
    calls = {"check_completeness": "qc", "check_redundancy": "qc"}

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        parts = {"description": row["description"], "constraints": row["constraints"], "input": row["input"]}
        complete, non_redundant = await asyncio.gather(
            self.ask(ctx, trace, row, "check_completeness", verdict_schema(*COMPLETENESS), **parts),
            self.ask(ctx, trace, row, "check_redundancy", verdict_schema("non_redundant"), **parts),
        )
        missing = completeness_verdict(complete.data, row["input"])
        if missing:
            raise Reject("qc_incomplete", f"{missing}: {complete.data['reasoning']}"[:500])
        if not non_redundant.data["non_redundant"]:
            raise Reject("qc_redundant", non_redundant.data["reasoning"][:500])
        return {
            "qc_complete": True, "qc_complete_reasoning": complete.data["reasoning"],
            "qc_non_redundant": True, "qc_non_redundant_reasoning": non_redundant.data["reasoning"],
        }
