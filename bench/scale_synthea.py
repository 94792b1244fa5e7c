"""Load the 100-patient Synthea set into PostgreSQL again and again under new ids (references
rewritten) until about N patients are stored, indexing as the store does.

  python bench/scale_synthea.py --url postgresql://postgres@127.0.0.1:5432/fhirlake_bench --patients 200
(~280 resources per patient: 3,600 patients is about 1M resources.) Creates and migrates the
database if needed; prints load and index-extraction rates.
"""

from __future__ import annotations

import argparse
import gzip
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy import create_engine, text

from fhirlake.search.index import extract_rows, write_rows
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def load_lines() -> list[bytes]:
    return [line.rstrip(b"\n") for p in sorted(SYNTHEA.glob("*.ndjson.gz")) for line in gzip.open(p) if line.strip()]


def ensure_database(url: str) -> None:
    server, name = url.rsplit("/", 1)
    admin = create_engine(server.replace("postgresql://", "postgresql+psycopg://") + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/fhirlake_bench")
    ap.add_argument("--patients", type=int, default=3600)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()
    ensure_database(args.url)
    engine = make_engine(args.url)
    upgrade(engine)
    lines = load_lines()
    copies = max(1, args.patients // 100)
    with engine.connect() as conn:
        done_copies = conn.execute(text("SELECT count(*) FROM resource WHERE res_type = 'Patient'")).scalar() // 100
    extract_seconds = total = 0
    started = time.perf_counter()
    for copy_no in range(done_copies, copies):
        # every UUID (ids and the references to them) gets a per-copy prefix
        tag = f"{copy_no:08x}".encode()
        resources = [orjson.loads(UUID.sub(lambda m, t=tag: t + m.group(0)[8:], line)) for line in lines]
        now = datetime.now(UTC)
        with engine.begin() as conn:
            for i in range(0, len(resources), args.batch):
                chunk = resources[i:i + args.batch]
                rows = conn.exec_driver_sql(
                    "INSERT INTO resource (res_type, res_id, version, seq, last_updated, deleted)"
                    " SELECT t, i, 1, nextval('change_seq'), %(w)s, false FROM unnest(%(t)s::text[], %(i)s::text[])"
                    " WITH ORDINALITY AS u(t, i, n) ORDER BY n RETURNING rid, seq",
                    {"t": [r["resourceType"] for r in chunk], "i": [r["id"] for r in chunk], "w": now},
                ).all()
                conn.exec_driver_sql(
                    "INSERT INTO resource_version (rid, version, res_type, res_id, seq, last_updated, method, content)"
                    " SELECT r, 1, t, i, s, %(w)s, 'create', c FROM unnest(%(r)s::bigint[], %(t)s::text[], %(i)s::text[],"
                    " %(s)s::bigint[], %(c)s::text[]) AS u(r, t, i, s, c)",
                    {"r": [r[0] for r in rows], "t": [r["resourceType"] for r in chunk], "i": [r["id"] for r in chunk],
                     "s": [r[1] for r in rows], "w": now, "c": [orjson.dumps(r).decode() for r in chunk]},
                )
                t0 = time.perf_counter()
                index_rows = extract_rows([(row[0], r["resourceType"], r) for row, r in zip(rows, chunk, strict=True)])
                extract_seconds += time.perf_counter() - t0
                write_rows(conn, index_rows)
        total += len(resources)
        elapsed = time.perf_counter() - started
        print(f"copy {copy_no + 1}/{copies}: {total} resources, {total / elapsed:.0f}/s overall,"
              f" extraction {total / extract_seconds:.0f}/s", flush=True)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


if __name__ == "__main__":
    main()
