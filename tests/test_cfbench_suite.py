"""The CFBench suite end to end against the simulator: the judge asked as CFBench's protocol asks
(prompt, reference answer, response, criteria), a 0/1 verdict per criterion, CSR / ISR / PSR
recomputed from the verdicts written, model and judge on separate servers, a rerun that pays
nothing, server failures left unscored (exit 1), bad files as one line. Rows are invented, in the
official layout (the official file is not ours to ship)."""
import json
import sqlite3

import pytest

from conftest import run_cli, sim_requests, start_sim

from flows.cfbench.data import load_rows
from flows.cfbench.metrics import aggregate, row_metrics

P, S = "主需", "次需"
GOLD = "床前明月光，疑是地上霜。"


def crit(text, priority, kind="内容约束", subtype="元素内容约束"):
    return [text, priority, kind, subtype]


def raw_row(idx, prompt, criteria, split="easy", gold=""):
    return {"idx": idx, "prompt": prompt, "isanswer": "是" if gold else "否", "gold": gold, "doamin": "通用",
            "scenario": "写作", "source": "test", "split": split, "criteria": criteria}


ROWS = [
    raw_row(0, "写一段介绍熊猫的文字，不少于50字，语气轻松。",
            [crit("主题是熊猫", P), crit("不少于50字", S, "数值约束", "单词数值约束"),
             crit("语气轻松", S, "风格约束", "语气情感约束")]),
    raw_row(1, "默写李白《静夜思》的前两句。", [crit("与参考答案一致", P), crit("只输出诗句", S, "格式约束", "")],
            split="hard", gold=GOLD),
    raw_row(2, "列出三种水果，用顿号分隔。", [crit("列出三种水果", P), crit("用顿号分隔", P, "格式约束", "标点约束")],
            split="hard"),
    raw_row(3, "", [crit(f"要点{i}", S, "", "") for i in range(4)]),  # the official file has an empty prompt too
]


def write(path, rows=ROWS):
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cached_requests(out, stage):
    """The messages of every request of `stage` in a suite's request cache."""
    with sqlite3.connect(out / "llm-cache.sqlite") as db:
        return [json.loads(r[0])["messages"] for r in db.execute("SELECT request FROM answers WHERE stage = ?", (stage,))]


@pytest.mark.slow
def test_cfbench_end_to_end_judge_on_its_own_server_and_a_rerun_pays_nothing(tmp_path):
    data, out = write(tmp_path / "cfbench_data.json"), tmp_path / "cf"
    secret, judge_secret = "sk-model-3b9d1f", "sk-judge-7c2e5a"
    with start_sim() as model, start_sim(model="sim-judge") as judge:
        args = ("eval", "--suite", "cfbench", "--data", data, "--base-url", model.base_url, "--judge-base-url",
                judge.base_url, "--judge-api-key-env", "JUDGE_KEY", "--out", out, "--quiet")
        env = {"OPENAI_API_KEY": secret, "JUDGE_KEY": judge_secret}
        done = run_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert (sim_requests(model), sim_requests(judge)) == (4, 4)  # answers on one server, verdicts on the other
        again = run_cli(*args, env=env)
        assert again.returncode == 0, again.stderr
        assert (sim_requests(model), sim_requests(judge)) == (4, 4)  # everything from the request cache
        assert "4 answers came from the request cache" in again.stdout
    results = json.loads((out / "results.json").read_text())
    assert (results["model"], results["judge"]) == ("simulated-trace", "sim-judge")
    assert (results["rows"], results["scored"], results["unscored"], results["failures"]) == (4, 4, [], {})
    lines = read_jsonl(out / "judgments.jsonl")
    rows = load_rows(data)
    assert [line["idx"] for line in lines] == [0, 1, 2, 3]
    for row, line in zip(rows, lines):
        assert len(line["verdicts"]) == len(row.criteria) and set(line["verdicts"]) <= {0, 1}
        assert {k: line[k] for k in ("CSR", "ISR", "PSR")} == row_metrics(row, line["verdicts"])
        reply = json.loads(line["judge_reply"])  # the criteria echoed in order, as the official format has them
        assert [s["criterion"] for s in reply["scores"]] == [c.text for c in row.criteria]
    expected = aggregate(rows, {line["idx"]: line["verdicts"] for line in lines})
    assert {k: results[k] for k in ("easy", "hard", "full", "by_type", "by_subtype")} == \
        {k: expected[k] for k in ("easy", "hard", "full", "by_type", "by_subtype")}
    assert 0 < sum(sum(line["verdicts"]) for line in lines) < sum(len(r.criteria) for r in rows)  # both verdicts occur
    assert results["answers_from_cache"] == 4  # results.json is the rerun's
    # the judge saw the prompt, the reference answer where there is one, the response and every criterion
    judged = cached_requests(out, "judge")
    answers = {line["prompt"]: line["response"] for line in read_jsonl(out / "responses.jsonl")}
    assert len(judged) == 4 and len(answers) == 4
    with_gold = [m for m in judged if "默写李白" in m[1]["content"]]
    assert len(with_gold) == 1 and GOLD in with_gold[0][1]["content"]
    assert sum(GOLD in m[1]["content"] for m in judged) == 1
    panda = next(m[1]["content"] for m in judged if "熊猫" in m[1]["content"])
    assert answers[ROWS[0]["prompt"]] in panda and "1. 主题是熊猫\n2. 不少于50字\n3. 语气轻松" in panda
    # the model under test got the prompt alone, as CFBench's inference does
    assert sorted(m[0]["content"] for m in cached_requests(out, "answer")) == sorted(r["prompt"] for r in ROWS)
    assert all(len(m) == 1 and m[0]["role"] == "user" for m in cached_requests(out, "answer"))
    md = (out / "results.md").read_text()
    full = results["full"]
    assert f"| full | 4 | {100 * full['CSR']:.1f} | {100 * full['ISR']:.1f} | {100 * full['PSR']:.1f} |" in md
    assert "## By constraint subtype" in md and "| 标点约束 |" in md and md in done.stdout
    for path in tmp_path.rglob("*"):  # neither key is written anywhere
        if path.is_file():
            assert secret.encode() not in path.read_bytes() and judge_secret.encode() not in path.read_bytes()


