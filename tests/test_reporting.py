"""Reporting to the Prefect API is best effort: while the API is away (a restart), progress and
artifacts are dropped with one warning, and the build goes on; a flow run that could not report
its end says so in one line; every flow run waits as long for the API (prefect.yaml, workers)."""
import asyncio
import logging
import sys

import httpx
import pytest
import yaml

from conftest import REPO
from flows import automations, prefect_api, reporting
from flows.stack import worker_env


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not reported to the Prefect API" in r.getMessage()]


def test_progress_the_api_does_not_take_is_dropped_with_one_warning(monkeypatch, caplog):
    updates, away = [], {"calls": 3}

    async def create(progress, key, description):
        return f"id-{key}"

    async def update(artifact_id, progress):
        if away["calls"] > 0:  # the API comes back after three calls
            away["calls"] -= 1
            raise httpx.ConnectError("All connection attempts failed")
        updates.append((artifact_id, progress))

    monkeypatch.setattr(reporting, "acreate_progress_artifact", create)
    monkeypatch.setattr(reporting, "aupdate_progress_artifact", update)
    progress = reporting.ArtifactProgress(every=0)

    async def build():
        progress.start({"qc": 4})
        for _ in range(4):
            progress.advance("qc")
            await asyncio.sleep(0)
        await progress.finish()

    with caplog.at_level(logging.WARNING):
        asyncio.run(build())
    assert progress.dropped == 3
    assert updates == [("id-trace-progress-qc", 100.0), ("id-trace-progress-qc", 100.0)]  # the last two, then done
    [warning] = warnings_in(caplog)
    assert "progress" in warning and "ConnectError" in warning


def test_a_progress_artifact_never_created_is_not_updated_and_the_build_goes_on(monkeypatch, caplog):
    tried = []

    async def unreachable(*args, **kwargs):
        tried.append(kwargs.get("key") or kwargs.get("artifact_id"))
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(reporting, "acreate_progress_artifact", unreachable)
    monkeypatch.setattr(reporting, "aupdate_progress_artifact", unreachable)
    progress = reporting.ArtifactProgress(every=0)

    async def build():
        progress.start({"qc": 2, "respond": 2})
        progress.advance("qc")
        await progress.finish()

    with caplog.at_level(logging.WARNING):
        asyncio.run(build())
    assert tried == ["trace-progress-qc", "trace-progress-respond"]  # no update of what does not exist
    assert len(warnings_in(caplog)) == 1


def test_an_artifact_the_api_refuses_is_a_warning_but_a_bug_in_ours_is_not_hidden(caplog):
    async def refused():
        raise httpx.HTTPStatusError("503", request=httpx.Request("POST", "http://api/artifacts"),
                                    response=httpx.Response(503))

    async def bug():
        raise KeyError("funnel")

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(reporting.best_effort(refused(), "the funnel table")) is None
    assert warnings_in(caplog)[0].startswith("the funnel table not reported")
    with pytest.raises(KeyError):  # a bug in our own report is not the API being away
        asyncio.run(reporting.best_effort(bug(), "the summary"))


def test_updates_failing_together_while_the_api_is_away_are_one_warning(monkeypatch, caplog):
    async def create(progress, key, description):
        return f"id-{key}"

    async def update(artifact_id, progress):  # each waits out the client's retries, then fails
        await asyncio.sleep(0.01)
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(reporting, "acreate_progress_artifact", create)
    monkeypatch.setattr(reporting, "aupdate_progress_artifact", update)
    progress = reporting.ArtifactProgress(every=0)

    async def build():
        progress.start({"qc": 5})
        for _ in range(5):  # five updates in flight at once, none failed yet
            progress.advance("qc")
        await progress.finish()

    with caplog.at_level(logging.WARNING):
        asyncio.run(build())
    assert progress.dropped == 6
    assert len(warnings_in(caplog)) == 1


