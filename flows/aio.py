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
