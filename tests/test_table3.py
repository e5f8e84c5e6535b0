"""`--suite all`: every suite whose data is present on one model, the paper's Table 3 from their
results (terminal, results.md, results.json, the trace-eval flow's artifact), model and judge on
separate servers, a rerun that pays nothing, and a bad benchmark file stopping the run before
anything is paid for."""
import asyncio
import json
import time

import pytest
from conftest import run_cli, sim_requests, start_sim
from test_cfbench_suite import ROWS as CF_ROWS
from test_cfbench_suite import write as write_cfbench
from test_complexbench_suite import ROWS as CB_ROWS
from test_complexbench_suite import write as write_complexbench

from flows.table3 import PAPER_QWEN2_7B_IOPO, columns, table_markdown

HEADER = ("| model | Trace IF-S | Trace IF-M | IFEval S-Acc | IFEval L-Acc | CFBench CSR | CFBench ISR | CFBench PSR "
          "| ComplexBench |")
PAPER = "| Qwen2-7B IOPO (the IOPO paper) | 82.0 | 68.9 | 59.9 | 63.6 | 80.7 | 47.0 | 58.7 | 72.6 |"


def pct(rate):
    return f"{100 * rate:.1f}"


def expected_row(out):
    """This run's Table 3 cells, read from each suite's own results.json; a --sample run of each
    suite: every cell marked as from part of its benchmark."""
    trace, ifeval, cf, cb = (json.loads((out / s / "results.json").read_text())
                             for s in ("trace", "ifeval", "cfbench", "complexbench"))
    cells = [trace["if_s"]["strict"]["rate"], trace["if_m"]["strict"]["rate"], ifeval["strict"]["prompt_level"]["rate"],
             ifeval["loose"]["prompt_level"]["rate"], cf["full"]["CSR"], cf["full"]["ISR"], cf["full"]["PSR"],
             cb["drfr"]["rate"]]
    return "| `simulated-trace` (this run) | " + " | ".join(pct(c) + "*" for c in cells) + " |"


