"""Benchmark: refresh the view catalog from PostgreSQL into the Parquet lake, full and incremental.

    python bench/bench_view_refresh.py                       # 1 copy of the 100-patient Synthea set
    python bench/bench_view_refresh.py --copies 40           # ~1.1M resources (ids rewritten per copy)
    python bench/bench_view_refresh.py --database-url postgresql://... --no-load

Targets (issue 5): full refresh >= 50,000 resources/s; incremental refresh after changing 1% of
the resources (updates of fields the views read, deletes, creates) < 5% of the full refresh time;
both measured in the same run, each from PostgreSQL to published Parquet. Resources/s counts the live resources of the types
the catalog reads (each read once, however many views use it).

Without --database-url a temporary database is created on FHIRLAKE_TEST_PG (default
postgresql://postgres@127.0.0.1:5432) and dropped at the end.
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fhirlake.store.db import make_engine  # noqa: E402
from fhirlake.store.migrate import upgrade  # noqa: E402
from fhirlake.store.resources import WriteOp, write_resources  # noqa: E402
from fhirlake.views.catalog import load_catalog  # noqa: E402
from fhirlake.views.refresh import refresh_views  # noqa: E402

SYNTHEA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(rb"(T\d\d:)(\d\d):(\d\d)")


def _copy_line(line: bytes, copy: int) -> bytes:
    """The same resource under ids unique to ``copy`` (references rewritten alike, so views still join),
    its times of day moved by ``copy`` seconds and minutes (copies would otherwise share every
    timestamp, which real patients do not: it would flatter the dictionary encoding of the lake)."""
    if copy == 0:
        return line
    suffix = f"{copy:04x}".encode()
    line = UUID.sub(lambda m: m.group(0)[:-4] + suffix, line)
    return TIME.sub(lambda m: b"%s%02d:%02d" % (m.group(1), (int(m.group(2)) + copy) % 60,
                                               (int(m.group(3)) + copy) % 60), line)


def load(engine, types: set[str], copies: int, batch: int = 2000) -> int:  # noqa: ANN001
    total = 0
    for path in sorted(SYNTHEA.glob("*.ndjson.gz")):
        if path.name.split(".", 1)[0] not in types:
            continue
        lines = [line for line in gzip.open(path, "rb").read().splitlines() if line.strip()]
        for copy in range(copies):
            ops = []
            for line in lines:
                resource = orjson.loads(_copy_line(line, copy))
                ops.append(WriteOp(resource["resourceType"], resource["id"], resource))
                if len(ops) >= batch:
                    total += _write(engine, ops)
            total += _write(engine, ops)
        print(f"  loaded {path.name} x{copies}", flush=True)
    return total


def _write(engine, ops: list[WriteOp]) -> int:  # noqa: ANN001
    if not ops:
        return 0
    with engine.begin() as conn:
        write_resources(conn, ops, index=False)  # views read content; the search index is not needed here
    n = len(ops)
    ops.clear()
    return n


def _visibly_changed(resource: dict) -> dict:
    """A new version whose rows differ: a field the catalog views read changes."""
    resource.setdefault("meta", {}).setdefault("tag", []).append({"code": "bench-changed"})
    if "status" in resource:
        resource["status"] = "entered-in-error"
    elif resource["resourceType"] == "Patient":
        resource["gender"] = "unknown" if resource.get("gender") != "unknown" else "other"
    else:
        resource["recordedDate"] = "2001-02-03"  # Condition, AllergyIntolerance
    return resource


def change_fraction(engine, types: list[str], fraction: float, seed: int = 7) -> dict[str, int]:  # noqa: ANN001
    """Change ``fraction`` of the live resources of ``types``: 80% updates (a field the views read
    changes), 10% deletes, and as many creates (copies under new ids) as the remaining 10%."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT v.res_type, v.res_id, v.content FROM resource r JOIN resource_version v"
            " ON v.rid = r.rid AND v.version = r.version WHERE NOT r.deleted AND r.res_type = ANY(:t)"), {"t": types}).all()
    rng = random.Random(seed)
    chosen = rng.sample(rows, max(1, int(len(rows) * fraction)))
    counts = {"update": 0, "delete": 0, "create": 0}
    ops = []
    for i, (res_type, res_id, content) in enumerate(chosen):
        kind = ("update",) * 8 + ("delete", "create")
        op = kind[i % len(kind)]
        resource = orjson.loads(content)
        if op == "update":
            ops.append(WriteOp(res_type, res_id, _visibly_changed(resource)))
        elif op == "delete":
            ops.append(WriteOp(res_type, res_id, None))
        else:
            resource["id"] = str(uuid.uuid4())
            ops.append(WriteOp(res_type, resource["id"], resource))
        counts[op] += 1
        if len(ops) >= 2000:
            _write(engine, ops)
    _write(engine, ops)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1, help="copies of the 100-patient set to load")
    parser.add_argument("--database-url", default=None, help="use this database instead of a temporary one")
    parser.add_argument("--no-load", action="store_true", help="the database already holds the data")
    parser.add_argument("--fraction", type=float, default=0.01, help="share of resources changed before the incremental run")
    args = parser.parse_args()

    import os

    catalog = load_catalog()
    types = sorted({v["resource"] for v in catalog.values()})
    temp_db = None
    url = args.database_url
    if url is None:
        server = os.environ.get("FHIRLAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
        temp_db = f"fhirlake_bench_views_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{temp_db}"')
        url = f"{server}/{temp_db}"
    engine = make_engine(url, pool_size=4)
    lake = Path(tempfile.mkdtemp(prefix="fhirlake-bench-lake-"))
    try:
        upgrade(engine)
        if not args.no_load:
            started = time.perf_counter()
            loaded = load(engine, set(types), args.copies)
            print(f"loaded {loaded} resources in {time.perf_counter() - started:.1f}s")
        with engine.connect() as conn:
            live = conn.execute(text("SELECT count(*) FROM resource WHERE NOT deleted AND res_type = ANY(:t)"),
                                {"t": types}).scalar_one()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE resource"))
            conn.execute(text("VACUUM ANALYZE resource_version"))

        started = time.perf_counter()
        results = refresh_views(engine, lake, full=True)
        full_seconds = time.perf_counter() - started
        rows = sum(r.rows for r in results)
        print(f"full refresh: {live} resources of {len(types)} types -> {len(results)} views, {rows} rows,"
              f" {full_seconds:.2f}s, {live / full_seconds:,.0f} resources/s (target >= 50,000)")

        changed = change_fraction(engine, types, args.fraction)
        started = time.perf_counter()
        results = refresh_views(engine, lake)
        incremental_seconds = time.perf_counter() - started
        evaluated = sum(r.resources for r in results)
        ratio = incremental_seconds / full_seconds
        described = ", ".join(f"{n} {k}s" for k, n in changed.items())
        print(f"incremental refresh after changing {sum(changed.values())} resources ({args.fraction:.0%}: {described}): "
              f"{incremental_seconds:.2f}s ({evaluated} evaluations), {ratio:.1%} of the full refresh (target < 5%)")
        for r in sorted(results, key=lambda r: -r.seconds)[:5]:
            print(f"    {r.name:<24} {r.mode:<12} {r.resources:>8} evaluated {r.removed:>8} removed {r.seconds:6.2f}s")
    finally:
        engine.dispose()
        shutil.rmtree(lake, ignore_errors=True)
        if temp_db is not None:
            with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{temp_db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
