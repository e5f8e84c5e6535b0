"""Rules the templates state, enforced in code where code can decide: an expansion keeps its
seed's language (else `language_drift`), the template's <<< >>> never reach an instruction,
structuring labels constraints with the dimensions that were drawn, and QC does not see a
NULL input as missing material."""
import asyncio
import json

import pytest

from flows.config import PipelineConfig
from flows.language import language_drift, scripts
from flows.llm.client import LLMResult
from flows.prompts import default_library
from flows.stages.base import StageContext
from flows.stages.expand import ExpandStage, strip_delimiters
from flows.stages.structure import StructureStage
from flows.taxonomy import load_taxonomy


class ScriptedClient:
    """An LLM client that answers every call with the next scripted JSON and keeps the calls."""

    model = "scripted"

    def __init__(self, *answers: dict):
        self.answers, self.calls = list(answers), []

    async def chat(self, call, cache=None):
        self.calls.append(call)
        data = self.answers.pop(0)
        return LLMResult(content=json.dumps(data, ensure_ascii=False), data=data, model=self.model, usage={},
                         cached=False)


def context(client) -> StageContext:
    return StageContext(client=client, prompts=default_library(), taxonomy=load_taxonomy(),
                        config=PipelineConfig(constraint_counts={2: 1.0}))


def seed_row(text: str) -> dict:
    return {"row_id": "r1", "seed_id": "s1", "text": text, "lang": "zh", "fit_dimensions": ["inclusion", "numerical"]}


@pytest.mark.parametrize("original, rewritten, drift", [
    ("写一首关于春天的诗", "Write a poem about spring in exactly four lines.", "original in CJK script, rewritten in LATIN"),
    ("写一首关于春天的诗", "写一首关于春天的诗，必须包含“花”字，共四行。", None),
    ("请用 JSON 格式列出三种水果", "请用 JSON 格式列出三种水果，每种水果附上 color 字段。", None),  # English terms in Chinese
    ("Write a poem", "Write a poem about spring in four lines.", None),  # too short to tell languages apart
    ("Écris un poème sur le printemps, avec des rimes et quatre strophes pour les enfants de l'école.",
     "Write a poem about spring with rhymes and four stanzas for the children of the school, please.",
     "original in fr, rewritten in en"),
])
def test_language_drift(original, rewritten, drift):
    assert language_drift(original, rewritten) == drift


def test_scripts_count_cjk_by_character_and_others_by_word():
    assert scripts("请写一首诗 in JSON") == {"CJK": 5, "LATIN": 2}
    assert scripts("Привет, мир! `code here` https://x.org") == {"CYRILLIC": 2}


def test_strip_delimiters():
    assert strip_delimiters("<<<\nWrite a poem in 4 lines.\n>>>") == "Write a poem in 4 lines."
    assert strip_delimiters("Write <<<a poem>>> now.") == "Write a poem now."


def test_an_expansion_in_another_language_is_rejected_with_its_reason():
    client = ScriptedClient({"instruction": "<<<\nWrite a poem about spring in exactly four lines, using rhymes.\n>>>"})
    out, reject = asyncio.run(ExpandStage().run_row(seed_row("写一首关于春天的诗"), context(client)))
    assert out is None and reject["reason"] == "language_drift"
    assert reject["detail"] == "original in CJK script, rewritten in LATIN"


def test_an_expansion_loses_the_delimiters_and_keeps_its_language():
    client = ScriptedClient({"instruction": "<<<\n写一首关于春天的诗，必须包含“花”字，共四行。\n>>>"})
    out, reject = asyncio.run(ExpandStage().run_row(seed_row("写一首关于春天的诗"), context(client)))
    assert reject is None and out["instruction"] == "写一首关于春天的诗，必须包含“花”字，共四行。"


def test_structuring_is_told_the_drawn_dimensions_and_may_only_use_them():
    row = {**seed_row("写诗"), "target_dimensions": ["numerical", "inclusion"],
           "instruction": "写一首关于春天的诗，共四行，必须包含“花”字。"}
    client = ScriptedClient({"extractable": True, "reason": "", "description": "写一首关于春天的诗",
                             "constraints": [{"text": "共四行", "dimension": "numerical"},
                                             {"text": "必须包含“花”字", "dimension": "inclusion"}],
                             "input": "NULL"},
                            {"checks": [None, None]})
    ctx = context(client)
    ctx.config.rule_checks = False
    out, reject = asyncio.run(StructureStage().run_row(row, ctx))
    assert reject is None and [c["dimension"] for c in out["constraints"]] == ["numerical", "inclusion"]
    call = client.calls[0]
    enum = call.schema["properties"]["constraints"]["items"]["properties"]["dimension"]["enum"]
    assert enum == ["numerical", "inclusion"]  # a label outside the drawn ones cannot come back
    user = call.prompt.messages[-1]["content"]
    assert "1. numerical" in user and "2. inclusion" in user


def test_qc_does_not_show_a_null_input_as_material():
    prompts = default_library()
    constraints = [{"text": "共四行"}]
    none = prompts.render("check_completeness", description="写诗", constraints=constraints, input="NULL")
    given = prompts.render("check_completeness", description="总结下文", constraints=constraints, input="春天来了。")
    assert "NULL" not in none.messages[-1]["content"] and "no given material" in none.messages[-1]["content"]
    assert given.messages[-1]["content"].endswith("春天来了。")
