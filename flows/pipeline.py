"""The executor: runs the stages over shards with no barrier that idles the LLM server.

Every shard walks through the stages on its own, so one shard can be in stage 5 while another
is still in stage 1; inside a stage all rows of a shard are in flight at once, and the LLM
client's semaphore bounds what actually reaches the server. A finished (stage, shard) is read
back from the store instead of being computed again.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol

from flows.contracts import stage_schema
from flows.stages.base import Stage, StageContext
from flows.store import ShardStore, input_hash


class Progress(Protocol):
    def advance(self, stage: str, n: int = 1) -> None: ...


class NoProgress:
    def advance(self, stage: str, n: int = 1) -> None:
        pass


async def run_stage_shard(stage: Stage, shard: int, rows: list[dict], ctx: StageContext,
                          store: ShardStore, progress: Progress = NoProgress()) -> list[dict]:
    expected = input_hash(rows)
    done = store.load_shard(stage.name, shard, expected)
    if done is not None:
        progress.advance(stage.name, len(rows))
        return done[0]

    async def one(row: dict):
        result = await stage.run_row(row, ctx)
        progress.advance(stage.name)
        return result

    results = await asyncio.gather(*(one(row) for row in rows))
    out = [r for r, _ in results if r is not None]
    rejects = [j for _, j in results if j is not None]
    store.write_shard(stage.name, shard, stage_schema(stage.name), out, rejects, expected)
    return out


StageRunner = Callable[[Stage, int, list[dict]], Awaitable[list[dict]]]


def shard_rows(rows: list[dict], shard_size: int) -> list[list[dict]]:
    return [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]


async def run_stages(shards: list[list[dict]], stages: list[Stage], runner: StageRunner) -> list[dict]:
    """All shards through all stages, each shard at its own pace; the last stage's rows."""

    async def chain(index: int, rows: list[dict]) -> list[dict]:
        for stage in stages:
            rows = await runner(stage, index, rows)
        return rows

    finals = await asyncio.gather(*(chain(i, rows) for i, rows in enumerate(shards)))
    return [row for rows in finals for row in rows]
