"""Rules the templates state, enforced in code where code can decide: an expansion keeps its
seed's language (else `language_drift`), the template's <<< >>> never reach an instruction,
structuring labels constraints with the dimensions that were drawn, QC decides completeness
from two narrow answers so that a NULL input alone is never a gap; and the small-model prompt set
(prompts/small/) replaces only its templates."""
import asyncio
import json

import pytest

from flows.config import PipelineConfig
from flows.language import language_drift, scripts
from flows.llm.client import LLMResult
from flows.prompts import PROMPTS_DIR, PromptError, default_library, library_for
from flows.stages.base import StageContext
from flows.stages.expand import ExpandStage, strip_delimiters
from flows.stages.qc import QualityStage
from flows.stages.structure import StructureStage
from flows.taxonomy import load_taxonomy


class ScriptedClient:
    """An LLM client that answers every call with the next scripted JSON and keeps the calls."""

    model = "scripted"
    sampling = {"top_p": 1.0}  # what the real client adds to every request

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


EXTRACT_SEED = "请提取下面这段文字中的人名、地点和时间：2023年5月，李明和同事赵敏在杭州参加了一场关于人工智能的行业会议。"


def test_an_expansion_that_replaces_the_seeds_material_is_rejected_with_its_reason():
    # the 1.5B model's expansion of this seed on the demo run: an example instead of the text
    client = ScriptedClient({"instruction": "请从给定的文本中提取出人名、地点和时间，然后以JSON格式列出。例如，"
                                            '{"names": ["李明", "赵敏"], "locations": ["杭州"]}。'})
    out, reject = asyncio.run(ExpandStage().run_row(seed_row(EXTRACT_SEED), context(client)))
    assert out is None and reject["reason"] == "material_lost" and "2023年5月，李明" in reject["detail"]
    kept = ScriptedClient({"instruction": "以JSON格式提取下面文字中的人名、地点和时间：2023年5月，李明和同事赵敏"
                                          "在杭州参加了一场关于人工智能的行业会议。"})
    out, reject = asyncio.run(ExpandStage().run_row(seed_row(EXTRACT_SEED), context(kept)))
    assert reject is None and out["instruction"].endswith("行业会议。")


@pytest.mark.parametrize("input_text, reason", [
    ("2023年5月，李明和同事赵敏在杭州参加了一场关于人工智能的行业会议。", None),
    ("李明在杭州工作，赵敏在纽约生活。今年5月，公司销售额增长了20%。", "material_lost"),  # invented by the 1.5B model
])
def test_structuring_must_keep_the_seeds_material_in_one_of_its_parts(input_text, reason):
    row = {**seed_row(EXTRACT_SEED), "target_dimensions": ["output_format"],
           "instruction": "以JSON格式提取下面文字中的人名、地点和时间：2023年5月，李明和同事赵敏在杭州参加了一场关于人工智能的行业会议。"}
    client = ScriptedClient({"extractable": True, "reason": "", "description": "提取文字中的人名、地点和时间。",
                             "constraints": [{"text": "以JSON格式列出。", "dimension": "output_format"}],
                             "input": input_text})
    ctx = context(client)
    ctx.config.rule_checks = False
    out, reject = asyncio.run(StructureStage().run_row(row, ctx))
    assert (reject or {}).get("reason") == reason


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


class AnswerByTemplate(ScriptedClient):
    """Answers each call with the JSON given for its template (QC asks its two checks at once)."""

    def __init__(self, **answers: dict):
        super().__init__()
        self.by_template = answers

    async def chat(self, call, cache=None):
        self.answers = [self.by_template[call.prompt.name]]
        return await super().chat(call, cache)


def qc_row(input_text: str) -> dict:
    return {**seed_row("写诗"), "description": "写一首关于春天的诗", "input": input_text,
            "constraints": [{"id": "c1", "text": "共四行", "dimension": "numerical"}]}


