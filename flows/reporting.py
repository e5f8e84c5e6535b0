"""What the flows tell the Prefect API while they work, made to outlive the API going away (a
server restart): progress and artifacts are best effort, dropped with one warning while the work
goes on; and a flow run that could not report its end state within its client's patience says so
in one line, not a traceback.

The end states themselves are Prefect's to send; how long its client keeps retrying is
PREFECT_CLIENT_MAX_RETRIES (flows/prefect_api.py: RETRIES, and prefect.yaml's api_patience).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, TypeVar

import httpx
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from flows import prefect_api
from flows.errors import OneLineError

log = logging.getLogger(__name__)
T = TypeVar("T")
API_AWAY = (httpx.HTTPError, OSError)  # refused, timed out, or answered 5xx while it restarts


def _dropped(what: str, exc: Exception, warned: set[str] | None) -> None:
    if warned is None or what not in warned:
        log.warning("%s not reported to the Prefect API (%s: %s); the work goes on", what, type(exc).__name__, exc)
    if warned is not None:
        warned.add(what)


async def best_effort(call: Awaitable[T], what: str, warned: set[str] | None = None) -> T | None:
    """Await a report to the Prefect API; if the API is away, a warning (once per `what` for the
    holder of `warned`) and None. A bug in our own code still raises."""
    try:
        return await call
    except API_AWAY as exc:
        _dropped(what, exc, warned)
        return None


def best_effort_sync(call: Callable[[], T], what: str, warned: set[str] | None = None) -> T | None:
    """best_effort for the synchronous flows (training)."""
    try:
        return call()
    except API_AWAY as exc:
        _dropped(what, exc, warned)
        return None


class ArtifactProgress:
    """One Prefect progress artifact per stage (key <prefix>-<stage>): the share of the rows
    entering the stage (so far known) that have left it, updated at most every `every` seconds
    without ever blocking the event loop that drives the LLM requests; 100 once the run is done.
    Best effort: an update the API does not take is dropped (the first one with a warning)."""

    def __init__(self, every: float = 2.0, prefix: str = "trace-progress", unit: str = "rows"):
        self.every, self.prefix, self.unit = every, prefix, unit
        self._ids: dict[str, asyncio.Task] = {}
        self._done: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._pending: set[asyncio.Task] = set()
        self._total: dict[str, int] = {}
        self._warned: set[str] = set()
        self.dropped = 0

    def _spawn(self, coro) -> asyncio.Task:
        job = asyncio.ensure_future(self._report(coro))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)
        return job

    async def _report(self, coro):
        sent = await best_effort(coro, "progress", self._warned)
        self.dropped += sent is None
        return sent

    def start(self, totals: dict[str, int]) -> None:
        for stage, total in totals.items():
            self._done[stage], self._last[stage], self._total[stage] = 0, 0.0, total
            self._ids[stage] = self._spawn(acreate_progress_artifact(
                0.0, key=f"{self.prefix}-{stage}", description=f"{stage}: share of the {self.unit} entering it "
                                                               "that have left it"))

    def expect(self, stage: str, n: int = 1) -> None:
        self._total[stage] += n

    def advance(self, stage: str, n: int = 1) -> None:
        self._done[stage] += n
        now = time.monotonic()
        if now - self._last[stage] >= self.every:
            self._last[stage] = now
            self._spawn(self._update(stage, 100.0 * self._done[stage] / max(self._total[stage], 1)))

    async def _update(self, stage: str, percent: float) -> bool | None:
        artifact_id = await self._ids[stage]
        if artifact_id is None:  # never created (the API was away): nothing to update
            return None
        await aupdate_progress_artifact(artifact_id=artifact_id, progress=min(percent, 100.0))
        return True

    async def finish(self) -> None:
        await asyncio.gather(*self._pending)
        await asyncio.gather(*(self._report(self._update(stage, 100.0)) for stage in self._ids))


def lost_api_line(api: str, retries: int) -> str:
    return (f"the Prefect API at {api} did not answer for {prefect_api.patience_s(retries)} s "
            f"({prefect_api.RETRIES_ENV}={retries}), so this flow run could not report its end; its work is saved "
            "in its run folder: once the API is back, run it again and it finishes without paying for it again")


def _api_call_failed(exc: BaseException | None, api: str) -> bool:
    """Whether an exception (or one it came from) is a call to the Prefect API that got no answer."""
    while exc is not None:
        if isinstance(exc, httpx.TransportError):
            try:
                return str(exc.request.url).startswith(api)
            except RuntimeError:  # no request attached: not one of the client's calls
                return False
        exc = exc.__cause__ or exc.__context__
    return False


class LostApiInOneLine(logging.Filter):
    """On Prefect's engine logger: the traceback it logs when a flow run's end state could not be
    sent (the API away past the client's retries) becomes one line naming the API. On the flow
    run's logger (`keep_message`), the same error keeps Prefect's one-line message, without its
    traceback."""

    def __init__(self, api: str, retries: int, keep_message: bool = False):
        super().__init__()
        self.api, self.retries, self.keep_message = api, retries, keep_message

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _api_call_failed(record.exc_info[1], self.api):
            if not self.keep_message:
                record.msg, record.args = lost_api_line(self.api, self.retries), ()
            record.exc_info, record.exc_text = None, None
        return True


class OneLineFailure(logging.Filter):
    """On the flow run's logger: a flow that fails with a OneLineError logs its message, without
    the traceback (a user's mistake or a server's failure is not a bug in the code)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], OneLineError):
            record.msg, record.args = str(record.exc_info[1]), ()
            record.exc_info, record.exc_text = None, None
        return True


def report_failures_in_one_line() -> None:
    """Called where a flow run starts, on its process's loggers: see LostApiInOneLine and
    OneLineFailure."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES

    flow_runs = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, OneLineFailure) for f in flow_runs.filters):
        flow_runs.addFilter(OneLineFailure())
    api = PREFECT_API_URL.value()
    for name, keep_message in (("prefect.engine", False), ("prefect.flow_runs", True)):
        logger = logging.getLogger(name)
        if api and not any(isinstance(f, LostApiInOneLine) for f in logger.filters):
            logger.addFilter(LostApiInOneLine(api, PREFECT_CLIENT_MAX_RETRIES.value(), keep_message))
