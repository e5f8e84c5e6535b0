"""The trace-build Prefect flow on Prefect's test harness: a task per window of seeds, artifacts."""
import asyncio
import json
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from conftest import DEMO_SEEDS
from flows.trace_build import trace_build

pytestmark = pytest.mark.slow  # a Prefect server per module: not in make test-fast


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with prefect_test_harness(server_startup_timeout=90), temporary_settings(updates={
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("prefect-results"),
    }):
        yield


def test_flow_runs_stages_as_tasks_and_reports(harness, sim, tmp_path):
    state = asyncio.run(trace_build(seeds=str(DEMO_SEEDS), limit=6, out=str(tmp_path / "run"),
                                    base_urls=[sim.base_url], return_state=True))
    assert state.is_completed(), state
    result = state.result()
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    assert result["sft_rows"] > 0 and result["model"] == "simulated-trace"

    async def inspect():
        async with get_client() as client:
            runs = await client.read_task_runs()
            artifacts = await client.read_artifacts()
        return runs, artifacts

    # task runs reach the API through events, a moment after the flow returns
    for _ in range(50):
        runs, artifacts = asyncio.run(inspect())
        names = {r.name for r in runs}
        if {"window-00000", "splits-and-exports"} <= names:
            break
        time.sleep(0.2)
    assert {"window-00000", "splits-and-exports"} <= names
    assert {"trace-build-funnel", "trace-build-summary"} <= {a.key for a in artifacts}
    progress = {a.key: a.data for a in artifacts if a.type == "progress"}
    assert progress.get("trace-progress-taxonomy") == 100 and progress.get("trace-progress-iopo") == 100
    table = {row["stage"]: row for row in json.loads(next(a for a in artifacts if a.key == "trace-build-funnel").data)}
    assert table["respond"]["requests"] > 0 and "cache_hits" in table["respond"]
    assert table["respond"]["wall_s"] > 0 and table["taxonomy"]["wall_s"] > 0  # time per stage


def test_a_training_trigger_with_no_such_deployment_fails_the_run_and_is_recorded(harness, sim, tmp_path):
    state = asyncio.run(trace_build(seeds=str(DEMO_SEEDS), limit=3, out=str(tmp_path / "run"),
                                    base_urls=[sim.base_url], trigger_training=True, training_method="sft",
                                    return_state=True))
    assert state.is_failed()
    training = json.loads((tmp_path / "run" / "manifest.json").read_text())["training"]
    assert training["deployment"] == "iopo-train/gpu" and "ObjectNotFound" in training["error"]
    assert "flow_run_id" not in training


def test_a_build_with_rows_a_bug_rejected_ends_failed_and_trains_nothing(harness, sim, tmp_path, monkeypatch):
    from flows.stages.qc import QualityStage

    original, failed = QualityStage.process, set()

    async def process(self, row, ctx, trace):  # a bug on the first 2 rows qc sees (the limit is 3)
        if row["seed_id"] in failed or len(failed) < 2:
            failed.add(row["seed_id"])
            raise KeyError("a bug in qc")
        return await original(self, row, ctx, trace)

    monkeypatch.setattr(QualityStage, "process", process)
    state = asyncio.run(trace_build(seeds=str(DEMO_SEEDS), limit=6, out=str(tmp_path / "run"),
                                    base_urls=[sim.base_url], trigger_training=True, return_state=True))
    assert state.is_failed()
    assert "2 rows rejected because a stage's code failed (qc 2;" in state.message
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "training" not in manifest  # an incomplete build starts no training


