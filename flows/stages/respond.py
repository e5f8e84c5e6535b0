"""Stage 5, response and grading: answer the serialised instruction, then have the judge score
every constraint 0-10 (explanation first) and give an overall score. Every graded row goes on;
the SFT split keeps those with 10 on every constraint."""
from __future__ import annotations

from flows.contracts import serialise_instruction
from flows.stages.base import RowTrace, Stage, StageContext


def grade_schema(n_constraints: int) -> dict:
    score = {"type": "integer", "minimum": 0, "maximum": 10}
    return {
        "type": "object",
        "properties": {
            "scores": {
                "type": "array", "minItems": n_constraints, "maxItems": n_constraints,
                "items": {"type": "object", "properties": {"explanation": {"type": "string"}, "score": score},
                          "required": ["explanation", "score"]},
            },
            "overall_explanation": {"type": "string"},
            "overall": score,
        },
        "required": ["scores", "overall_explanation", "overall"],
    }


def instruction_text(row: dict) -> str:
    lines = [f"{i}. {c['text']}" for i, c in enumerate(row["constraints"], start=1)]
    return serialise_instruction(row["description"], lines, row["input"])


class RespondStage(Stage):
    name = "respond"
    templates = ("respond", "grade")

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        prompt = instruction_text(row)
        answer = await self.ask(ctx, trace, row, "respond", "respond", None, instruction=prompt)
        response = answer.content.strip()
        grade = await self.ask(
            ctx, trace, row, "grade", "grade", grade_schema(len(row["constraints"])),
            description=row["description"], constraints=row["constraints"], input=row["input"],
            response=response,
        )
        scores = [{"constraint_id": c["id"], "score": int(s["score"]), "explanation": s["explanation"]}
                  for c, s in zip(row["constraints"], grade.data["scores"])]
        return {
            "prompt": prompt, "response": response, "scores": scores,
            "overall": int(grade.data["overall"]), "overall_explanation": grade.data["overall_explanation"],
            "full_score": all(s["score"] == 10 for s in scores),
        }
