"""Stage 5, response and grading: answer the serialised instruction, then have the judge score
every constraint 0-10 (explanation first) and give an overall score. Every graded row goes on;
the SFT split keeps those with 10 on every constraint. `grade` is shared with the DPO and IOPO
stages, which grade other answers against other constraint lists the same way."""
from __future__ import annotations

from flows.contracts import serialise_instruction
from flows.rules import passes, with_rule_verdicts
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


def instruction_text(description: str, constraints: list[dict], input_text: str) -> str:
    lines = [f"{i}. {c['text']}" for i, c in enumerate(constraints, start=1)]
    return serialise_instruction(description, lines, input_text)


def full_score(scores: list[dict], policy: str = "both") -> bool:
    """Every constraint passed: scored 10, and passed its rule check where the policy asks."""
    return all(passes(s, policy) for s in scores)


def scores_from(data: dict, constraints: list[dict], response: str) -> list[dict]:
    """The judge's per-constraint scores (grade_schema output), with the rule verdicts beside them."""
    scores = [{"constraint_id": c["id"], "score": int(s["score"]), "explanation": s["explanation"]}
              for c, s in zip(constraints, data["scores"])]
    return with_rule_verdicts(scores, constraints, response)


async def grade(stage: Stage, ctx: StageContext, trace: RowTrace, row: dict, constraints: list[dict],
                response: str) -> tuple[list[dict], int, str]:
    """(per-constraint scores with rule verdicts, overall, overall explanation) of `response`
    against the row's description and input with `constraints`."""
    result = await stage.ask(
        ctx, trace, row, "grade", grade_schema(len(constraints)),
        description=row["description"], constraints=constraints, input=row["input"], response=response,
    )
    scores = scores_from(result.data, constraints, response)
    return scores, int(result.data["overall"]), result.data["overall_explanation"]


class RespondStage(Stage):
    name = "respond"
    calls = {"respond": "respond", "grade": "grade"}
    settings = ("rule_policy",)

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        prompt = instruction_text(row["description"], row["constraints"], row["input"])
        answer = await self.ask(ctx, trace, row, "respond", None, instruction=prompt)
        response = answer.content.strip()
        scores, overall, explanation = await grade(self, ctx, trace, row, row["constraints"], response)
        return {"prompt": prompt, "response": response, "scores": scores, "overall": overall,
                "overall_explanation": explanation, "full_score": full_score(scores, ctx.config.rule_policy)}
