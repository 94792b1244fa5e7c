"""View refreshes run on jemalloc where pyarrow has it (fhirlake.views.memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa


def _jemalloc_available() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return False
    return True


def test_refresh_process_uses_jemalloc_unless_told_otherwise() -> None:
    code = ("import pyarrow as pa; from fhirlake.views.memory import prefer_jemalloc; prefer_jemalloc();"
            " print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert chosen.stdout.strip() == ("jemalloc" if _jemalloc_available() else pa.default_memory_pool().backend_name)
    told = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**env, "ARROW_DEFAULT_MEMORY_POOL": "system"})
    assert told.stdout.strip() == "system"
