"""trace-build. What every process that uses the package does first, before any Parquet is read:
Arrow allocates on the C heap, so that the memory a build frees goes back (flows/heap.py)."""
from flows.heap import use_system_allocator

use_system_allocator()
