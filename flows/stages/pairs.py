"""Preference data built on the graded rows whose answer scored 10 on every constraint.

DPO (paper-notes.md section 4): ask for an answer that complies worse, grade it, and keep the
pair only if it really scores lower on at least one constraint.

IOPO: draw an edit (add / delete / revise constraints) uniformly, have the LLM edit x1's
constraints so that y1 no longer complies (x2 keeps description and input), answer x2 (y2), and
grade all four pairings. The quadruple is kept only when y1|x1 and y2|x2 are perfect and y1|x2
and y2|x1 each fail at least one constraint (`four_pairing_verdict`).
"""
from __future__ import annotations

import asyncio

from flows.stages.base import Reject, RowTrace, Stage, StageContext
from flows.stages.respond import full_score, grade, instruction_text
from flows.stages.structure import strip_numbering

EDIT_OPS = ("add", "delete", "revise")


def four_pairing_verdict(s11: list[dict], s22: list[dict], s12: list[dict], s21: list[dict],
                         policy: str = "both") -> str | None:
    """None when (x1, y1, x2, y2) is a valid quadruple, else the reject reason.
    sAB = scores of answer yA against instruction xB (passing per the rule policy)."""
    if not full_score(s11, policy):
        return "y1_not_full_score_on_x1"
    if not full_score(s22, policy):
        return "y2_not_full_score_on_x2"
    if full_score(s12, policy):
        return "y1_still_complies_with_x2"
    if full_score(s21, policy):
        return "y2_still_complies_with_x1"
    return None


def edit_schema(op: str, dimension_ids: list[str], n_constraints: int) -> dict:
    if op == "add":
        item = {"type": "object", "required": ["text", "dimension"],
                "properties": {"text": {"type": "string", "minLength": 1},
                               "dimension": {"type": "string", "enum": dimension_ids}}}
        body = {"new_constraints": {"type": "array", "minItems": 1, "maxItems": 2, "items": item}}
    elif op == "delete":
        number = {"type": "integer", "minimum": 1, "maximum": n_constraints}
        # no uniqueItems (vLLM refuses it): apply_edit reads the numbers as a set
        body = {"delete": {"type": "array", "minItems": 1, "maxItems": n_constraints - 1, "items": number}}
    else:
        item = {"type": "object", "required": ["number", "text"],
                "properties": {"number": {"type": "integer", "minimum": 1, "maximum": n_constraints},
                               "text": {"type": "string", "minLength": 1}}}
        body = {"revisions": {"type": "array", "minItems": 1, "maxItems": min(2, n_constraints), "items": item}}
    return {"type": "object", "properties": body, "required": list(body)}


def apply_edit(op: str, data: dict, constraints: list[dict], taxonomy) -> tuple[list[dict], list[str]]:
    """(x2's constraints renumbered c1..cm, ids of what changed: x1 ids for delete and revise,
    x2 ids for add)."""
    def renumber(items):
        return [{**c, "id": f"c{i}"} for i, c in enumerate(items, start=1)]

    if op == "add":
        added = []
        for item in data["new_constraints"]:
            dim = taxonomy.dimension(item["dimension"])
            added.append({"id": "", "text": strip_numbering(item["text"]), "dimension": dim.id,
                          "dimension_zh": dim.zh, "type": dim.type, "check": None})
        new = renumber(constraints + added)
        return new, [c["id"] for c in new[len(constraints):]]
    if op == "delete":
        gone = {n - 1 for n in data["delete"]}
        if len(gone) >= len(constraints):
            raise Reject("edit_invalid", "delete would remove every constraint")
        return renumber([c for i, c in enumerate(constraints) if i not in gone]), \
            [constraints[i]["id"] for i in sorted(gone)]
    revised = {r["number"] - 1: strip_numbering(r["text"]) for r in data["revisions"]}
    if any(constraints[i]["text"] == text or not text for i, text in revised.items()):
        raise Reject("edit_invalid", "a revision left the constraint unchanged or empty")
    # A revised constraint loses its rule check: the check was made for the old text.
    return [{**c, "text": revised[i], "check": None} if i in revised else c for i, c in enumerate(constraints)], \
        [constraints[i]["id"] for i in sorted(revised)]


class DPOStage(Stage):
    name = "dpo"
    calls = {"worsen": "worsen", "grade": "grade"}
    settings = ("rule_policy",)

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        if not row["full_score"]:
            raise Reject("score_below_10", "only answers with 10 on every constraint get preference data")
        worse = await self.ask(ctx, trace, row, "worsen", None,
                               instruction=row["prompt"], response=row["response"])
        rejected = worse.content.strip()
        scores, overall, _ = await grade(self, ctx, trace, row, row["constraints"], rejected)
        if full_score(scores, ctx.config.rule_policy):
            raise Reject("rejected_not_worse", "the worsened answer still scored 10 on every constraint")
        return {"rejected_response": rejected, "rejected_scores": scores, "rejected_overall": overall}


class IOPOStage(Stage):
    name = "iopo"
    calls = {"iopo_edit": "edit", "respond": "respond", "grade": "grade"}
    settings = ("rule_policy",)

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        if not row["full_score"]:
            raise Reject("score_below_10", "only answers with 10 on every constraint get preference data")
        constraints = row["constraints"]
        # Uniform over the edits this instruction allows (delete needs two constraints).
        ops = EDIT_OPS if len(constraints) > 1 else ("add", "revise")
        op = ctx.rng("iopo-edit", row["seed_id"]).choice(ops)
        edit = await self.ask(
            ctx, trace, row, "iopo_edit", edit_schema(op, list(ctx.taxonomy.ids), len(constraints)),
            dimensions=ctx.taxonomy.dimensions, op=op, description=row["description"],
            constraints=constraints, input=row["input"], response=row["response"],
        )
        try:
            constraints2, changed = apply_edit(op, edit.data, constraints, ctx.taxonomy)
        except Reject as exc:
            raise Reject(exc.reason, f"op={op}; {exc.detail}") from None
        prompt2 = instruction_text(row["description"], constraints2, row["input"])
        answer = await self.ask(ctx, trace, row, "respond", None, instruction=prompt2)
        response2 = answer.content.strip()
        (s22, _, _), (s12, _, _), (s21, _, _) = await asyncio.gather(
            grade(self, ctx, trace, row, constraints2, response2),
            grade(self, ctx, trace, row, constraints2, row["response"]),
            grade(self, ctx, trace, row, constraints, response2),
        )
        verdict = four_pairing_verdict(row["scores"], s22, s12, s21, ctx.config.rule_policy)
        if verdict:
            raise Reject(verdict, f"op={op}; changed {', '.join(changed)}")
        return {"edit_op": op, "edited_constraint_ids": changed, "constraints2": constraints2,
                "prompt2": prompt2, "response2": response2, "scores_y2_x2": s22,
                "scores_y1_x2": s12, "scores_y2_x1": s21}
