"""The garbage collector during the stages, kept from stalling the event loop.

A collection stops the thread that runs it for as long as it takes, and in the stages that thread
is the event loop, which turns answers into the next requests. CPython's automatic full
collection walks every tracked object, and runs whenever the objects promoted to the old
generation since the last one reach a quarter of those that survived it. The rows in flight are
a few hundred thousand objects renewed every few seconds, so left alone it runs every few
seconds, a tenth of a second or more each time, while the server's slots wait.

So, while the stages run (`paced`):
- what is alive at the start (modules, config, the client) is frozen, out of every collection's
  reach: it lives as long as the build;
- the young generations are collected as usual, and catch nearly all cyclic garbage cheaply; the
  first one's threshold is raised, so that far fewer short-lived objects are scanned at all;
- the automatic full collection is off: the pipeline runs one itself (`collect_old`) when a
  window of seeds is done, so the cyclic garbage that grew old is freed at a known and rare
  moment, and memory stays bounded whatever the size of the build.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

YOUNG_THRESHOLD = 10_000  # allocations between two collections of the youngest generation (CPython: 700)
NEVER = 2**30  # collections of the middle generation before an automatic full one: never, in a build


@contextmanager
def paced() -> Iterator[None]:
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(before[0], YOUNG_THRESHOLD), before[1], NEVER)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()  # a process that goes on (tests, the next range) collects as usual


def collect_old() -> None:
    """A full collection, of what is not frozen: once per window in the stages."""
    gc.collect()