@pytest.mark.parametrize("input_text, defined, needs_none, reason", [
    ("NULL", True, True, None),  # a task that needs no material: NULL is no gap
    ("NULL", True, False, "qc_incomplete"),  # a task on material nobody gave
    ("春天来了。", True, False, None),  # the material is there
    ("NULL", False, True, "qc_incomplete"),  # something it refers to is undefined
    ("春天来了。", False, True, "qc_incomplete"),
])
def test_qc_decides_completeness_in_code_and_a_null_input_alone_is_no_gap(input_text, defined, needs_none, reason):
    client = AnswerByTemplate(
        check_completeness={"reasoning": "r", "defined": defined, "answerable_as_given": needs_none},
        check_redundancy={"reasoning": "r", "non_redundant": True})
    out, reject = asyncio.run(QualityStage().run_row(qc_row(input_text), context(client)))
    assert (reject or {}).get("reason") == reason
    assert (out is None) == (reason is not None)
    if reason:
        assert reject["detail"].startswith(("something it refers to", "the task works on material")), reject


def test_qc_shows_a_null_input_as_no_material():
    prompts = default_library()
    constraints = [{"text": "共四行"}]
    none = prompts.render("check_completeness", description="写诗", constraints=constraints, input="NULL")
    given = prompts.render("check_completeness", description="总结下文", constraints=constraints, input="春天来了。")
    assert none.messages[-1]["content"].endswith("NULL (no material is given)")
    assert given.messages[-1]["content"].endswith("春天来了。")


def test_a_prompt_set_replaces_only_its_templates(tmp_path):
    small = library_for(None, "small")
    own = {p.stem for p in (PROMPTS_DIR / "small").glob("*.j2")}
    assert {"expand", "structure", "check_completeness", "check_redundancy", "grade"} <= own
    assert small.names() == default_library().names()  # every call kind still has a template
    for name in small.names():
        expected = PROMPTS_DIR / ("small" if name in own else "") / f"{name}.j2"
        assert small.path(name) == expected
        assert (small.version(name) == default_library().version(name)) == (name not in own)
    with pytest.raises(PromptError, match="prompt set 'tiny' not found.*known: small"):
        library_for(None, "tiny")
    (tmp_path / "respond.j2").write_text("{% block system %}s{% endblock %}{% block user %}{{ instruction }}{% endblock %}")
    assert library_for(str(tmp_path), "small").names() == ["respond"]  # a directory of one's own is the whole set


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_small_prompt_set_drives_every_stage(language):
    """Each stage renders the small set's templates with what it passes and keeps their versions;
    the worked examples show the answer shape the schema asks for."""
    seed = "Write a short story about a lighthouse keeper." if language == "en" else "写一个关于灯塔看守人的短故事。"
    instruction = (seed[:-1] + ", in exactly three paragraphs." if language == "en"
                   else seed[:-1] + "，共三段。")
    client = AnswerByTemplate(
        expand={"instruction": instruction},
        structure={"extractable": True, "reason": "", "description": seed, "input": "NULL",
                   "constraints": [{"text": instruction[len(seed) - 1:].strip(" ,，。."), "dimension": "numerical"}]},
        check_completeness={"reasoning": "r", "defined": True, "answerable_as_given": True},
        check_redundancy={"reasoning": "r", "non_redundant": True})
    ctx = context(client)
    ctx.prompts = library_for(None, "small")
    ctx.config.rule_checks = False
    ctx.config.constraint_counts = {1: 1.0}
    row = {**seed_row(seed), "fit_dimensions": ["numerical"], "lang": language}
    for stage in (ExpandStage(), StructureStage(), QualityStage()):
        out, reject = asyncio.run(stage.run_row(row, ctx))
        assert reject is None, reject
        row = {**row, **out}
        call = client.calls[-1]
        assert call.prompt.version == ctx.prompts.version(call.prompt.name)
        assert "Example" in call.prompt.messages[0]["content"]
    assert row["constraints"][0]["dimension"] == "numerical"
    assert "1. numerical" in client.calls[1].prompt.messages[-1]["content"]
