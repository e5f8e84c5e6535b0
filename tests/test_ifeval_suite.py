"""The IFEval suite: strict and loose scoring, the responses-file path end to end in IFEval's
layout, bad files as one line, and the model path against the simulator (resumable)."""
import json

import pytest

from conftest import run_cli, sim_requests, start_sim
from flows.ifeval.scoring import accuracy, loose_variants, result_line, verdicts
from flows.ifeval.suite import IFEVAL_DATA, load_prompts

END = "Is there anything else I can help with?"
PROMPTS = [
    {"key": 1, "prompt": "Describe a cat without commas. End with the phrase 'Is there anything else I can help with?'",
     "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
     "kwargs": [{}, {"end_phrase": END}]},
    {"key": 2, "prompt": "Wrap your entire answer in double quotation marks.",
     "instruction_id_list": ["startend:quotation"], "kwargs": [{}]},
    {"key": 3, "prompt": "Answer in lowercase letters only, no capitals.",
     "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
]
RESPONSES = [
    f"A cat is small and soft and it purrs.\n**{END}**",           # strict: the ending is '**'; loose: followed
    'Here is my answer:\n"Quotes all around this answer."',         # strict: starts with 'Here'; loose: followed
    "Cats, however, Sleep A Lot.",                                  # capitals: not followed either way
]


def test_loose_variants_are_ifevals_eight():
    variants = loose_variants("first *line*\nmiddle\nlast")
    assert variants == ["first *line*\nmiddle\nlast", "first line\nmiddle\nlast", "middle\nlast",
                        "first *line*\nmiddle", "middle", "middle\nlast", "first line\nmiddle", "middle"]


def test_strict_and_loose_verdicts_differ_where_ifeval_says():
    strict = [verdicts(p, r) for p, r in zip(PROMPTS, RESPONSES)]
    loose = [verdicts(p, r, loose=True) for p, r in zip(PROMPTS, RESPONSES)]
    assert strict == [[True, False], [False], [False]]
    assert loose == [[True, True], [True], [False]]


def test_an_empty_response_follows_nothing_strict_or_loose():
    # no_comma alone would hold on an empty text
    for loose in (False, True):
        assert verdicts(PROMPTS[0], "", loose) == [False, False]
        assert verdicts(PROMPTS[0], "  \n ", loose) == [False, False]


def test_prompt_and_instruction_level_accuracy_and_breakdowns():
    lines = [result_line(p, r, verdicts(p, r, loose=True)) for p, r in zip(PROMPTS, RESPONSES)]
    m = accuracy(lines)
    assert m["prompt_level"] == {"n": 3, "followed": 2, "rate": 0.6667}
    assert m["instruction_level"] == {"n": 4, "followed": 3, "rate": 0.75}
    assert m["by_category"]["startend"] == {"n": 2, "followed": 2, "rate": 1.0}
    assert m["by_instruction"]["change_case:english_lowercase"]["followed"] == 0


def test_the_official_prompts_load_with_usable_kwargs():
    prompts = load_prompts()
    assert len(prompts) == 541 and sum(len(p["instruction_id_list"]) for p in prompts) == 834
    assert len({i for p in prompts for i in p["instruction_id_list"]}) == 25
    assert all(None not in kw.values() for p in prompts for kw in p["kwargs"])  # nulls dropped


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_responses_file_scored_end_to_end_in_ifevals_layout(tmp_path):
    data = write_jsonl(tmp_path / "input.jsonl", PROMPTS)
    responses = write_jsonl(tmp_path / "responses.jsonl",
                            [{"prompt": p["prompt"], "response": r} for p, r in zip(PROMPTS, RESPONSES)])
    out = tmp_path / "out"
    done = run_cli("eval", "--suite", "ifeval", "--data", data, "--responses", responses, "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    strict = [json.loads(line) for line in (out / "eval_results_strict.jsonl").read_text().splitlines()]
    loose = [json.loads(line) for line in (out / "eval_results_loose.jsonl").read_text().splitlines()]
    assert [list(line) for line in strict] == [["follow_all_instructions", "follow_instruction_list",
                                                "instruction_id_list", "prompt", "response"]] * 3
    assert [line["follow_instruction_list"] for line in strict] == [[True, False], [False], [False]]
    assert [line["follow_all_instructions"] for line in loose] == [True, True, False]
    assert [line["response"] for line in strict] == RESPONSES
    results = json.loads((out / "results.json").read_text())
    assert results["strict"]["prompt_level"]["followed"] == 0 and results["loose"]["prompt_level"]["followed"] == 2
    assert results["strict"]["instruction_level"]["rate"] == 0.25 and results["scored"] == 3
    assert "| prompt-level |" in done.stdout and "## By instruction" in (out / "results.md").read_text()
    assert not (out / "llm-cache.sqlite").exists()  # no model was asked


def test_a_file_for_all_prompts_scores_a_limited_run(tmp_path):
    prompts = load_prompts()
    responses = write_jsonl(tmp_path / "all.jsonl", [{"prompt": p["prompt"], "response": "ok"} for p in prompts])
    done = run_cli("eval", "--suite", "ifeval", "--responses", responses, "--limit", 4, "--out", tmp_path / "o",
                   "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "results.json").read_text())["prompts"] == 4


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "x"}'], "line 1: field 'response' must be a string"),
    (['not json'], "line 1: not JSON"),
    (['{"prompt": "not an IFEval prompt", "response": "r"}'], "line 1: prompt is not one of the IFEval prompts"),
    ([], "no response for 541 of the 541 prompts (first: key 1000"),
])
def test_a_bad_responses_file_is_one_line(tmp_path, lines, message):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = run_cli("eval", "--suite", "ifeval", "--responses", path, "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("trace-build: error:") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_a_bad_input_data_row_names_the_instruction(tmp_path):
    bad = dict(PROMPTS[0], kwargs=[{}, {}])  # end_checker without its end_phrase
    data = write_jsonl(tmp_path / "input.jsonl", [PROMPTS[1], bad])
    done = run_cli("eval", "--suite", "ifeval", "--data", data, "--base-url", "http://127.0.0.1:9/v1",
                   "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{data}: line 2: instruction 'startend:end_checker'" in done.stderr


def test_responses_need_the_ifeval_suite_and_ifeval_has_no_judge(tmp_path):
    done = run_cli("eval", "--responses", tmp_path / "r.jsonl", "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "only the ifeval suite scores a responses file" in done.stderr
    done = run_cli("eval", "--suite", "ifeval", "--judge-base-url", "http://127.0.0.1:9/v1", "--limit", 1,
                   "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "the ifeval suite has no judge" in done.stderr


@pytest.mark.slow
def test_the_model_answers_through_the_cache_and_a_rerun_pays_nothing(tmp_path):
    out = tmp_path / "ifeval"
    with start_sim() as server:
        done = run_cli("eval", "--suite", "ifeval", "--sample", 12, "--base-url", server.base_url, "--out", out,
                       "--quiet")
        assert done.returncode == 0, done.stderr
        paid = sim_requests(server)
        assert paid == 12
        again = run_cli("eval", "--suite", "ifeval", "--sample", 12, "--base-url", server.base_url, "--out", out,
                        "--quiet")
        assert again.returncode == 0, again.stderr
        assert sim_requests(server) == paid and "12 answers came from the request cache" in again.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "simulated-trace" and results["scored"] == 12 and results["failures"] == {}
    lines = (out / "eval_results_strict.jsonl").read_text().splitlines()
    answered = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(lines) == len(answered) == 12 and all(a["response"] for a in answered)
    n = sum(len(json.loads(line)["instruction_id_list"]) for line in lines)
    assert results["strict"]["instruction_level"]["n"] == results["loose"]["instruction_level"]["n"] == n
    # loose never follows less than strict
    assert results["loose"]["instruction_level"]["followed"] >= results["strict"]["instruction_level"]["followed"]


@pytest.mark.slow
def test_server_errors_leave_prompts_unanswered_and_the_exit_status_says_so(tmp_path):
    with start_sim(error_500_rate=1.0) as server:
        done = run_cli("eval", "--suite", "ifeval", "--limit", 2, "--base-url", server.base_url,
                       "--model", "simulated-trace", "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 1 and "IFEval: 2 of 2 prompts unscored: answer_unavailable server_error 2; rerun" in done.stderr
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["scored"] == 0 and results["incomplete"] == 2
    assert results["strict"]["prompt_level"]["rate"] is None


def test_the_vendored_prompts_are_the_official_file():
    import hashlib

    digest = hashlib.sha256(IFEVAL_DATA.read_bytes()).hexdigest()
    assert digest == "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"
    assert "Apache License 2.0" in (IFEVAL_DATA.parent / "README.md").read_text()
