"""The ComplexBench suite end to end against the simulator: rule questions through the extractor
(its "each" prompt where the rule says each) and the rule, the others through the judge, verdicts
with dependencies, DRFR and the coherent test recomputed from the verdicts written, --lang en, the
official truncation, a rerun that pays nothing, server failures left unscored (exit 1) and bad
files as one line. Rows are invented, in the official layout."""
import json

import pytest

from conftest import run_cli, sim_requests, start_sim
from test_cfbench_suite import cached_requests, read_jsonl

from flows.complexbench.data import load_rows
from flows.complexbench.metrics import aggregate, with_dependencies
from flows.complexbench.rules import check, extracted_segments


def q(point_id, question, question_en, dims, rule=None, dep=(), comps=()):
    return {"point_id": point_id, "question": question, "question_en": question_en, "rule": rule,
            "constraint_dimensions": list(dims), "composition_types": list(comps), "dep": list(dep)}


LONG = "背景资料：" + "某市举办读书节，" * 900  # over the 6,000 characters the extractor and judge see


def row(main_id, instruction, instruction_en, questions, category="And", compositions=("And",), group=None,
        idx_in_group=None, task="Creative Writing"):
    return {"main_id": main_id, "group": group, "idx_in_group": idx_in_group, "instruction": instruction,
            "instruction_en": instruction_en, "task_types": task,
            "constraint_dimensions": sorted({d for x in questions for d in x["constraint_dimensions"]}),
            "composition_types": list(compositions), "category": category, "scoring_questions": questions}


def selection(main_id, idx, case):
    return row(main_id, f"判断{case}是否在春天开花。如果是，写一句包含“春天”的介绍；如果不是，回答“不开花”。",
               f"Decide whether {case} blooms in spring. If so, write one sentence containing 'spring'; "
               "if not, answer 'no'.",
               [q(0, f"模型是否正确判断{case}在春天开花？", f"Does the model correctly decide that {case} blooms in spring?",
                  ["Factuality"], comps=["Selection"]),
                q(1, "模型的介绍是否包含“春天”？", "Does the introduction contain 'spring'?", ["Keywords"],
                  rule="model_keyword:[春天]", dep=[0]),
                q(2, "介绍是否只有一句话？", "Is the introduction one sentence?", ["Length"], dep=[0])],
               category="Selection_1", compositions=("Selection",), group="g1", idx_in_group=idx, task="Logical Reasoning")


ROWS = [
    row(10, "写三个周末场景，每个场景以“场景”开头，全文不超过200字，不要出现“冬天”。",
        "Write three weekend scenes, each starting with 'Scene', at most 200 characters, without 'winter'.",
        [q(0, "模型是否写了三个周末场景？", "Did the model write three weekend scenes?", ["Helpfulness"]),
         q(1, "每个场景是否以“场景”开头？", "Does each scene start with 'Scene'?", ["Start with"],
           rule="model_startswith_each:场景"),
         q(2, "全文是否不超过200字？", "Is the text at most 200 characters?", ["Length"], rule="model_length:[1,200]"),
         q(3, "全文是否没有出现“冬天”？", "Is 'winter' absent?", ["Word Matching"], rule="model_forbidden_word:[冬天]")]),
    selection(20, 1, "樱花"),
    selection(21, 2, "腊梅"),
    row(30, LONG + "\n先给读书节起一个名字，再按名字写一段宣传语，最后以“完成”结尾。",
        "First name the reading festival, then write a slogan for it, and end with 'done'.",
        [q(0, "模型是否起了名字？", "Did the model name it?", ["Helpfulness"], comps=["Chain"]),
         q(1, "宣传语是否与名字相符？", "Does the slogan fit the name?", ["Topic"], dep=[0]),
         q(2, "输出是否以“完成”结尾？", "Does the output end with 'done'?", ["End with"], rule="model_endswith:完成",
           dep=[1])],
        category="Chain_2", compositions=("Chain",)),
]
N_QUESTIONS = sum(len(r["scoring_questions"]) for r in ROWS)


def write(path, rows=ROWS):
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


