"""Stage 1, taxonomy synthesis: which dimensions fit a seed, and which constraint types the
taxonomy lacks. The aggregate over all seeds is the taxonomy report (flows/report.py)."""
from __future__ import annotations

from flows.stages.base import RowTrace, Stage, StageContext


def tag_schema(dimension_ids: list[str]) -> dict:
    return {
        "type": "object",
        "properties": {
            "fitting_dimensions": {
                "type": "array", "items": {"type": "string", "enum": dimension_ids},
                "minItems": 1,  # no uniqueItems: vLLM refuses it; process() dedupes
            },
            "new_constraint_types": {
                "type": "array", "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1}, "description": {"type": "string"}},
                    "required": ["name", "description"],
                },
            },
        },
        "required": ["fitting_dimensions", "new_constraint_types"],
    }


class TaxonomyStage(Stage):
    name = "taxonomy"
    calls = {"tag_taxonomy": "tag"}  # template -> its sampling (config.SamplingConfig: tag_temperature, ...)

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        result = await self.ask(
            ctx, trace, row, "tag_taxonomy", tag_schema(list(ctx.taxonomy.ids)),
            dimensions=ctx.taxonomy.dimensions, seed=row["text"],
        )
        fit = list(dict.fromkeys(result.data["fitting_dimensions"]))
        new_types = [{"name": t["name"].strip(), "description": t["description"].strip()}
                     for t in result.data["new_constraint_types"]]
        return {"fit_dimensions": fit, "new_constraint_types": new_types}
