"""The suite registry (flows/suites.py) drives the CLI, the trace-eval flow's validation and
`--suite all`; every suite exits nonzero, in one line, when rows are left unscored."""
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_cli, start_sim
from flows import cli, suites
from flows.config import ConfigError, EvalConfig, eval_overrides, load_config
from flows.suites import Suite
from test_cfbench_suite import write as write_cfbench
from test_complexbench_suite import write as write_complexbench


@dataclass
class DummyResult:
    out_dir: Path
    metrics: dict


async def run_dummy(cfg, progress):
    """A suite that needs no server: every row scored, 3 of 4 passed."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return DummyResult(Path(cfg.out), {"rows": 4, "scored": 4, "passed": 0.75, "failures": {}, "incomplete": 0,
                                       "answers_from_cache": 0, "model": "m", "judge": None})


def dummy_markdown(metrics: dict) -> str:
    return f"# Dummy: {metrics['passed']:.0%} passed\n"


DUMMY = Suite(name="dummy", title="Dummy", help="a suite added in one entry", run="test_suites:run_dummy",
              markdown_of="test_suites:dummy_markdown", artifact=("dummy-results", "the dummy's table"),
              files="results: {out}", unit="rows", total="rows", defaults={"out": "runs/eval-dummy"},
              columns=(("dummy_pass", "Dummy pass"),), table=lambda m: {"dummy_pass": 100 * m["passed"]},
              headline=lambda m: {"passed": m["passed"]}, reading="Dummy: {n} rows", judged=False)


@pytest.fixture
def dummy_suite(monkeypatch):
    monkeypatch.setitem(suites.SUITES, "dummy", DUMMY)
    return DUMMY


def test_a_suite_added_in_one_entry_is_in_the_cli_the_flows_validation_and_table_3(dummy_suite, tmp_path, capsys):
    # the CLI's --suite, help included
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "dummy" in help_text and "a suite added in one entry" in help_text
    # the flow's validation: trace-eval reads its parameters through EvalConfig
    assert load_config(None, eval_overrides(suite="dummy"), model=EvalConfig).out == "runs/eval-dummy"
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        load_config(None, eval_overrides(suite="nope"), model=EvalConfig)
    # it runs alone from the CLI...
    assert cli.main(["eval", "--suite", "dummy", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert "# Dummy: 75% passed" in capsys.readouterr().out
    # ...and in --suite all, with its column in Table 3
    with start_sim() as sim:
        rc = cli.main(["eval", "--suite", "all", "--limit", "2", "--base-url", sim.base_url,
                       "--out", str(tmp_path / "all"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    results = json.loads((tmp_path / "all" / "results.json").read_text())
    assert list(results["suites"]) == ["trace", "ifeval", "dummy"] and results["table"]["dummy_pass"] == 75.0
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert header.endswith("| ComplexBench | Dummy pass |")
    assert "- Dummy: 4 rows; results in" in out


@pytest.mark.slow
def test_the_trace_eval_flow_returns_the_registrys_headline(dummy_suite, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.trace_eval import trace_eval

    with prefect_test_harness(server_startup_timeout=90):
        result = asyncio.run(trace_eval(suite="dummy", out=str(tmp_path / "d")))
    assert result == {"out": str(tmp_path / "d"), "passed": 0.75}


@pytest.mark.parametrize("suite", ["trace", "cfbench", "complexbench"])
def test_a_judge_whose_answers_never_parse_leaves_every_row_unscored_and_exits_1(suite, tmp_path):
    data = {"trace": ["--limit", 2], "cfbench": ["--data", write_cfbench(tmp_path / "cf.json")],
            "complexbench": ["--data", write_complexbench(tmp_path / "cb.json"), "--lang", "en"]}[suite]
    with start_sim(malformed_rate=1.0) as sim:  # JSON answers (the judge's) are broken; the model's text is not
        done = run_cli("eval", "--suite", suite, *data, "--base-url", sim.base_url, "--out", tmp_path / "o",
                       "--quiet")
    assert done.returncode == 1
    title, unit, n = {"trace": ("Trace", "rows", 2), "cfbench": ("CFBench", "rows", 4),
                      "complexbench": ("ComplexBench", "instructions", 4)}[suite]
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"trace-build: error: {title}: {n} of {n} {unit} unscored: judge_failed unparseable_output {n}"


@pytest.mark.slow
def test_ifeval_prompts_left_unanswered_exit_1_and_say_a_rerun_finishes_them(tmp_path):
    with start_sim(error_500_rate=1.0) as sim:
        done = run_cli("eval", "--suite", "ifeval", "--limit", 2, "--base-url", sim.base_url, "--out", tmp_path / "o",
                       "--quiet")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "trace-build: error: IFEval: 2 of 2 prompts unscored: answer_unavailable server_error 2; rerun the same "
        "command to finish the ones servers left (answers so far are cached)")
