"""The executor: moves rows through the stages with no barrier that idles the LLM server.

Each row walks through the stages on its own: the moment its stage-2 answer arrives, its stage-3
request is sent, whatever its neighbours are doing; after stage 5 it forks into the DPO and IOPO
stages at once. Per (stage, shard) a collector gathers the results and writes the shard file once
every row that entered the stage has left it, so shards stay the unit of storage and resume while
rows are the unit of work. A bounded number of shards is in the stages at once, a new one
entering as soon as one leaves, so memory does not grow with the size of the build and the
server's queue never drains between windows; a window of shards is the unit a Prefect task
tracks. Nothing slow runs on the event loop, which turns answers into the next requests: seeds
are read and shard files written in threads, and the garbage collector's full passes, which stop
the loop, come once per window (flows/garbage.py). The LLM client's slots bound what actually
reaches the server. A finished (stage, shard) is read back from the store instead of being computed
again.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Awaitable, Callable, Iterable, Iterator

from flows.aio import gather_or_cancel
from flows.contracts import PARENT, stage_schema
from flows.errors import INTERNAL_ERROR
from flows.garbage import collect_old, paced
from flows.progress import NoProgress, Progress
from flows.stages.base import Stage, StageContext
from flows.store import ShardStore, input_hash


class StageClock:
    """Wall time per stage: rows overlap across stages, so a stage's time is the span from its
    first row in to its last row out (this run's rows; resumed shards cost nothing), plus the
    mean time one row spent in it."""

    def __init__(self):
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.busy: dict[str, float] = defaultdict(float)
        self.rows: dict[str, int] = defaultdict(int)

    def record(self, stage: str, start: float, end: float) -> None:
        self.first[stage] = min(self.first.get(stage, start), start)
        self.last[stage] = max(self.last.get(stage, end), end)
        self.busy[stage] += end - start
        self.rows[stage] += 1

    def as_dict(self) -> dict[str, dict]:
        return {stage: {"wall_s": round(self.last[stage] - self.first[stage], 3),
                        "row_s_mean": round(self.busy[stage] / self.rows[stage], 3), "rows": self.rows[stage]}
                for stage in self.first}


class StageShard:
    """One stage's results for one shard; written to the store when all inputs are back, in a
    thread, so that the event loop goes on turning answers into requests meanwhile. on_done gets
    the output rows once the file is written, so the stages that take them in learn how many to
    expect."""

    def __init__(self, stage: Stage, shard: int, store: ShardStore, fingerprint: str,
                 on_done: Callable[[list[dict]], None]):
        self.stage, self.shard, self.store, self.fingerprint = stage, shard, store, fingerprint
        self.on_done = on_done
        self.inputs: dict[int, dict] = {}
        self.outputs: dict[int, dict] = {}
        self.rejects: dict[int, dict] = {}
        self.expected: int | None = None
        self.rows_out: list[dict] = []
        self.writing: asyncio.Task | None = None
        self.complete = asyncio.Event()  # every input row is back: the write has started

    def expect(self, n: int) -> None:
        self.expected = n
        self._maybe_finish()

    def add(self, position: int, row: dict, out: dict | None, reject: dict | None) -> None:
        self.inputs[position] = row
        if out is not None:
            self.outputs[position] = out
        else:
            self.rejects[position] = reject
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.expected is None or len(self.inputs) < self.expected or self.writing is not None:
            return
        order = sorted(self.inputs)  # seed order, so a rerun writes the same bytes
        out = [self.outputs[p] for p in order if p in self.outputs]
        rejects = [self.rejects[p] for p in order if p in self.rejects]
        self.writing = asyncio.ensure_future(self._write([self.inputs[p] for p in order], out, rejects))
        self.complete.set()

    async def _write(self, inputs: list[dict], out: list[dict], rejects: list[dict]) -> None:
        def write():
            self.store.write_shard(self.stage.name, self.shard, stage_schema(self.stage.name), out, rejects,
                                   input_hash(inputs, self.fingerprint),
                                   retry=any(r["reason"] == INTERNAL_ERROR for r in rejects))
        await asyncio.to_thread(write)
        self.rows_out = out
        self.on_done(out)

    async def wait(self) -> "StageShard":
        await self.complete.wait()
        await self.writing
        return self

async def run_shard(shard: int, rows: list[dict], stages: list[Stage], ctx: StageContext, store: ShardStore,
                    progress: Progress = NoProgress(), clock: StageClock | None = None) -> dict[str, list[dict]]:
    """One shard of seed rows through all stages (a chain that forks after stage 5, see
    contracts.PARENT); each stage's output rows, in seed order."""
    position = {row["seed_id"]: i for i, row in enumerate(rows)}
    done: dict[str, list[dict]] = {"seeds": rows}
    for stage in stages:  # resume: a finished stage whose input is known is read, not recomputed
        parent = PARENT[stage.name]
        if parent in done:
            loaded = store.load_shard(stage.name, shard, input_hash(done[parent], ctx.fingerprint(stage)))
            if loaded is not None:
                if parent != "seeds":  # the seeds are in the first stages' totals from the start
                    progress.expect(stage.name, len(done[parent]))
                progress.advance(stage.name, len(done[parent]))
                done[stage.name] = loaded[0]
    remaining = [s for s in stages if s.name not in done]
    if not remaining:
        return done

    children: dict[str, list[Stage]] = defaultdict(list)
    for stage in remaining:
        children[PARENT[stage.name]].append(stage)
    collectors: dict[str, StageShard] = {}

    def on_done(stage_name: str, out: list[dict]) -> None:
        done[stage_name] = out
        for child in children[stage_name]:
            collectors[child.name].expect(len(out))

    for stage in remaining:
        collectors[stage.name] = StageShard(stage, shard, store, ctx.fingerprint(stage),
                                            lambda out, name=stage.name: on_done(name, out))

    clock = clock or StageClock()

    async def walk(row: dict, stage: Stage) -> None:
        start = time.monotonic()
        out, reject = await stage.run_row(row, ctx)
        clock.record(stage.name, start, time.monotonic())
        progress.advance(stage.name)
        collectors[stage.name].add(position[row["seed_id"]], row, out, reject)
        if out is not None:
            for child in children[stage.name]:
                progress.expect(child.name)
            await gather_or_cancel(*(walk(out, child) for child in children[stage.name]))

    entries = [(stage, done[PARENT[stage.name]]) for stage in remaining if PARENT[stage.name] in done]
    for stage, inputs in entries:
        collectors[stage.name].expect(len(inputs))
        if PARENT[stage.name] != "seeds":
            progress.expect(stage.name, len(inputs))
    waits = [c.wait() for c in collectors.values()]
    try:
        await gather_or_cancel(*(walk(row, stage) for stage, inputs in entries for row in inputs), *waits)
    finally:
        # the collectors and their callbacks refer to each other: without this the shard's rows
        # would wait for the garbage collector, whose full passes stall the event loop
        collectors.clear()
    return done


def windows(shards: Iterable[tuple[list[dict], list[dict]]], shard_size: int, window_size: int
            ) -> Iterator[list[tuple[int, list[dict], list[dict]]]]:
    """Consecutive shards, numbered, grouped into windows of about `window_size` seeds."""
    per_window = max(1, window_size // shard_size)
    window: list = []
    for number, (rows, rejects) in enumerate(shards):
        window.append((number, rows, rejects))
        if len(window) == per_window:
            yield window
            window = []
    if window:
        yield window


async def run_window(window: list[tuple[int, list[dict], list[dict]]], stages: list[Stage], ctx: StageContext,
                     store: ShardStore, progress: Progress, clock: StageClock, admission: Admission
                     ) -> dict[str, int]:
    """The shards of one window through every stage, each shard on its own (no barrier between
    them), each entering as soon as `admission` lets it; rows leave memory when their shard is
    written. Rows out per stage."""
    counts: dict[str, int] = defaultdict(int)

    async def one(number: int, rows: list[dict], rejects: list[dict]) -> None:
        try:
            await asyncio.to_thread(store.write_shard, "seeds", number, stage_schema("seeds"), rows, rejects,
                                    input_hash(rows))
            done = await run_shard(number, rows, stages, ctx, store, progress, clock=clock)
        finally:
            admission.leave()
        for stage, out in done.items():
            counts[stage] += len(out)

    shards: list[asyncio.Task] = []
    try:
        while window:
            await admission.enter()
            shards.append(asyncio.ensure_future(one(*window.pop(0))))  # each shard's rows held by its run alone
        admission.window_entered()
        await gather_or_cancel(*shards)
    finally:
        for job in shards:
            job.cancel()
        await asyncio.gather(*shards, return_exceptions=True)
    return dict(counts)


class Admission:
    """How many shards may be in the stages at once. A shard enters when one leaves, whichever
    window either belongs to, so the rows in flight (and the requests they make) never drop
    when a window ends: the next window's shards take the places of the last one's, one by one.
    `entered` is set when the window being admitted is all in, and the next one may start."""

    def __init__(self, shards: int):
        self._places = asyncio.Semaphore(shards)
        self.entered = asyncio.Event()

    async def enter(self) -> None:
        await self._places.acquire()

    def leave(self) -> None:
        self._places.release()

    def window_entered(self) -> None:
        self.entered.set()


# Wraps the run of one window, e.g. as a Prefect task: (window number, first shard, last shard, run).
WindowTracker = Callable[[int, int, int, Callable[[], Awaitable[dict]]], Awaitable[dict]]


async def untracked_window(number: int, first: int, last: int, run):
    return await run()


async def run_all(shards: Iterable[tuple[list[dict], list[dict]]], stages: list[Stage], ctx: StageContext,
                  store: ShardStore, progress: Progress = NoProgress(), track: WindowTracker = untracked_window,
                  clock: StageClock | None = None, shard_size: int = 16, window_size: int = 1024,
                  seeds_in_flight: int = 2048) -> dict[str, int]:
    """Seed shards (rows, input rejects), read lazily in a thread, with at most seeds_in_flight
    seeds (rounded up to whole shards) in the stages: a shard enters as one leaves, so the server
    always has a full flow of rows and memory holds a bounded number of seeds' rows whatever the
    size of the build. A window (the unit `track` wraps, a Prefect task in the flow) starts once
    the one before it is all in, and when it is done the collector's full pass runs
    (flows/garbage.py). Rows out per stage over the whole build."""
    clock = clock or StageClock()
    per_window = max(1, window_size // shard_size)
    admission = Admission(-(-seeds_in_flight // shard_size))
    totals: dict[str, int] = defaultdict(int)
    running: set[asyncio.Task] = set()

    async def tracked(number: int, window) -> None:
        counts = await track(number, window[0][0], window[-1][0],
                             lambda: run_window(window, stages, ctx, store, progress, clock, admission))
        for stage, n in counts.items():
            totals[stage] += n
        collect_old()  # the one full collection of a window's time (flows/garbage.py)

    def reap() -> None:
        for job in [j for j in running if j.done()]:
            running.discard(job)
            job.result()  # a failed window stops the build here, with its error

    read = windows(shards, shard_size, window_size)
    with paced():
        try:
            # seeds are read and parsed off the event loop, which is busy turning answers into requests
            while (window := await asyncio.to_thread(next, read, None)) is not None:
                number = window[0][0] // per_window
                admission.entered.clear()
                running.add(asyncio.ensure_future(tracked(number, window)))
                entered = asyncio.ensure_future(admission.entered.wait())
                try:
                    while not entered.done():
                        await asyncio.wait({entered, *running}, return_when=asyncio.FIRST_COMPLETED)
                        reap()
                finally:
                    entered.cancel()
            await gather_or_cancel(*running)
        finally:
            for job in running:
                job.cancel()
            await asyncio.gather(*running, return_exceptions=True)  # stopped before the client closes
    return dict(totals)
