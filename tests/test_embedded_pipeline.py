"""The real embedded model (Qwen2.5-Coder-0.5B on llama.cpp) through all five stages.

A small model gets things wrong; this asserts the accounting and the plumbing (real server,
real grammar-constrained JSON, real Parquet), not the quality. Needs
`scripts/install-embedded.sh qwen2.5-coder-0.5b` (make test runs it).
"""
import json

import pytest

from conftest import DEMO_SEEDS, assert_accounted, read_rows, run_cli

pytestmark = pytest.mark.embedded


def test_two_seeds_through_all_stages_on_the_embedded_model(tmp_path):
    out = tmp_path / "run"
    done = run_cli("run", "--config", "configs/embedded.yaml", "--backend-model", "qwen2.5-coder-0.5b",
                   "--seeds", DEMO_SEEDS, "--limit", 2, "--out", out, "--quiet", timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = assert_accounted(out, 2)
    assert rows["taxonomy"]["out"] >= 1  # grammar-constrained JSON parses even on a small model
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "qwen2.5-coder-0.5b" and manifest["dialect"] == "json_object_schema"
    assert manifest["usage"]["taxonomy"]["requests"] >= 1
    tagged = read_rows(out / "stages" / "taxonomy" / "shard-00000.parquet")
    assert all(row["model"] == "qwen2.5-coder-0.5b" for row in tagged)


def test_three_official_rows_with_the_embedded_model_as_model_and_judge(tmp_path):
    out = tmp_path / "eval"
    done = run_cli("eval", "--config", "configs/eval-embedded.yaml", "--backend-model", "qwen2.5-coder-0.5b",
                   "--limit", 3, "--out", out, "--quiet", timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = read_rows(out / "rows.parquet")
    assert len(rows) == results["rows"] == 3
    assert results["model"] == results["judge"] == "qwen2.5-coder-0.5b"
    for row in rows:  # a score for every constraint, or the failure recorded: not the quality
        if row["failure"] is None:
            assert len(row["scores"]) == row["n_constraints"] and 0 <= row["overall"] <= 10
            assert all(0 <= s["score"] <= 10 for s in row["scores"])
        else:
            assert row["failure"].split(":")[0] in ("answer_failed", "judge_failed")
    judge_failed = sum(n for reason, n in results["failures"].items() if reason.startswith("judge_failed"))
    assert results["scored"] + judge_failed == 3


def test_five_ifeval_prompts_answered_by_the_embedded_model(tmp_path):
    out = tmp_path / "ifeval"
    done = run_cli("eval", "--suite", "ifeval", "--backend", "embedded", "--backend-model", "qwen2.5-coder-0.5b",
                   "--limit", 5, "--out", out, "--quiet", "--config", "configs/eval-ifeval-embedded.yaml", timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "qwen2.5-coder-0.5b" and results["prompts"] == 5
    strict = [json.loads(line) for line in (out / "eval_results_strict.jsonl").read_text().splitlines()]
    # every prompt answered (or failed by the model itself, scored as empty) and every instruction decided
    assert results["scored"] == 5 and results["incomplete"] == 0
    for line in strict:
        assert len(line["follow_instruction_list"]) == len(line["instruction_id_list"]) >= 1
        assert all(isinstance(v, bool) for v in line["follow_instruction_list"])


def _embedded_eval_config(tmp_path, suite: str) -> str:
    """The embedded 0.5B model as model under test and judge, short answers to keep it quick."""
    path = tmp_path / f"{suite}.yaml"
    path.write_text(f"suite: {suite}\nmodel:\n  backend: embedded\n  backend_model: qwen2.5-coder-0.5b\n"
                    "  max_in_flight: 1\n  timeout_s: 600\nanswer_max_tokens: 192\njudge_max_tokens: 512\n")
    return str(path)


def test_two_cfbench_rows_with_the_embedded_model_as_model_and_judge(tmp_path):
    from test_cfbench_suite import ROWS, write

    data, out = write(tmp_path / "cfbench_data.json", ROWS[:2]), tmp_path / "cfbench"
    done = run_cli("eval", "--config", _embedded_eval_config(tmp_path, "cfbench"), "--data", data, "--out", out,
                   "--quiet", timeout=1500)
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == results["judge"] == "qwen2.5-coder-0.5b" and results["rows"] == 2
    lines = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    for line, row in zip(lines, ROWS[:2]):  # a 0/1 verdict per criterion, or the failure recorded: not the quality
        if line["failure"] is None:
            assert len(line["verdicts"]) == len(row["criteria"]) and set(line["verdicts"]) <= {0, 1}
        else:
            assert line["failure"].split(":")[0] in ("answer_failed", "judge_failed")
    assert done.returncode == 0, done.stderr[-2000:]  # a judge reply the schema refused leaves the row unscored


def test_two_complexbench_rows_with_the_embedded_model_as_model_and_judge(tmp_path):
    from test_complexbench_suite import ROWS, write

    data, out = write(tmp_path / "data_final.json", ROWS[:2]), tmp_path / "complexbench"
    done = run_cli("eval", "--config", _embedded_eval_config(tmp_path, "complexbench"), "--data", data, "--out", out,
                   "--quiet", timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == results["judge"] == "qwen2.5-coder-0.5b"
    lines = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert [line["main_id"] for line in lines] == [r["main_id"] for r in ROWS[:2]]
    for line, row in zip(lines, ROWS[:2]):  # every question decided by its rule or the judge, or the failure recorded
        if line["failure"] is None:
            assert len(line["verdicts"]) == len(row["scoring_questions"])
            assert all(isinstance(v, bool) for v in line["verdicts"])
        else:
            assert line["failure"].split(":")[0] in ("answer_failed", "judge_failed", "extract_failed")