@pytest.mark.slow
def test_all_suites_make_table_3_with_the_judge_on_its_own_server_and_a_rerun_pays_nothing(tmp_path):
    cf, cb = write_cfbench(tmp_path / "cfbench_data.json"), write_complexbench(tmp_path / "data_final.json")
    out = tmp_path / "all"
    with start_sim() as model, start_sim(model="sim-judge") as judge:
        args = ("eval", "--suite", "all", "--cfbench-data", cf, "--complexbench-data", cb, "--sample", 3,
                "--no-rule-checks", "--base-url", model.base_url, "--judge-base-url", judge.base_url, "--out", out,
                "--quiet")
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        # the model answers 3 rows of each suite; the judge: Trace and CFBench rows, ComplexBench questions
        cb_questions = sum(len(CB_ROWS[i * 4 // 3]["scoring_questions"]) for i in range(3))
        assert sim_requests(model) == 4 * 3 and sim_requests(judge) == 3 + 3 + cb_questions
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr
        assert sim_requests(model) == 12 and sim_requests(judge) == 6 + cb_questions
    table = (out / "results.md").read_text()
    assert HEADER in table and PAPER in table and expected_row(out) in table
    assert table in done.stdout and table in again.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["paper"] == {"row": "Qwen2-7B IOPO (the IOPO paper)", **PAPER_QWEN2_7B_IOPO}
    assert set(results["table"]) == {key for _, key, _ in columns()} and None not in results["table"].values()
    assert (results["model"], results["judge"]) == ("simulated-trace", "sim-judge")
    assert set(results["suites"]) == {"trace", "ifeval", "cfbench", "complexbench"} and results["not_run"] == {}
    assert json.loads((out / "cfbench" / "results.json").read_text())["judge"] == "sim-judge"
    ifeval = json.loads((out / "ifeval" / "results.json").read_text())
    assert ifeval["prompts"] == 3 and ifeval["settings"]["answer_temperature"] == 0.0  # each suite's own default
    assert json.loads((out / "trace" / "results.json").read_text())["settings"]["answer_temperature"] == 0.1
    assert "12 answers came from the request cache" in again.stdout


@pytest.mark.slow
def test_without_benchmark_files_trace_and_ifeval_run_and_the_table_says_what_is_missing(tmp_path):
    out = tmp_path / "all"
    done = run_cli("eval", "--suite", "all", "--sample", 2, "--no-rule-checks", "--backend", "simulated",
                   "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    table = (out / "results.md").read_text()
    row = next(line for line in table.splitlines() if "(this run)" in line)
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert len(cells) == 8 and all(c != "-" for c in cells[:4]) and cells[4:] == ["-"] * 4
    assert "CFBench not run: no data file (--cfbench-data FILE" in table
    assert "ComplexBench not run: no data file (--complexbench-data FILE" in table
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ifeval", "trace"]


def test_a_bad_benchmark_file_stops_the_run_before_anything_is_asked(tmp_path):
    rows = json.loads(json.dumps(CB_ROWS))
    rows[1]["scoring_questions"][1]["dep"] = [7]
    cb = write_complexbench(tmp_path / "data_final.json", rows)
    with start_sim() as server:
        done = run_cli("eval", "--suite", "all", "--cfbench-data", write_cfbench(tmp_path / "cf.json", CF_ROWS),
                       "--complexbench-data", cb, "--base-url", server.base_url, "--out", tmp_path / "o", "--quiet")
        assert sim_requests(server) == 0
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"trace-build: error: {cb}: row 2: field 'scoring_questions[1].dep': 7")
    assert not (tmp_path / "o").exists()
    done = run_cli("eval", "--suite", "all", "--data", cb, "--base-url", server.base_url, "--out", tmp_path / "o")
    assert done.returncode == 2 and "--suite all takes each benchmark's file on its own" in done.stderr


def test_the_table_marks_incomplete_suites_and_leaves_missing_ones_empty():
    metrics = {"model": "m", "judge": "j",
               "table": {"trace_if_s": 81.25, "trace_if_m": 70.0, "ifeval_s_acc": 55.5, "ifeval_l_acc": 60.0,
                         "cfbench_csr": None, "cfbench_isr": None, "cfbench_psr": None, "complexbench": 70.1},
               "paper": {"row": "x", **PAPER_QWEN2_7B_IOPO},
               "suites": {"trace": {"out": "o/trace", "incomplete": 0, "unscored": 0, "scored": 10},
                          "ifeval": {"out": "o/ifeval", "incomplete": 2, "unscored": 2, "scored": 8,
                                     "failures": {"answer_unavailable:server_error": 2}},
                          "complexbench": {"out": "o/complexbench", "incomplete": 0, "unscored": 0, "scored": 5,
                                           "lang": "en"}},
               "not_run": {"cfbench": "no data file"}}
    text = table_markdown(metrics)
    assert "| `m` (this run) | 81.2 | 70.0 | 55.5* | 60.0* | - | - | - | 70.1 |" in text
    assert PAPER in text and "CFBench not run: no data file." in text
    assert "- \\* IFEval: from 8 of 10 prompts (2 unscored: answer_unavailable server_error 2)." in text
    assert "Rerun the same command to finish the rows servers left" in text
    assert "ComplexBench: DRFR with dependencies (en), 5 instructions" in text


def suite_info(scored, in_data, unscored=0, selected_by=None, failures=None):
    """A suite's entry in the `all` results: scored rows of the in_data the benchmark holds."""
    return {"out": "o", "incomplete": 0, "unscored": unscored, "scored": scored, "in_data": in_data,
            "selected_by": selected_by, "failures": failures or {}}


def test_a_column_from_part_of_its_benchmark_is_marked_and_the_note_says_why():
    metrics = {"model": "m", "judge": "j", "paper": {"row": "x", **PAPER_QWEN2_7B_IOPO}, "not_run": {},
               "table": {"trace_if_s": 66.7, "trace_if_m": None, "ifeval_s_acc": 50.0, "ifeval_l_acc": 60.0,
                         "cfbench_csr": 70.0, "cfbench_isr": 40.0, "cfbench_psr": 50.0, "complexbench": 75.0},
               "suites": {"trace": suite_info(3, 1042, selected_by="--limit 3"),  # a --limit: part of it
                          "ifeval": suite_info(541, 541),  # every prompt: no mark
                          "cfbench": suite_info(4, 4, failures={"answer_failed:output_too_long": 1}),
                          "complexbench": suite_info(3, 10, unscored=1, selected_by="--sample 4",
                                                     failures={"judge_failed:unparseable_output": 1})}}
    text = table_markdown(metrics)
    # an empty cell stays empty; the model's own failures are scored: CFBench is whole
    assert "| `m` (this run) | 66.7* | - | 50.0 | 60.0 | 70.0 | 40.0 | 50.0 | 75.0* |" in text
    assert "- \\* Trace: from 3 of 1,042 rows (--limit 3)." in text
    assert ("- \\* ComplexBench: from 3 of 10 instructions (--sample 4; 1 unscored: judge_failed unparseable_output "
            "1).") in text
    assert "IFEval: from" not in text and "CFBench: from" not in text and "Rerun" not in text
    older = {**metrics, "suites": {"trace": {"out": "o", "incomplete": 0, "unscored": 0, "scored": 3}}}
    assert "| 66.7 |" in table_markdown(older)  # results written before in_data: marked only when unscored


def test_a_limited_run_of_all_suites_marks_its_columns_and_says_from_how_many_rows(tmp_path):
    from flows.evalset import OFFICIAL_EVAL
    from flows.ifeval.suite import IFEVAL_DATA

    done = run_cli("eval", "--suite", "all", "--limit", 3, "--no-rule-checks", "--backend", "simulated",
                   "--out", tmp_path / "all", "--quiet")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "(this run)" in line)
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    # --limit 3 takes IF-S rows only (the official file lists them first): IF-M stays empty, unmarked
    assert cells[0].endswith("*") and cells[1] == "-" and all(c.endswith("*") for c in cells[2:4])
    assert cells[4:] == ["-"] * 4
    rows, prompts = (sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
                     for path in (OFFICIAL_EVAL, IFEVAL_DATA))
    assert f"- \\* Trace: from 3 of {rows:,} rows (--limit 3)." in done.stdout
    assert f"- \\* IFEval: from 3 of {prompts:,} prompts (--limit 3)." in done.stdout
    results = json.loads((tmp_path / "all" / "results.json").read_text())
    assert results["suites"]["trace"]["in_data"] == rows and results["suites"]["trace"]["selected_by"] == "--limit 3"


@pytest.mark.slow
def test_the_trace_eval_flow_runs_all_suites_and_publishes_table_3(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.trace_eval import trace_eval

    out = tmp_path / "all"
    with prefect_test_harness(server_startup_timeout=90), \
            temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "results"}), start_sim() as sim:
        state = asyncio.run(trace_eval(suite="all", sample=2, out=str(out), base_urls=[sim.base_url],
                                       cfbench_data=str(write_cfbench(tmp_path / "cf.json")),
                                       complexbench_data=str(write_complexbench(tmp_path / "cb.json")),
                                       lang="en", return_state=True))
        assert state.is_completed(), state
        result = state.result()
        assert result["table"] == json.loads((out / "results.json").read_text())["table"]
        assert json.loads((out / "complexbench" / "results.json").read_text())["lang"] == "en"

        async def artifacts():
            async with get_client() as client:
                return await client.read_artifacts()

        wanted = {"table-3", "trace-eval-results", "ifeval-results", "cfbench-results", "complexbench-results"}
        for _ in range(50):
            found = {a.key: a for a in asyncio.run(artifacts())}
            if wanted <= set(found):
                break
            time.sleep(0.2)
    assert found["table-3"].data == (out / "results.md").read_text()
    assert HEADER in found["table-3"].data and PAPER in found["table-3"].data
    assert "**DRFR:" in found["complexbench-results"].data and "| full |" in found["cfbench-results"].data
