"""The executor: moves rows through the stages with no barrier that idles the LLM server.

Each row walks through the stages on its own: the moment its stage-2 answer arrives, its stage-3
request is sent, whatever its neighbours are doing. Per (stage, shard) a collector gathers the
results and writes the shard file once every row that entered the stage has left it, so shards
stay the unit of storage and resume while rows are the unit of work. The LLM client's semaphore
bounds what actually reaches the server. A finished (stage, shard) is read back from the store
instead of being computed again.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol

from flows.contracts import stage_schema
from flows.stages.base import Stage, StageContext
from flows.store import ShardStore, input_hash


class Progress(Protocol):
    def start(self, total: int) -> None: ...  # rows entering the first stage

    def advance(self, stage: str, n: int = 1) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, stage: str, n: int = 1) -> None:
        pass


# Wraps the wait for one (stage, shard) to finish, e.g. as a Prefect task: (stage, shard, wait).
Tracker = Callable[[str, int, Callable[[], Awaitable["StageShard"]]], Awaitable["StageShard"]]


async def untracked(stage: str, shard: int, wait):
    return await wait()


class StageShard:
    """One stage's results for one shard; written to the store when all inputs are back."""

    def __init__(self, stage: Stage, shard: int, store: ShardStore, fingerprint: str,
                 on_done: Callable[[list[dict]], None]):
        self.stage, self.shard, self.store, self.fingerprint = stage, shard, store, fingerprint
        self.on_done = on_done
        self.inputs: dict[int, dict] = {}
        self.outputs: dict[int, dict] = {}
        self.rejects: dict[int, dict] = {}
        self.expected: int | None = None
        self.rows_out: list[dict] = []
        self.finished = asyncio.Event()

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
        if self.expected is None or len(self.inputs) < self.expected or self.finished.is_set():
            return
        order = sorted(self.inputs)  # seed order, so a rerun writes the same bytes
        out = [self.outputs[p] for p in order if p in self.outputs]
        self.store.write_shard(self.stage.name, self.shard, stage_schema(self.stage.name), out,
                               [self.rejects[p] for p in order if p in self.rejects],
                               input_hash([self.inputs[p] for p in order], self.fingerprint))
        self.rows_out = out
        self.finished.set()
        self.on_done(out)

    async def wait(self) -> "StageShard":
        await self.finished.wait()
        return self


async def run_shard(shard: int, rows: list[dict], stages: list[Stage], ctx: StageContext, store: ShardStore,
                    progress: Progress = NoProgress(), track: Tracker = untracked) -> list[dict]:
    """One shard of seed rows through all stages; the last stage's rows, in seed order."""
    position = {row["seed_id"]: i for i, row in enumerate(rows)}
    first = 0
    while first < len(stages):  # resume: finished stages of this shard are read, not recomputed
        done = store.load_shard(stages[first].name, shard, input_hash(rows, ctx.fingerprint(stages[first])))
        if done is None:
            break
        progress.advance(stages[first].name, len(rows))
        rows, first = done[0], first + 1
    remaining = stages[first:]
    if not remaining:
        return rows

    collectors: list[StageShard] = []
    for j, stage in enumerate(remaining):
        def on_done(out, j=j):
            if j + 1 < len(collectors):
                collectors[j + 1].expect(len(out))
        collectors.append(StageShard(stage, shard, store, ctx.fingerprint(stage), on_done))

    async def walk(row: dict) -> None:
        pos = position[row["seed_id"]]
        for collector in collectors:
            out, reject = await collector.stage.run_row(row, ctx)
            progress.advance(collector.stage.name)
            collector.add(pos, row, out, reject)
            if out is None:
                return
            row = out

    collectors[0].expect(len(rows))
    waits = [track(c.stage.name, shard, c.wait) for c in collectors]
    await asyncio.gather(*(walk(row) for row in rows), *waits)
    return collectors[-1].rows_out


def shard_rows(rows: list[dict], shard_size: int) -> list[list[dict]]:
    return [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]


async def run_all(shards: list[list[dict]], stages: list[Stage], ctx: StageContext, store: ShardStore,
                  progress: Progress = NoProgress(), track: Tracker = untracked) -> list[dict]:
    finals = await asyncio.gather(*(run_shard(i, rows, stages, ctx, store, progress, track)
                                    for i, rows in enumerate(shards)))
    return [row for rows in finals for row in rows]
