"""The ComplexBench suite: the model under test answers each `instruction` (or `instruction_en`),
every scoring question is decided by its rule or by the judge, and DRFR, its breakdowns and the
coherent test are computed as the official aggregation does (flows.complexbench.metrics).

    result = await evaluate_complexbench(cfg, progress)   # cfg: EvalConfig with suite="complexbench"

The official protocol (thu-coai/ComplexBench, evaluation/), followed here:
- A question with a `rule` is decided in two steps: the LLM extractor copies out of the response
  the part(s) the question is about ("all" for the whole response, "None" for nothing; several
  parts joined by "||" when the rule checks each of them: its prompt differs for rules whose
  form ends in "each"), then the rule is checked on those parts (flows.complexbench.rules).
- A question without a rule goes to the judge, which answers 是 (met) or 否.
- Both see the instruction cut to 6,000 characters and the response cut to 4,000, and, with
  --lang en, the English instruction and question (the prompts themselves stay Chinese, as
  officially).
- A question counts as met only if every question in its `dep` is met (one level).
Where the official extractor and judge write free text ("评分对象：..." / "答案：是"), ours answer
JSON ({"explanation", "target"} / {"analysis", "answer": "是" | "否"}) checked against a schema;
the extractor's target is then read with the official conventions (extracted_segments). The
templates (prompts/complexbench_extract.j2, complexbench_judge.j2) are written for this project
after the official ones, not copied (the official repository carries no licence). The paper's
judge is GPT-4 (gpt-4-1106-preview): numbers are comparable with published ones only under it.

The out folder gets:
    responses.jsonl      one line per answered instruction: main_id, instruction, response
    judgments.jsonl      one line per instruction: each question's rule, extracted parts or the
                         judge's analysis, its verdict and its verdict with dependencies
    results.json         DRFR; by constraint dimension, type, composition type, category, task
                         type and composition set; the coherent test; model, judge, failures
    results.md           the same as tables
    llm-cache.sqlite     every answer, extraction and verdict paid for: a rerun pays nothing
An instruction the model failed itself (answer too long, empty) has every question unmet; one
the server left without an answer, or with a question undecided (extractor or judge failed), is
not scored (any unscored instruction makes the command exit 1, flows/suites.py).
"""
from __future__ import annotations

from pathlib import Path

from flows.aio import gather_or_cancel
from flows.complexbench.data import Row
from flows.complexbench.metrics import aggregate
from flows.config import EvalConfig
from flows.contracts import request_seed
from flows.errors import InputError
from flows.judged_suite import Benchmark, SuiteResult, answer, data_file, pct, run_benchmark, share_rows
from flows.llm.client import LLMCall, LLMClient, LLMFailure
from flows.progress import NoProgress, Progress
from flows.prompts import PromptLibrary
from flows.suites import SUITES, summary_lines

PHASES = ["answer", "judge"]  # judge: one per scoring question (extraction + rule, or the judge)
INSTRUCTION_CHARS, RESPONSE_CHARS = 6000, 4000  # what the official extractor and judge see
EXTRACT_SCHEMA = {"type": "object", "required": ["explanation", "target"],
                  "properties": {"explanation": {"type": "string"}, "target": {"type": "string"}}}
JUDGE_SCHEMA = {"type": "object", "required": ["analysis", "answer"],
                "properties": {"analysis": {"type": "string"}, "answer": {"enum": ["是", "否"]}}}


def check_language(path: Path, rows: list[Row], lang: str) -> None:
    """--lang en needs the English release: every instruction and question translated."""
    if lang != "en":
        return
    for number, row in enumerate(rows, start=1):
        if row.instruction_en is None:
            raise InputError(f"{path}: row {number}: field 'instruction_en' is missing (--lang en needs the "
                             "English release of ComplexBench)")
        for q in row.questions:
            if q.question_en is None:
                raise InputError(f"{path}: row {number}: field 'scoring_questions[{q.point_id}].question_en' "
                                 "is missing (--lang en needs the English release of ComplexBench)")


async def decide(row: Row, question, instruction: str, response: str, cfg: EvalConfig, judge: LLMClient,
                 prompts: PromptLibrary, progress: Progress) -> dict:
    """One scoring question decided: {"met": bool or None, ...what decided it, "failure"}."""
    from flows.complexbench.rules import check, extracted_segments

    text = question.question_en if cfg.lang == "en" else question.question
    values = {"instruction": instruction[:INSTRUCTION_CHARS], "response": response[:RESPONSE_CHARS], "question": text}
    out = {"point_id": question.point_id, "question": text, "rule": question.rule.text if question.rule else None,
           "dep": list(question.dep), "met": None, "failure": None}
    try:
        if question.rule is not None:
            each = "each" in question.rule.text  # the official test for the extractor's "each" prompt
            got = await judge.chat(LLMCall(
                stage="extract", prompt=prompts.render("complexbench_extract", each=each, **values),
                schema=EXTRACT_SCHEMA, temperature=cfg.judge_temperature, max_tokens=cfg.judge_max_tokens,
                seed=request_seed(cfg.seed, "complexbench", row.id, question.point_id, "extract")))
            target = got.data["target"]
            segments = extracted_segments(f"【模型回复中评分问题的评测对象】\n评分对象：{target}", response)
            return out | {"target": target, "segments": segments, "explanation": got.data["explanation"],
                          "met": check(question.rule, segments)}
        got = await judge.chat(LLMCall(
            stage="judge", prompt=prompts.render("complexbench_judge", **values), schema=JUDGE_SCHEMA,
            temperature=cfg.judge_temperature, max_tokens=cfg.judge_max_tokens,
            seed=request_seed(cfg.seed, "complexbench", row.id, question.point_id, "judge")))
        return out | {"analysis": got.data["analysis"], "met": got.data["answer"] == "是"}
    except LLMFailure as exc:
        step = "extract" if question.rule is not None else "judge"
        return out | {"failure": f"{step}_failed:{exc.reason}"}
    finally:
        progress.advance("judge")


