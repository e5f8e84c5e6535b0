"""Reporting to the Prefect API is best effort: while the API is away (a restart), progress and
artifacts are dropped with one warning, and the build goes on."""
import asyncio
import logging

import httpx
import pytest

from flows import trace_build


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

    monkeypatch.setattr(trace_build, "acreate_progress_artifact", create)
    monkeypatch.setattr(trace_build, "aupdate_progress_artifact", update)
    progress = trace_build.ArtifactProgress(every=0)

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

    monkeypatch.setattr(trace_build, "acreate_progress_artifact", unreachable)
    monkeypatch.setattr(trace_build, "aupdate_progress_artifact", unreachable)
    progress = trace_build.ArtifactProgress(every=0)

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
        assert asyncio.run(trace_build.best_effort(refused(), "the funnel table")) is None
    assert warnings_in(caplog)[0].startswith("the funnel table not reported")
    with pytest.raises(KeyError):  # a bug in our own report is not the API being away
        asyncio.run(trace_build.best_effort(bug(), "the summary"))
