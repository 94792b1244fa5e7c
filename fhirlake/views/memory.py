"""The Arrow memory pool used for view refreshes.

pyarrow's wheels default to mimalloc. On the project's 2-core VM, reading the same 140k-row part
file cost 33-46 ms of CPU in some processes and 170-210 ms in others with mimalloc, and 48-73 ms
every time with jemalloc. Over whole incremental refreshes the difference is within the machine's
noise (bench/RESULTS.md), but the slow tail is gone, so jemalloc is used where the wheel has it.
Setting ``ARROW_DEFAULT_MEMORY_POOL`` explicitly still wins.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa

_lock = threading.Lock()
_done = False


def prefer_jemalloc() -> None:
    """Make jemalloc pyarrow's default pool for this process (once; no-op where unavailable)."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        _done = True
        if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
            return
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except (NotImplementedError, pa.ArrowNotImplementedError):
            pass
