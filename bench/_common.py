"""Shared helpers for the benchmark scripts: a scratch database and server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PG_SERVER = os.environ.get("FHIRLAKE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


@contextmanager
def scratch_database(prefix: str = "fhirlake_bench"):  # noqa: ANN201
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(app: str, env: dict[str, str], workers: int = 2, threads: int = 8):  # noqa: ANN201
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(workers), "--threads", str(threads),
         "-b", f"127.0.0.1:{port}", "--log-level", "warning", app],
        env={**os.environ, **env}, cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/health-not-there", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wrk(url: str, lua: Path, seconds: int = 15, connections: int = 16, threads: int = 2) -> dict:
    """Run wrk and return requests/s and latency percentiles (ms)."""
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(lua), url], capture_output=True, text=True, check=True).stdout
    result: dict = {"raw": out}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            result[f"p{parts[0][:-1]}"] = _ms(parts[1])
        elif "Non-2xx" in line:
            result["non2xx"] = int(parts[-1])
    return result


def _ms(value: str) -> float:
    for suffix, factor in (("ms", 1.0), ("us", 0.001), ("s", 1000.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


# PostgreSQL group-commit settings recommended for fhirlake (README, "Production"): a committing
# backend waits up to 300 µs for others so that one WAL flush serves many audited requests.
GROUP_COMMIT = {"commit_delay": "300", "commit_siblings": "2"}


def apply_group_commit(url: str) -> None:
    """Set the recommended group-commit parameters on the benchmark's database (needs superuser)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        for key, value in GROUP_COMMIT.items():
            conn.execute(f'ALTER DATABASE "{name}" SET {key} = {value}')
