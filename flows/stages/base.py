"""What every stage shares: the context it runs in, how it asks the LLM, how a row is rejected.

A stage is a small object with one `process(row, ctx, trace)` that returns the stage's new columns
or raises Reject; `run_row` wraps it so that every input row comes back either as an output row
(with its lineage renewed) or as a reject with a reason code (a bug in `process`: errors.py). Stages know nothing about shards, files or
Prefect.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field

from flows.config import PipelineConfig
from flows.contracts import content_id, lineage_of, request_seed
from flows.errors import INTERNAL_ERROR, BugBudget
from flows.llm.client import LLMCall, LLMClient, LLMFailure, LLMResult, ServerRefused
from flows.prompts import PromptError, PromptLibrary
from flows.taxonomy import Taxonomy

log = logging.getLogger("trace_build.stages")


class Reject(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


@dataclass
class StageContext:
    client: LLMClient
    prompts: PromptLibrary
    taxonomy: Taxonomy
    config: PipelineConfig
    bugs: BugBudget = field(default_factory=lambda: BugBudget(0))  # rows the stages' code may fail on (errors.py)

    def rng(self, *purpose) -> random.Random:
        """A random stream fixed by the run seed and the purpose: reruns draw the same."""
        return random.Random(int(content_id(self.config.seed, *purpose), 16))

    def request_seed(self, *purpose) -> int:
        return request_seed(self.config.seed, *purpose)

    def fingerprint(self, stage: "Stage") -> str:
        """Everything besides its input rows that a stage's output depends on: its templates,
        the sampling of its calls, the settings it reads, the run seed, the taxonomy and the
        model. A finished shard is reused only while this is unchanged, so a change reruns the
        stages it touches (and those its changed rows reach), no others."""
        templates = {name: self.prompts.version(name) for name in stage.templates}
        sampling = self.config.sampling
        calls = {kind: [getattr(sampling, f"{kind}_temperature"), getattr(sampling, f"{kind}_max_tokens")]
                 for kind in sorted(set(stage.calls.values()))}
        settings = {name: getattr(self.config, name) for name in ("seed", *stage.settings)}
        return content_id(stage.name, templates, calls, settings, self.taxonomy.content_hash, self.client.model)


@dataclass
class RowTrace:
    """The calls made for one row, for its lineage columns."""

    templates: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    model: str | None = None


class Stage:
    """What a stage is: its name (its parent and output columns are contracts.PARENT and
    contracts.STAGE_COLUMNS, with every table schema), the LLM calls it makes, and the settings
    it reads; all of them, and nothing else of the config, enter its fingerprint."""

    name: str = ""
    calls: dict[str, str] = {}  # prompt template -> the sampling it asks with (SamplingConfig: <kind>_temperature),
    #                             in the order a row makes them
    settings: tuple[str, ...] = ()  # the PipelineConfig fields its process() reads (the seed: every stage)

    @property
    def templates(self) -> tuple[str, ...]:
        return tuple(self.calls)

    def call_order(self, template: str) -> int:
        """Where the call sits in a row's chain (its stage's depth, then its place in `calls`):
        the client serves waiting requests lowest first, so a row that fell behind, with the
        most work left, goes first."""
        return 100 * (len(lineage_of(self.name)) - 1) + self.templates.index(template)

    async def process(self, row: dict, ctx: StageContext, trace: RowTrace) -> dict:
        raise NotImplementedError

    async def ask(self, ctx: StageContext, trace: RowTrace, row: dict, template: str,
                  schema: dict | None = None, **values) -> LLMResult:
        prompt = ctx.prompts.render(template, **values)
        sampling, kind = ctx.config.sampling, self.calls[template]
        call = LLMCall(
            stage=self.name, prompt=prompt, schema=schema,
            temperature=getattr(sampling, f"{kind}_temperature"),
            max_tokens=getattr(sampling, f"{kind}_max_tokens"),
            seed=ctx.request_seed(row["seed_id"], template),
            priority=self.call_order(template),
        )
        result = await ctx.client.chat(call)
        trace.templates[template] = prompt.version
        trace.sampling[template] = {"temperature": call.temperature, "max_tokens": call.max_tokens, "seed": call.seed,
                                    **ctx.client.sampling}
        trace.model = result.model
        return result

    async def run_row(self, row: dict, ctx: StageContext) -> tuple[dict | None, dict | None]:
        """(output row, None) or (None, reject row): never both, never neither."""
        trace = RowTrace()
        try:
            columns = await self.process(row, ctx, trace)
        except (Reject, LLMFailure) as exc:
            return None, self.reject(row, exc.reason, exc.detail)
        except (PromptError, ServerRefused):
            raise  # a broken template or a refusing server fails every row: stop the run, do not reject them all
        except Exception as exc:  # a bug: the row is kept as a reject, the run counts it (flows/errors.py)
            log.exception("stage %s: unexpected error on row %s", self.name, row["row_id"])
            ctx.bugs.record(self.name, exc)
            return None, self.reject(row, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        templates = {**json.loads(row.get("templates") or "{}"), **trace.templates}
        sampling = {**json.loads(row.get("sampling") or "{}"), **trace.sampling}
        out = {**row, **columns}
        out.update(
            row_id=content_id(self.name, row["row_id"], columns),
            parent_id=row["row_id"],
            stage=self.name,
            model=trace.model or row.get("model"),
            templates=json.dumps(templates, sort_keys=True),
            sampling=json.dumps(sampling, sort_keys=True),
            taxonomy_version=ctx.taxonomy.version_id,
        )
        return out, None

    def reject(self, row: dict, reason: str, detail: str = "") -> dict:
        return {
            "row_id": row["row_id"], "seed_id": row["seed_id"], "stage": self.name,
            "reason": reason, "detail": detail[:1000],
            "row": json.dumps(row, ensure_ascii=False, default=str),
        }
