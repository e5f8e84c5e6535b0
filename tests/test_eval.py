"""The Trace evaluation: metrics on hand-built score tables, then whole runs against the simulator."""
import json

import pyarrow.parquet as pq
import pytest

from conftest import run_cli, sim_requests, start_sim
from flows.evaluation import compute_metrics, metrics_markdown
from flows.evalset import OFFICIAL_EVAL, load_eval_rows
from flows.errors import InputError
from flows.taxonomy import load_taxonomy


def scored(row_id, scores, overall, rules=None, dims=None, category="trace1.0", failure=None):
    """An evaluated row as evaluate_row writes it (EVAL_ROW), from judge scores and rule verdicts."""
    rules = rules or [None] * len(scores)
    dims = dims or ["numerical"] * len(scores)
    score_rows = [{"constraint_id": f"c{i}", "score": s, "explanation": "", "rule_passed": r, "rule_reason": None}
                  for i, (s, r) in enumerate(zip(scores, rules), start=1)]
    constraints = [{"id": f"c{i}", "text": "x", "dimension": d, "dimension_zh": "", "type": "", "check": None}
                   for i, d in enumerate(dims, start=1)]
    return {"id": row_id, "category": category, "n_constraints": len(scores), "scores": [] if failure else score_rows,
            "constraints": constraints, "overall": None if failure else overall, "failure": failure,
            "checks_failure": None, "answer_cached": False}


def test_if_s_and_if_m_strict_with_rules_and_overall_differ_where_they_should():
    rows = [
        scored("s1", [10], 10),                      # single: followed every way
        scored("s2", [9], 10),                       # single: overall 10 but a constraint at 9
        scored("s3", [10], 10, rules=[False]),       # single: the judge says 10, the rule says no
        scored("s4", [10], 8),                       # single: every constraint 10, overall 8
        scored("m1", [10, 10, 10], 10),              # multi: followed
        scored("m2", [10, 7, 10], 9),                # multi: not followed
        scored("m3", [10, 10], 10, failure="answer_failed:output_too_long"),  # the model's failure: not followed
        scored("m4", [10, 10], 10, failure="judge_failed:unparseable_output"),  # not scored
        scored("m5", [10, 10], 10, failure="answer_unavailable:connection_error"),  # not scored, incomplete
    ]
    m = compute_metrics(rows)
    assert (m["rows"], m["scored"], m["unscored"], m["incomplete"]) == (9, 7, 2, 1)
    assert m["failures"] == {"answer_failed:output_too_long": 1, "judge_failed:unparseable_output": 1,
                             "answer_unavailable:connection_error": 1}
    assert m["if_s"]["strict"] == {"n": 4, "followed": 3, "rate": 0.75}       # s1, s3, s4
    assert m["if_s"]["with_rules"] == {"n": 4, "followed": 2, "rate": 0.5}    # s1, s4
    assert m["if_s"]["overall"] == {"n": 4, "followed": 3, "rate": 0.75}      # s1, s2, s3
    assert m["if_m"]["strict"] == {"n": 3, "followed": 1, "rate": 0.3333}     # m1 of m1, m2, m3
    assert m["if_m"]["overall"]["followed"] == 1 and m["if_m"]["unscored"] == 2
    assert m["if_m"]["answer_failed"] == 1 and m["all"]["answer_failed"] == 1 and m["if_s"]["answer_failed"] == 0
    assert m["by_constraint_count"]["3"]["strict"]["n"] == 2
    assert (m["by_constraint_count"]["2"]["strict"]["n"], m["by_constraint_count"]["2"]["unscored"]) == (1, 2)
    # constraint level: 12 numerical constraints scored (s1..s4: 4, m1: 3, m2: 3, m3's failed answer: 2, not
    # passed); 8 scored 10, 7 with rules; m4 and m5's 4 unscored, not counted
    assert m["by_dimension"]["numerical"] == {"n": 12, "passed": 8, "rate": 0.6667, "passed_with_rules": 7,
                                              "rate_with_rules": 0.5833, "answer_failed": 2, "unscored": 4}
    assert m["rule_agreement"]["all"] == {"n": 1, "agree": 0, "rate": 0.0}  # the one verdict disagrees
    judge_only = compute_metrics(rows, policy="judge")
    assert judge_only["if_s"]["with_rules"] == m["if_s"]["strict"]  # s3 passes when the judge alone decides
    text = metrics_markdown(m, "m", "j")
    assert "| IF-S | 75.0 (3/4) | 50.0 (2/4) | 75.0 (3/4) |" in text


