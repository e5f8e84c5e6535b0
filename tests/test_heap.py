"""flows/heap.py: Arrow on the system allocator, and freed heap memory returned to the system.
Each check runs in a fresh interpreter, so the memory pool and RSS are that process's own."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def _python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | env
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environ, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


POOL = "import flows.store, pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def test_arrow_allocates_with_the_system_allocator_once_the_store_is_imported():
    assert _python(POOL) == "system"


def test_a_pool_the_user_chose_is_kept():
    assert _python(POOL, ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"


def test_release_freed_memory_returns_the_freed_heap():
    """200 MB of 1 KB objects freed below a live one stay in glibc's heap (free() only trims the
    top of it); release_freed_memory hands them back."""
    code = """
from flows.heap import release_freed_memory
def rss_mb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024
blocks = [bytes(1024) for _ in range(200_000)]
keep = bytes(1024)
del blocks
before = rss_mb()
release_freed_memory()
print(before, rss_mb())
"""
    before, after = map(int, _python(code).split())
    assert before - after > 150, (before, after)
