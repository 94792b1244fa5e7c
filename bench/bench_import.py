"""Import throughput (validation + search indexing + conditional references) against a raw COPY of
the same documents into a bare table.

  python bench/bench_import.py [--folder PATH] [--copies N]
Target (issue 4): >= 5,000 resources/s.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fhirlake.jobs.imports.loader import ImportRun, expand_paths  # noqa: E402
from fhirlake.store.db import make_engine  # noqa: E402
from fhirlake.store.migrate import upgrade  # noqa: E402

PG = os.environ.get("FHIRLAKE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
SYNTHEA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"


def raw_copy(url: str, folder: Path) -> tuple[int, float]:
    lines = [line.rstrip(b"\n").decode() for p in sorted(folder.glob("*.ndjson.gz")) for line in gzip.open(p)]
    start = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bare (doc text)")
        with conn.cursor() as cur, cur.copy("COPY bare (doc) FROM STDIN") as copy:
            for line in lines:
                copy.write_row((line,))
    return len(lines), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", type=Path, default=SYNTHEA)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the importer's own")
    args = ap.parse_args()
    sizing = {"batch_size": args.batch_size} if args.batch_size else {}
    name = f"fhirlake_bench_import_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG}/{name}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        n_raw, raw_s = raw_copy(url, args.folder)
        start = time.perf_counter()
        summary = ImportRun(engine, None, **sizing).load(expand_paths([args.folder]))
        import_s = time.perf_counter() - start
        n = summary.loaded + summary.unchanged
        start = time.perf_counter()
        again = ImportRun(engine, None, **sizing).load(expand_paths([args.folder]))
        reimport_s = time.perf_counter() - start
        engine.dispose()
        print(f"resources: {n} (errors {summary.errors})")
        print(f"raw COPY into a bare table: {n_raw / raw_s:,.0f} documents/s")
        print(f"import (validate + index + write): {n / import_s:,.0f} resources/s ({import_s:.1f} s),"
              f" ratio to raw COPY {raw_s / import_s:.3f}")
        print(f"re-import of unchanged files: {(again.unchanged) / reimport_s:,.0f} resources/s, {again.loaded} rewritten")
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
