"""Run the pipeline's event loop: uvloop where it is installed (it halves the per-request CPU
cost of the event loop, which matters on a small machine driving a fast server), else asyncio."""
from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


def run(main: Awaitable[T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def prefer_uvloop() -> None:
    """Make asyncio.run() use uvloop in this process. For flow modules: a deployment's flow run
    loads the flow, then runs it with asyncio.run(), so a flow gets the CLI's loop this way."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    """asyncio.gather, except that the first exception cancels the others, and waits for them,
    before it is raised: when a server refuses the run, no sibling goes on asking it (or a
    client already closed) and rejects its rows for that."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