@pytest.mark.slow
def test_a_failing_judge_leaves_rows_unscored_exit_1_and_the_rerun_pays_only_for_verdicts(tmp_path):
    data, out = write(tmp_path / "cfbench_data.json"), tmp_path / "cf"
    config = tmp_path / "fast.yaml"
    config.write_text("judge:\n  max_attempts: 1\n")  # no backoff between tries: the test stays fast
    with start_sim() as model:
        with start_sim(model="sim-judge", error_500_rate=1.0) as broken:
            done = run_cli("eval", "--suite", "cfbench", "--data", data, "--config", config, "--base-url",
                           model.base_url, "--judge-base-url", broken.base_url, "--judge-model", "sim-judge",
                           "--out", out, "--quiet")
        assert done.returncode == 1
        assert "CFBench: 4 of 4 rows unscored: judge_failed server_error 4; rerun" in done.stderr
        results = json.loads((out / "results.json").read_text())
        assert results["scored"] == 0 and results["incomplete"] == 4 and results["unscored"] == [0, 1, 2, 3]
        assert results["full"] == {"n": 0, "CSR": None, "ISR": None, "PSR": None}
        assert [line["failure"] for line in read_jsonl(out / "judgments.jsonl")] == ["judge_failed:server_error"] * 4
        assert len(read_jsonl(out / "responses.jsonl")) == 4  # the answers are kept
        with start_sim(model="sim-judge") as judge:
            again = run_cli("eval", "--suite", "cfbench", "--data", data, "--base-url", model.base_url,
                            "--judge-base-url", judge.base_url, "--out", out, "--quiet")
            assert again.returncode == 0, again.stderr
            assert sim_requests(model) == 4 and sim_requests(judge) == 4  # no answer asked twice
    assert json.loads((out / "results.json").read_text())["scored"] == 4


@pytest.mark.slow
def test_an_unanswered_row_is_not_scored_and_the_exit_status_says_so(tmp_path):
    data = write(tmp_path / "cfbench_data.json", ROWS[:2])
    config = tmp_path / "fast.yaml"
    config.write_text("model:\n  max_attempts: 1\n")
    with start_sim(error_500_rate=1.0) as server:
        done = run_cli("eval", "--suite", "cfbench", "--data", data, "--config", config, "--base-url",
                       server.base_url, "--model", "simulated-trace", "--out", tmp_path / "o", "--quiet")
        assert sim_requests(server) == 2  # no judge call for a row without an answer
    assert done.returncode == 1 and "CFBench: 2 of 2 rows unscored: answer_unavailable server_error 2; rerun" in done.stderr
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["scored"] == 0 and results["incomplete"] == 2
    assert (tmp_path / "o" / "responses.jsonl").read_text() == ""


def test_a_bad_cfbench_file_is_one_line_naming_file_row_and_field(tmp_path):
    rows = json.loads(json.dumps(ROWS))
    rows[2]["criteria"][1][1] = "主要"
    data = write(tmp_path / "cfbench_data.json", rows)
    done = run_cli("eval", "--suite", "cfbench", "--data", data, "--base-url", "http://127.0.0.1:9/v1",
                   "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"trace-build: error: {data}: row 3: field 'criteria[1]': priority must be")
    assert not (tmp_path / "o").exists()
    done = run_cli("eval", "--suite", "cfbench", "--base-url", "http://127.0.0.1:9/v1", "--out", tmp_path / "o")
    assert done.returncode == 2 and "the cfbench suite needs its data file: --data FILE" in done.stderr