async def evaluate_row(row: Row, cfg: EvalConfig, model: LLMClient, judge: LLMClient, prompts: PromptLibrary,
                       progress: Progress) -> dict:
    """One instruction answered and its questions decided: its judgments.jsonl line."""
    from flows.complexbench.metrics import with_dependencies

    instruction = row.instruction_en if cfg.lang == "en" else row.instruction
    line = {"main_id": row.id, "category": row.category, "group": row.group, "instruction": instruction,
            "response": None, "questions": [], "verdicts": None, "met_with_dependencies": None, "failure": None,
            "answer_cached": False, "model": model.model, "judge_model": judge.model}
    got = await answer(model, cfg, "complexbench_answer", instruction, "complexbench", cfg.lang, row.id, "answer")
    progress.advance("answer")
    line |= {"response": got["response"], "failure": got["failure"], "answer_cached": got["cached"],
             "model": got["model"]}
    if got["failure"]:
        progress.advance("judge", len(row.questions))
        if got["response"] is None:
            return line
        verdicts = [False] * len(row.questions)  # the model failed itself: nothing is followed
        return line | {"verdicts": verdicts, "met_with_dependencies": verdicts}
    decided = await gather_or_cancel(*(decide(row, q, instruction, got["response"], cfg, judge, prompts, progress)
                                         for q in row.questions))
    line["questions"] = decided
    failed = next((d["failure"] for d in decided if d["failure"]), None)
    if failed:
        return line | {"failure": failed}
    verdicts = [d["met"] for d in decided]
    return line | {"verdicts": verdicts, "met_with_dependencies": with_dependencies(row, verdicts),
                   "judge_model": judge.model}


def metrics_markdown(metrics: dict) -> str:
    """The result tables, for the Prefect artifact, results.md and the terminal."""
    drfr = metrics["drfr"]
    lines = [f"# ComplexBench ({metrics['lang']}): `{metrics['model']}` judged by `{metrics['judge']}`", "",
             *summary_lines(SUITES["complexbench"], metrics), "",
             f"**DRFR: {pct(drfr['rate'])}** ({drfr['met']} of {drfr['n']} scoring questions met, dependencies applied)",
             "", ("The IOPO paper's ComplexBench (Table 3, Qwen2-7B IOPO): 72.6, judged by GPT-4 as ComplexBench's "
                  "authors judge; other judges give numbers that are not comparable."), ""]
    for title, key, column in (("By constraint type", "by_type", "type"),
                               ("By constraint dimension", "by_dimension", "dimension"),
                               ("By composition type", "by_composition", "composition"),
                               ("By category", "by_category", "category"),
                               ("By task type", "by_task_type", "task type"),
                               ("By composition set", "by_composition_set", "compositions")):
        lines += [f"## {title}", ""] + share_rows(column, metrics[key]) + [""]
    lines += ["## Coherent test (Selection groups: a group passes only if all its instructions do)", "",
              "| test | groups | instructions | origin | coherent | relative drop | left out (unscored) |",
              "|---|---|---|---|---|---|---|"]
    for name, m in metrics["coherent_test"].items():
        lines.append(f"| {name} | {m['groups']} | {m['instructions']} | {pct(m['origin'])} | {pct(m['coherent'])} "
                     f"| {pct(m['relative_drop'])} | {m['unscored_groups']} |")
    return "\n".join(lines) + "\n"


COMPLEXBENCH = Benchmark(
    name="complexbench", templates=("complexbench_extract", "complexbench_judge"), row_id="main_id",
    evaluate_row=evaluate_row, aggregate=aggregate, markdown=metrics_markdown,
    totals=lambda rows: {"answer": len(rows), "judge": sum(len(r.questions) for r in rows)},
    response=lambda row, line: {"main_id": line["main_id"], "instruction": line["instruction"],
                                "response": line["response"]},
    private=("instruction", "response", "answer_cached"),
    extra=lambda cfg, rows: {"lang": cfg.lang,
                             "rule_questions": sum(1 for r in rows for q in r.questions if q.rule is not None),
                             "judge_questions": sum(1 for r in rows for q in r.questions if q.rule is None)})


async def evaluate_complexbench(cfg: EvalConfig, progress: Progress = NoProgress()) -> SuiteResult:
    from flows.complexbench.data import load_rows

    path = data_file(cfg, cfg.complexbench_data, "complexbench", "thu-coai/ComplexBench, data/data_final.json")
    every = load_rows(path)
    check_language(path, every, cfg.lang)
    return await run_benchmark(COMPLEXBENCH, cfg, path, every, progress)
