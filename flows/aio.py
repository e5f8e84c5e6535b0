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
