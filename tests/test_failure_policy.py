"""The failure policy of a build (flows/errors.py): a bug in a stage's code is counted, stops the
build past execution.max_internal_errors, makes any build that had one exit nonzero, and its rows
are retried by the next run without paying twice for anything."""

import pytest

from conftest import DEMO_SEEDS, assert_accounted, read_rows, sim_requests, start_sim
from flows import cli
from flows.stages.qc import QualityStage


@pytest.fixture
def broken_qc(monkeypatch):
    """QualityStage.process raising KeyError: on every row when broken["rows"] is None, else on
    the first broken["rows"] distinct seeds it sees (0, the start: none)."""
    broken = {"rows": 0, "failed": set()}
    original = QualityStage.process

    async def process(self, row, ctx, trace):
        if broken["rows"] is None or row["seed_id"] in broken["failed"] or len(broken["failed"]) < broken["rows"]:
            if broken["rows"] is not None:
                broken["failed"].add(row["seed_id"])
            raise KeyError("a bug in qc")
        return await original(self, row, ctx, trace)

    monkeypatch.setattr(QualityStage, "process", process)
    return broken


def run(out, sim, capsys, *extra) -> tuple[int, str]:
    rc = cli.main(["run", "--seeds", str(DEMO_SEEDS), "--base-url", sim.base_url, "--out", str(out), "--quiet",
                   *map(str, extra)])
    return rc, capsys.readouterr().err


@pytest.fixture
def clean_cost(tmp_path_factory):
    """Requests a build of the demo seeds pays when nothing is broken."""
    sim = start_sim()
    try:
        out = tmp_path_factory.mktemp("clean") / "run"
        assert cli.main(["run", "--seeds", str(DEMO_SEEDS), "--base-url", sim.base_url, "--out", str(out),
                         "--quiet"]) == 0
        return sim_requests(sim), read_rows(out / "splits" / "sft.parquet")
    finally:
        sim.stop()


def test_a_stage_that_raises_on_every_row_stops_the_build_in_one_line_and_a_fixed_rerun_pays_nothing_twice(
        broken_qc, clean_cost, tmp_path, capsys):
    paid_clean, sft_clean = clean_cost
    sim = start_sim()
    try:
        broken_qc["rows"] = None  # every row
        rc, err = run(tmp_path / "run", sim, capsys)
        assert rc == 1
        lines = [line for line in err.splitlines() if line.startswith("trace-build: error:")]
        assert len(lines) == 1 and "stage qc raised KeyError" in lines[0], err
        assert "4 rows failed this way, more than execution.max_internal_errors = 3" in lines[0]
        assert not (tmp_path / "run" / "splits").exists()  # stopped: no outputs from part of the rows

        broken_qc["rows"] = 0  # the fix
        rc, err = run(tmp_path / "run", sim, capsys)
        assert rc == 0, err
        assert sim_requests(sim) == paid_clean  # every answer of the broken run came from the cache
        assert read_rows(tmp_path / "run" / "splits" / "sft.parquet") == sft_clean
    finally:
        sim.stop()


def test_a_few_rows_a_bug_rejected_finish_the_build_but_exit_nonzero_and_are_retried_next_run(
        broken_qc, clean_cost, tmp_path, capsys):
    paid_clean, sft_clean = clean_cost
    sim = start_sim()
    out = tmp_path / "run"
    try:
        broken_qc["rows"] = 2  # below the limit of 3
        rc, err = run(out, sim, capsys)
        assert rc == 1
        lines = [line for line in err.splitlines() if line.startswith("trace-build: error:")]
        assert len(lines) == 1 and "rows rejected because a stage's code failed (qc " in lines[0], err
        assert (out / "splits" / "sft.parquet").exists()  # the outputs are written all the same
        rows = assert_accounted(out, 30)
        assert rows["qc"]["reasons"]["internal_error"] == 2 and "(qc 2;" in lines[0]

        broken_qc["rows"], broken_qc["failed"] = 0, set()
        rc, err = run(out, sim, capsys)
        assert rc == 0, err
        rows = assert_accounted(out, 30)
        assert "internal_error" not in rows["qc"]["reasons"]  # retried, not reused
        assert sim_requests(sim) == paid_clean
        assert read_rows(out / "splits" / "sft.parquet") == sft_clean
    finally:
        sim.stop()