def test_iopo_train_flow_reports_progress_metrics_and_summary(harness, tiny_model_dir, toy_iopo_file, tmp_path):
    from flows.iopo_train import iopo_train

    state = iopo_train(manifest=str(toy_iopo_file), model=str(tiny_model_dir), config=None, out=str(tmp_path / "t"),
                       overrides={"max_steps": 4, "micro_batch": 4, "max_length": 128, "device": "cpu"},
                       return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["steps"] == 4 and (tmp_path / "t" / "final").is_dir()

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    for _ in range(50):  # this run's: other tests' training runs made artifacts of the same keys
        found = {a.key: a for a in asyncio.run(artifacts()) if a.flow_run_id == state.state_details.flow_run_id}
        if {"iopo-train-progress", "iopo-train-metrics", "iopo-train-summary"} <= set(found):
            break
        time.sleep(0.2)
    assert found["iopo-train-progress"].data == 100
    table = json.loads(found["iopo-train-metrics"].data)
    assert [row["step"] for row in table] == [1, 2, 3, 4] and "accuracy_x2" in table[-1]
    assert "# iopo training" in found["iopo-train-summary"].data


def test_iopo_train_flow_closes_the_loop_with_trace_eval_subflows_and_a_table_3_of_two_rows(
        harness, tiny_model_dir, toy_iopo_file, tmp_path):
    """evaluate_after: the trained model and its base served (the simulator standing in for vLLM),
    trace-eval as subflow runs of iopo-train, the table-3 artifact; the base is evaluated once."""
    from flows.iopo_train import iopo_train

    after = {"serve": "simulated", "limit": 2, "base_results": str(tmp_path / "eval-base")}
    settings = {"max_steps": 2, "micro_batch": 4, "max_length": 128, "device": "cpu"}

    async def runs_of(parent_id):
        async with get_client() as client:
            runs = await client.read_flow_runs()
            evals = [r for r in runs if r.parent_task_run_id and (await client.read_task_run(
                r.parent_task_run_id)).flow_run_id == parent_id]
            artifacts = await client.read_artifacts()
        return evals, {a.key: a for a in artifacts if a.flow_run_id == parent_id}

    state = iopo_train(manifest=str(toy_iopo_file), model=str(tiny_model_dir), config=None, out=str(tmp_path / "a"),
                       overrides=settings, evaluate_after=after, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert list(result["table_3"]) == ["`iopo` on `model` (this run)", "`model` (base)"]
    assert result["table_3"]["`model` (base)"]["ifeval_s_acc"] is not None
    evals, artifacts = asyncio.run(runs_of(state.state_details.flow_run_id))
    assert sorted(r.state.type.value for r in evals) == ["COMPLETED", "COMPLETED"]
    assert {r.parameters["backend_model"] for r in evals} == {str(tmp_path / "a" / "merged"), str(tiny_model_dir)}
    table = artifacts["table-3"].data
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0] for row in rows] == ["| `iopo` on `model` (this run)", "| `model` (base)"]
    assert (tmp_path / "a" / "eval" / "table-3.md").read_text() == table

    # a second training run of the same base: only its own model is evaluated
    state = iopo_train(manifest=str(toy_iopo_file), model=str(tiny_model_dir), config=None, out=str(tmp_path / "b"),
                       method="dpo", overrides=settings, evaluate_after=after, return_state=True)
    assert state.is_completed(), state
    evals, artifacts = asyncio.run(runs_of(state.state_details.flow_run_id))
    assert [r.parameters["backend_model"] for r in evals] == [str(tmp_path / "b" / "merged")]
    assert "`model` (base)" in artifacts["table-3"].data


def test_trace_eval_flow_reports_progress_and_result_tables(harness, sim, tmp_path):
    from flows.trace_eval import trace_eval

    state = asyncio.run(trace_eval(limit=4, out=str(tmp_path / "eval"), base_urls=[sim.base_url], return_state=True))
    assert state.is_completed(), state
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["rows"] == 4

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    for _ in range(50):  # this run's: other tests' evaluations made artifacts of the same keys
        found = {a.key: a for a in asyncio.run(artifacts()) if a.flow_run_id == state.state_details.flow_run_id}
        if {"trace-eval-results", "trace-eval-progress-judge"} <= set(found):
            break
        time.sleep(0.2)
    assert "| IF-S |" in found["trace-eval-results"].data and "## By dimension" in found["trace-eval-results"].data
    assert found["trace-eval-progress-answer"].data == 100 and found["trace-eval-progress-judge"].data == 100


def test_trace_eval_flow_runs_the_ifeval_suite(harness, sim, tmp_path):
    from flows.trace_eval import trace_eval

    out = tmp_path / "ifeval"
    state = asyncio.run(trace_eval(suite="ifeval", sample=5, out=str(out), base_urls=[sim.base_url],
                                   return_state=True))
    assert state.is_completed(), state
    result = state.result()
    results = json.loads((out / "results.json").read_text())
    assert results["scored"] == 5 and result["strict_prompt_level"] == results["strict"]["prompt_level"]["rate"]
    assert (out / "eval_results_loose.jsonl").read_text().count("\n") == 5

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    for _ in range(50):
        found = {a.key: a for a in asyncio.run(artifacts())}
        if "ifeval-results" in found:
            break
        time.sleep(0.2)
    assert "| prompt-level |" in found["ifeval-results"].data and "## By category" in found["ifeval-results"].data


def test_the_command_line_and_the_flow_take_the_same_build_options_from_one_list():
    import inspect

    from flows.cli import parser
    from flows.config import BUILD_OPTIONS

    assert set(inspect.signature(trace_build.fn).parameters) == set(BUILD_OPTIONS) | {"config"}
    run = next(a for a in parser()._subparsers._group_actions[0].choices["run"]._actions if a.dest == "ranges")
    assert run.type is int
    dests = {a.dest for a in parser()._subparsers._group_actions[0].choices["run"]._actions}
    assert set(BUILD_OPTIONS) <= dests