def test_breakdown_by_dimension_and_category():
    rows = [scored("a", [10, 3], 5, dims=["inclusion", "theme"], category="trace1.0"),
            scored("b", [10], 10, dims=["theme"], category="trace2.0")]
    m = compute_metrics(rows)
    assert {d: (v["n"], v["passed"]) for d, v in m["by_dimension"].items()} == {"inclusion": (1, 1), "theme": (2, 1)}
    assert m["by_category"]["trace1.0"]["strict"]["rate"] == 0.0
    assert m["by_category"]["trace2.0"]["strict"]["rate"] == 1.0


def test_official_rows_map_levels2_onto_the_taxonomy():
    taxonomy = load_taxonomy()
    rows = load_eval_rows(None, taxonomy)
    assert len(rows) == 1042
    assert sum(1 for r in rows if len(r["constraints"]) == 1) == 200
    constraints = [c for r in rows for c in r["constraints"]]
    unknown = [c for c in constraints if c["dimension"] == "unknown"]
    assert len(unknown) == 2  # the two labels outside the 26 dimensions (ids 903 and 951)
    first = rows[0]
    assert first["constraints"][0]["text"].startswith("描述需采用文艺的语气风格")  # number stripped
    assert first["constraints"][0]["dimension"] == "tone_and_style" and first["system"] == "You are a helpful assistant."


def test_a_bad_eval_row_is_named_in_one_line(tmp_path):
    good = json.loads(OFFICIAL_EVAL.read_text(encoding="utf-8").splitlines()[0])
    bad = dict(good, levels2=[])
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad, ensure_ascii=False) + "\n")
    with pytest.raises(InputError) as err:
        load_eval_rows(path, load_taxonomy())
    assert str(err.value) == f"{path}: line 2: field 'levels2' must have one label per constraint (1)"
    done = run_cli("eval", "--data", path, "--base-url", "http://127.0.0.1:9/v1", "--out", tmp_path / "o")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "line 2" in done.stderr