@pytest.mark.slow
def test_complexbench_end_to_end_rules_judge_dependencies_and_a_rerun_pays_nothing(tmp_path):
    data, out = write(tmp_path / "data_final.json"), tmp_path / "cb"
    with start_sim() as server:
        args = ("eval", "--suite", "complexbench", "--data", data, "--base-url", server.base_url, "--out", out, "--quiet")
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        assert sim_requests(server) == len(ROWS) + N_QUESTIONS  # an answer per row, a call per question
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr
        assert sim_requests(server) == len(ROWS) + N_QUESTIONS and "4 answers came from the request cache" in again.stdout
    rows = load_rows(data)
    lines = read_jsonl(out / "judgments.jsonl")
    answers = {line["main_id"]: line["response"] for line in read_jsonl(out / "responses.jsonl")}
    assert [line["main_id"] for line in lines] == [10, 20, 21, 30] and all(answers.values())
    for parsed, line in zip(rows, lines):
        assert line["failure"] is None and len(line["questions"]) == len(parsed.questions)
        for question, decided in zip(parsed.questions, line["questions"]):
            if question.rule is not None:  # the extractor's target read the official way, then the rule
                segments = extracted_segments(f"评分对象：{decided['target']}", answers[line["main_id"]])
                assert decided["segments"] == segments and decided["met"] == check(question.rule, segments)
                assert "analysis" not in decided
            else:
                assert isinstance(decided["met"], bool) and decided["analysis"]
        assert line["verdicts"] == [d["met"] for d in line["questions"]]
        assert line["met_with_dependencies"] == with_dependencies(parsed, line["verdicts"])
    results = json.loads((out / "results.json").read_text())
    expected = aggregate(rows, {line["main_id"]: line["verdicts"] for line in lines})
    for key in ("drfr", "by_dimension", "by_type", "by_composition", "by_category", "by_task_type",
                "by_composition_set", "coherent_test"):
        assert results[key] == expected[key], key
    assert results["drfr"]["n"] == N_QUESTIONS and results["scored"] == 4 and results["failures"] == {}
    assert results["coherent_test"]["single"]["groups"] == 1 and results["coherent_test"]["single"]["instructions"] == 2
    assert (results["rule_questions"], results["judge_questions"]) == (6, 7)
    verdicts = [v for line in lines for v in line["verdicts"]]
    assert True in verdicts and False in verdicts  # the simulator says both
    # the extractor's "each" prompt only for the rule that says each; the whole-response option otherwise
    extracts = {m[1]["content"].rsplit("【评分问题】\n", 1)[1]: m[0]["content"] for m in cached_requests(out, "extract")}
    assert len(extracts) == 5
    assert "用 || 分隔" in extracts["每个场景是否以“场景”开头？"] and 'target 写 "all"' not in extracts["每个场景是否以“场景”开头？"]
    assert all('target 写 "all"' in system for question, system in extracts.items() if "每个" not in question)
    assert len(cached_requests(out, "judge")) == 7
    # the extractor and judge see the instruction cut to 6,000 characters, the model the whole of it
    long_instruction = ROWS[3]["instruction"]
    chain = [m[1]["content"] for m in cached_requests(out, "judge") + cached_requests(out, "extract")
             if "读书节" in m[1]["content"]]
    assert len(chain) == 3 and all(f"<<<\n{long_instruction[:6000]}\n>>>" in c for c in chain)
    assert any(m[0]["content"] == long_instruction for m in cached_requests(out, "answer"))
    md = (out / "results.md").read_text()
    assert f"**DRFR: {100 * results['drfr']['rate']:.1f}**" in md and "## Coherent test" in md
    assert "| Lexical |" in md and "| Selection_1 |" in md and md in done.stdout


@pytest.mark.slow
def test_the_english_release_is_asked_and_judged_in_english(tmp_path):
    data, out = write(tmp_path / "data_final.json", ROWS[:2]), tmp_path / "en"
    with start_sim() as server:
        done = run_cli("eval", "--suite", "complexbench", "--lang", "en", "--data", data, "--base-url",
                       server.base_url, "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    assert sorted(m[0]["content"] for m in cached_requests(out, "answer")) == sorted(r["instruction_en"] for r in ROWS[:2])
    asked = [m[1]["content"] for m in cached_requests(out, "judge") + cached_requests(out, "extract")]
    assert len(asked) == 7
    questions_en = {x["question_en"] for r in ROWS[:2] for x in r["scoring_questions"]}
    assert {c.rsplit("】\n", 1)[1].rsplit("\n\n请分析", 1)[0] for c in asked} == questions_en
    assert all("Scene" in c or "spring" in c for c in asked) and not any("周末场景" in c for c in asked)
    assert json.loads((out / "results.json").read_text())["lang"] == "en" and "ComplexBench (en)" in done.stdout
    # a file without the translation is named in one line
    first_release = json.loads(json.dumps(ROWS[:2]))
    del first_release[1]["scoring_questions"][2]["question_en"]
    data = write(tmp_path / "zh_only.json", first_release)
    done = run_cli("eval", "--suite", "complexbench", "--lang", "en", "--data", data, "--base-url",
                   "http://127.0.0.1:9/v1", "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{data}: row 2: field 'scoring_questions[2].question_en' is missing" in done.stderr


@pytest.mark.slow
def test_a_failing_judge_leaves_instructions_unscored_and_the_exit_status_says_so(tmp_path):
    data, out = write(tmp_path / "data_final.json", ROWS[1:3]), tmp_path / "cb"
    config = tmp_path / "fast.yaml"
    config.write_text("judge:\n  max_attempts: 1\n")
    with start_sim() as model, start_sim(model="sim-judge", error_500_rate=1.0) as judge:
        done = run_cli("eval", "--suite", "complexbench", "--data", data, "--config", config, "--base-url",
                       model.base_url, "--judge-base-url", judge.base_url, "--out", out, "--quiet")
    assert done.returncode == 1 and "ComplexBench: 2 of 2 instructions unscored: judge_failed server_error 2; rerun" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["scored"] == 0 and results["incomplete"] == 2 and results["unscored"] == [20, 21]
    assert results["drfr"] == {"n": 0, "met": 0, "rate": None}
    assert results["coherent_test"]["single"]["unscored_groups"] == 1  # the group is left out, not failed
    lines = read_jsonl(out / "judgments.jsonl")
    assert all(line["verdicts"] is None for line in lines)
    assert {d["failure"] for line in lines for d in line["questions"]} == {"judge_failed:server_error",
                                                                         "extract_failed:server_error"}


def test_a_bad_complexbench_file_is_one_line_naming_file_row_and_field(tmp_path):
    rows = json.loads(json.dumps(ROWS))
    rows[3]["scoring_questions"][2]["rule"] = "model_colour:[red]"
    data = write(tmp_path / "data_final.json", rows)
    done = run_cli("eval", "--suite", "complexbench", "--data", data, "--base-url", "http://127.0.0.1:9/v1",
                   "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"trace-build: error: {data}: row 4: field 'scoring_questions[2].rule'")
    assert "unknown rule form 'model_colour'" in done.stderr and not (tmp_path / "o").exists()