def test_training_progress_is_best_effort_too(caplog):
    def refused():
        raise httpx.ConnectError("All connection attempts failed")

    with caplog.at_level(logging.WARNING):
        assert reporting.best_effort_sync(refused, "the metrics table") is None
        assert reporting.best_effort_sync(lambda: "id-1", "the summary") == "id-1"
    assert warnings_in(caplog) == ["the metrics table not reported to the Prefect API (ConnectError: All connection "
                                   "attempts failed); the work goes on"]
    with pytest.raises(ZeroDivisionError):
        reporting.best_effort_sync(lambda: 1 / 0, "the summary")


def engine_record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("prefect.engine", logging.ERROR, __file__, 1,
                             "Execution of flow run %r exited with unexpected exception", ("abc",), info)


def test_an_end_state_the_api_never_took_is_one_line_naming_the_api():
    api = "http://hub.example:4200/api"
    lost = reporting.LostApiInOneLine(api, retries=7)
    unreachable = httpx.ConnectError("All connection attempts failed",
                                     request=httpx.Request("POST", f"{api}/flow_runs/abc/set_state"))
    try:  # as Prefect's client raises it: httpcore's error inside httpx's
        raise unreachable from OSError(111, "Connection refused")
    except httpx.ConnectError as exc:
        record = engine_record(exc)
    assert lost.filter(record)
    line = logging.Formatter().format(record)
    assert "\n" not in line and "Traceback" not in line
    assert f"the Prefect API at {api} did not answer for 254 s (PREFECT_CLIENT_MAX_RETRIES=7)" in line
    assert "run it again" in line
    # the flow run's own report of the same error keeps its message, without the traceback
    record = engine_record(unreachable)
    record.msg, record.args = "Encountered exception during execution: %r", (unreachable,)
    assert reporting.LostApiInOneLine(api, retries=7, keep_message=True).filter(record)
    assert logging.Formatter().format(record) == "Encountered exception during execution: " + repr(unreachable)

    # anything else keeps its traceback: an LLM server away, or a bug
    llm = httpx.ConnectError("refused", request=httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions"))
    for other in (llm, KeyError("funnel"), RuntimeError("wrapped")):
        record = engine_record(other)
        assert lost.filter(record) and record.exc_info is not None
        assert "Traceback" in logging.Formatter().format(record)


def test_every_flow_run_and_worker_waits_the_same_for_an_api_that_went_away():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env[prefect_api.RETRIES_ENV] == str(prefect_api.RETRIES), deployment["name"]
    assert prefect_api.patience_s(prefect_api.RETRIES) == 254  # Prefect's backoff: 2 + 4 + ... + 128 s
    # a live range is not Crashed for heartbeats lost while the server restarts within that wait
    heartbeat = int(next(d for d in deployments if d["name"] == "local")["work_pool"]["job_variables"]["env"][
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert automations.WITHIN_S > prefect_api.patience_s(prefect_api.RETRIES) + heartbeat
    assert worker_env({"PATH": "/bin"}, None)[prefect_api.RETRIES_ENV] == str(prefect_api.RETRIES)
    assert worker_env({"PATH": "/bin", prefect_api.RETRIES_ENV: "9"}, None)[prefect_api.RETRIES_ENV] == "9"


def test_a_flow_failing_on_a_one_line_error_logs_that_line_and_a_bug_keeps_its_traceback():
    from flows.errors import StageBug, UserError
    from flows.llm.client import LLMFailure

    one_line = reporting.OneLineFailure()
    for exc in (LLMFailure("server_unreachable", "http://x/v1: connection refused"), UserError("seeds.jsonl: row 3"),
                StageBug("12 rows rejected because a stage's code failed")):
        record = engine_record(exc)
        record.msg, record.args = "Encountered exception during execution: %r", (exc,)
        assert one_line.filter(record)
        assert logging.Formatter().format(record) == str(exc)
    record = engine_record(KeyError("funnel"))
    assert one_line.filter(record) and "Traceback" in logging.Formatter().format(record)