def checkable_official_rows(path, n):
    """The n official rows with the most constraints a rule can check, in the official layout."""
    from flows.rules import checkable_ids

    ids = set(checkable_ids(load_taxonomy()))
    taxonomy = load_taxonomy()
    lines = OFFICIAL_EVAL.read_text(encoding="utf-8").splitlines()

    def checkable(line):
        labels = json.loads(line)["levels2"]
        return sum(1 for label in labels if (taxonomy.by_zh(label) or taxonomy.by_zh("主题约束")).id in ids)

    path.write_text("\n".join(sorted(lines, key=checkable, reverse=True)[:n]) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_official_rows_end_to_end_against_the_simulator_and_resumable(tmp_path):
    out = tmp_path / "eval"
    data = checkable_official_rows(tmp_path / "checkable.jsonl", 30)
    # random anyOf: the extraction returns checks, not only nulls; seed 2 draws some that are valid for
    # their dimension and grounded in their constraint's text (a change to the prompt or schema redraws)
    with start_sim(any_of="random", seed=2) as server:
        done = run_cli("eval", "--data", data, "--base-url", server.base_url, "--out", out, "--quiet")
        assert done.returncode == 0, done.stderr
        first = sim_requests(server)
        again = run_cli("eval", "--data", data, "--base-url", server.base_url, "--out", out, "--quiet")
        assert again.returncode == 0, again.stderr
        assert sim_requests(server) == first  # every answer and score came from the request cache
    results = json.loads((out / "results.json").read_text())
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    assert len(rows) == results["rows"] == 30
    assert results["failures"] == {} and results["scored"] == 30
    for row in rows:  # every row scored on every constraint, with explanations
        assert len(row["scores"]) == row["n_constraints"] and row["overall"] is not None
        assert all(s["explanation"] for s in row["scores"])
    multi = [r for r in rows if r["n_constraints"] > 1]
    assert results["if_m"]["strict"]["n"] == len(multi) and results["if_s"]["strict"]["n"] == 30 - len(multi)
    assert results["if_m"]["strict"]["followed"] == sum(all(s["score"] == 10 for s in r["scores"]) for r in multi)
    assert results["if_m"]["overall"]["followed"] == sum(r["overall"] == 10 for r in multi)
    assert results["model"] == "simulated-trace" and results["judge"] == "simulated-trace"
    verdicts = [s for r in rows for s in r["scores"] if s["rule_passed"] is not None]
    assert verdicts and results["rule_agreement"]["all"]["n"] == len(verdicts)
    assert all(s["rule_reason"] for s in verdicts)
    assert "| IF-S |" in done.stdout and "## By dimension" in done.stdout


@pytest.mark.slow
def test_eval_of_a_runs_own_eval_split(sim_run_dir, tmp_path):
    with start_sim() as server:
        done = run_cli("eval", "--data", sim_run_dir, "--base-url", server.base_url, "--out", tmp_path / "e",
                       "--quiet", "--no-rule-checks")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    manifest = json.loads((sim_run_dir / "manifest.json").read_text())
    assert results["rows"] == manifest["splits"]["eval"]["rows"] > 0
    assert results["data"].endswith("exports/trace/eval.jsonl") and results["rule_agreement"] == {}


@pytest.mark.slow
def test_a_second_evaluation_reuses_the_extracted_checks(tmp_path):
    data = checkable_official_rows(tmp_path / "checkable.jsonl", 5)
    with start_sim(any_of="random") as server:
        assert run_cli("eval", "--data", data, "--base-url", server.base_url, "--out", tmp_path / "a",
                       "--quiet").returncode == 0
        from flows.llm import simulator

        simulator.reset(server.base_url)
        # another model under test (another answer temperature): new answers and scores, the same checks
        config = tmp_path / "b.yaml"
        config.write_text("answer_temperature: 0.7\n")
        assert run_cli("eval", "--data", data, "--base-url", server.base_url, "--out", tmp_path / "b",
                       "--config", config, "--quiet").returncode == 0
        assert sim_requests(server) == 2 * 5  # answer + judge per row; no check extraction
    assert (tmp_path / "eval-checks.sqlite").exists()


def test_an_unreachable_model_server_is_one_line_and_no_result(tmp_path):
    done = run_cli("eval", "--limit", 2, "--base-url", "http://127.0.0.1:9/v1", "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("trace-build: error: LLM server: server_unreachable")
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.slow
def test_server_errors_leave_rows_unscored_and_the_exit_status_says_so(tmp_path):
    with start_sim(error_500_rate=1.0) as server:  # every request fails: answers are unavailable
        done = run_cli("eval", "--limit", 2, "--base-url", server.base_url, "--model", "simulated-trace",
                       "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 1 and "Trace: 2 of 2 rows unscored: answer_unavailable server_error 2; rerun" in done.stderr
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["scored"] == 0 and results["incomplete"] == 2 and results["if_s"]["strict"]["rate"] is None


def test_a_spread_sample_sees_single_and_multi_constraint_rows():
    from flows.evalset import spread_sample

    rows = load_eval_rows(None, load_taxonomy())
    sample = spread_sample(rows, 10)
    assert len(sample) == 10 and sample == spread_sample(rows, 10)
    counts = [len(r["constraints"]) for r in sample]
    assert 1 in counts and any(c > 1 for c in counts)  # the first 10 rows would all be IF-S
    assert all(len(r["constraints"]) == 1 for r in rows[:10])


def test_api_keys_never_reach_the_results(tmp_path):
    secret, judge_secret = "sk-model-5f1c9e0b7d", "sk-judge-8a2e4c6d"
    with start_sim() as server:
        done = run_cli("eval", "--sample", 3, "--base-url", server.base_url, "--judge-base-url", server.base_url,
                       "--judge-api-key-env", "JUDGE_KEY", "--out", tmp_path / "o", "--quiet",
                       env={"OPENAI_API_KEY": secret, "JUDGE_KEY": judge_secret})
    assert done.returncode == 0, done.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert secret.encode() not in blob and judge_secret.encode() not in blob, path
    assert secret not in done.stdout + done.stderr and judge_secret not in done.stdout + done.stderr
