"""Stage 2, constraint expansion: draw how many constraints and which dimensions, then have the
"instruction enhancer" rewrite the seed into one flat complex instruction."""
from __future__ import annotations

import random
from functools import lru_cache

import re

from flows.language import language_drift
from flows.material import material_lost
from flows.stages.base import Reject, RowTrace, Stage, StageContext
from flows.taxonomy import train_count_distribution

paper_count_distribution = lru_cache(maxsize=1)(train_count_distribution)
# The template's delimiters around the seed; a small model sometimes copies them into its answer.
_DELIMITERS = re.compile(r"^[ \t]*(?:<<<|>>>)[ \t]*\n?|<<<|>>>", re.M)


def strip_delimiters(text: str) -> str:
    """The instruction without the <<< >>> markers the expand template puts around the seed."""
    return _DELIMITERS.sub("", text).strip()

INSTRUCTION_SCHEMA = {
    "type": "object",
    "properties": {"instruction": {"type": "string", "minLength": 1}},
    "required": ["instruction"],
}


def draw_count(rng: random.Random, distribution: dict[int, float], maximum: int) -> int:
    counts = sorted(k for k in distribution if k <= maximum)
    return rng.choices(counts, weights=[distribution[k] for k in counts])[0]


def draw_dimensions(rng: random.Random, fit: list[str], weights: dict[str, float], n: int) -> list[str]:
    """n dimensions among those that fit: distinct ones first, then repeats by eval share
    (Inclusion and Numerical often appear twice in Trace)."""
    pool = list(fit)
    w = [max(weights.get(d, 0.0), 0.1) for d in pool]
    chosen: list[str] = []
    while pool and len(chosen) < n:
        pick = rng.choices(range(len(pool)), weights=w)[0]
        chosen.append(pool.pop(pick))
        w.pop(pick)
    while len(chosen) < n:
        chosen.append(rng.choices(fit, weights=[max(weights.get(d, 0.0), 0.1) for d in fit])[0])
    return chosen


class ExpandStage(Stage):
    name = "expand"
    calls = {"expand": "expand"}
    settings = ("constraint_counts", "max_constraints")

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        distribution = ctx.config.constraint_counts or paper_count_distribution()
        rng = ctx.rng("expand", row["seed_id"])
        n = draw_count(rng, distribution, ctx.config.max_constraints)
        shares = {d.id: d.eval_share for d in ctx.taxonomy.dimensions}
        targets = draw_dimensions(rng, row["fit_dimensions"], shares, n)
        result = await self.ask(
            ctx, trace, row, "expand", INSTRUCTION_SCHEMA,
            dimensions=ctx.taxonomy.dimensions,
            targets=[ctx.taxonomy.dimension(d) for d in targets], seed=row["text"],
        )
        instruction = strip_delimiters(result.data["instruction"])
        if not instruction:
            raise Reject("expansion_empty", "nothing left once the template's delimiters are removed")
        drift = language_drift(row["text"], instruction)
        if drift:  # the template asks for the seed's language; a seed's language is part of its data
            raise Reject("language_drift", drift)
        lost = material_lost(row["text"], instruction)
        if lost:  # the text the seed works on is part of its data, as its language is
            raise Reject("material_lost", lost)
        return {"target_dimensions": targets, "instruction": instruction}
