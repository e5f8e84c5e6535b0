"""Freed memory handed back to the operating system: Arrow on the C heap, and the heap trimmed
between the phases of a build.

Arrow's default pool in the Linux wheels is its bundled mimalloc, which keeps freed pages per
thread: reading the 32 row groups of a 100,000-seed build's sft split (8 MB of Arrow memory at
most) leaves 165 MB resident with mimalloc and 80 MB with the system allocator (apache/arrow
pitrou's report in microsoft/mimalloc#1111 shows the same). With the system allocator, Arrow's
freed memory is glibc's, which malloc_trim returns.

glibc keeps the memory a process frees in its arenas for reuse, and a build's stages free a lot
of it (rows, HTTP buffers, JSON) in several threads' arenas. The phases that follow (splits,
reports, exports) allocate in other patterns, so without a trim the peak RSS is the stages' heap
plus theirs. malloc_trim(0) returns every free page; elsewhere than glibc this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import pyarrow as pa


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


def release_freed_memory() -> None:
    """Return the free pages of the C heap and of Arrow's memory pool to the operating system."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def use_system_allocator() -> None:
    """Arrow allocates with the C library's malloc, unless the user chose a pool with Arrow's own
    ARROW_DEFAULT_MEMORY_POOL."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
