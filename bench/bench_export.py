"""$export throughput against a raw COPY of the same rows, and the worker's peak memory.

  python bench/bench_export.py                       # scratch database loaded with the 100-patient set
  python bench/bench_export.py --url postgresql://...  # an existing database (e.g. 1M resources from
                                                       # bench/scale_synthea.py)
Targets (issue 4): >= 40,000 resources/s kick-off to last file, >= 0.6 of raw COPY, worker < 300 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fhirlake.jobs import queue  # noqa: E402
from fhirlake.jobs.export.params import parse_export  # noqa: E402
from fhirlake.store.db import make_engine  # noqa: E402
from fhirlake.store.migrate import upgrade  # noqa: E402

PG = os.environ.get("FHIRLAKE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
SYNTHEA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"


def raw_copy(url: str, out: Path) -> tuple[int, float]:
    start = time.perf_counter()
    rows = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur, out.open("wb") as f:
        with cur.copy("COPY (SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid"
                      " AND v.version = r.version WHERE NOT r.deleted) TO STDOUT") as copy:
            for data in copy:
                f.write(data)
                rows += 1
    return rows, time.perf_counter() - start


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="an existing database with data")
    args = ap.parse_args()
    created = None
    url = args.url
    if url is None:
        created = f"fhirlake_bench_export_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{created}"')
        url = f"{PG}/{created}"
    engine = make_engine(url)
    upgrade(engine)
    try:
        if created:
            from fhirlake.jobs.imports.loader import ImportRun, expand_paths

            ImportRun(engine, None).load(expand_paths([SYNTHEA]))
        with tempfile.TemporaryDirectory() as tmp:
            rows, raw_s = raw_copy(url, Path(tmp) / "raw.ndjson")
            env = {**os.environ, "FHIRLAKE_DATABASE_URL": url, "FHIRLAKE_DATA_DIR": tmp,
                   "FHIRLAKE_JOB_IDLE_POLL_SECONDS": "0.02", "PYTHONPATH": str(REPO)}
            worker = subprocess.Popen([sys.executable, "-m", "fhirlake.cli.main", "worker", "--kind", "export"],
                                      env=env, cwd=REPO)
            time.sleep(2)  # let the worker import everything before the clock starts
            req = parse_export([], level="system", request_url="bench", base_url="")
            start = time.perf_counter()
            with engine.begin() as conn:
                job_id = queue.enqueue(conn, "export", req.to_json())
            while True:
                with engine.connect() as conn:
                    job = queue.get(conn, job_id)
                if job.status not in queue.ACTIVE:
                    break
                time.sleep(0.01)
            export_s = time.perf_counter() - start
            peak = peak_rss_mb(worker.pid)
            worker.terminate()
            worker.wait(15)
            assert job.status == "completed", job.error
            exported = sum(f["count"] for f in job.result["output"])
            assert exported == rows, (exported, rows)
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        print(f"resources: {rows}")
        print(f"raw COPY: {rows / raw_s:,.0f} resources/s ({raw_s:.2f} s)")
        print(f"$export kick-off to last file: {rows / export_s:,.0f} resources/s ({export_s:.2f} s),"
              f" ratio to raw COPY {raw_s / export_s:.2f}")
        print(f"worker peak memory: {peak:.0f} MB")
    finally:
        engine.dispose()
        if created:
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')


if __name__ == "__main__":
    main()
