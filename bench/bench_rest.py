"""REST core benchmarks (issue 2), each against its baseline in the same run.

1. Read by id at 16 concurrent clients (wrk): fhirlake vs a bare Flask route doing the same SELECT.
2. Transaction bundles of 100 Synthea resources (validation + search indexing on) vs raw COPY of the
   same JSON into a bare table.

Run:  python bench/bench_rest.py [--seconds 15] [--bundles 100]
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psycopg

from bench._common import SHARED, apply_group_commit, gunicorn, scratch_database, wrk
from fhirlake.services.loader import load_folder
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

SYNTHEA_100 = SHARED / "synthea" / "smart-generated-sample-data-r4-100"


def _resources() -> list[dict]:
    out = []
    for path in sorted(SYNTHEA_100.glob("*.ndjson.gz")):
        with gzip.open(path) as handle:
            out += [orjson.loads(line) for line in handle if line.strip()]
    return out


def bench_reads(url: str, seconds: int) -> dict:
    apply_group_commit(url)  # the same settings for fhirlake and the baseline
    engine = make_engine(url)
    upgrade(engine)
    load_folder(engine, SYNTHEA_100)
    with engine.connect() as conn:
        from sqlalchemy import text

        ids = [r[0] for r in conn.execute(text("SELECT res_type || '/' || res_id FROM resource LIMIT 20000"))]
    engine.dispose()
    random.seed(7)
    sample = random.sample(ids, min(5000, len(ids)))
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(
        "local paths = {" + ",".join(f'"/{p}"' for p in sample) + "}\n"
        "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
    )
    env = {"FHIRLAKE_DATABASE_URL": url}
    results = {}
    for name, app in (("baseline", "bench.baseline_app:app"), ("fhirlake", "fhirlake.server.wsgi:app")):
        with gunicorn(app, env) as base:
            wrk(base, lua, seconds=3)  # warm-up
            results[name] = wrk(base, lua, seconds=seconds)
    return results


def bench_transactions(url: str, n_bundles: int) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    resources = _resources()
    bundles = []
    for start in range(0, min(len(resources), n_bundles * 100), 100):
        chunk = resources[start:start + 100]
        bundles.append(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r,
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in chunk]}))
    total = sum(len(orjson.loads(b)["entry"]) for b in bundles)
    with gunicorn("fhirlake.server.wsgi:app", {"FHIRLAKE_DATABASE_URL": url}) as base:
        def post(body: bytes) -> int:
            with httpx.Client(timeout=120) as c:
                r = c.post(base + "/", content=body, headers={"Content-Type": "application/fhir+json",
                                                               "Prefer": "return=minimal"})
                assert r.status_code == 200, r.text[:300]
                return 1
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, bundles))
        elapsed = time.perf_counter() - t0
    # baseline: COPY the same JSON documents into a bare table
    docs = [orjson.dumps(r).decode() for r in resources[:total]]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bare (content text)")
        buf = io.StringIO()
        t1 = time.perf_counter()
        with conn.cursor().copy("COPY bare (content) FROM STDIN") as copy:
            for d in docs:
                copy.write_row((d,))
        conn.commit()
        copy_elapsed = time.perf_counter() - t1
        del buf
    return {"resources": total, "seconds": elapsed, "rate": total / elapsed,
            "copy_rate": total / copy_elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--bundles", type=int, default=150)
    parser.add_argument("--skip-reads", action="store_true", help="only the transaction benchmark")
    args = parser.parse_args()
    if not args.skip_reads:
        with scratch_database() as url:
            reads = bench_reads(url, args.seconds)
        for name, r in reads.items():
            print(f"read-by-id {name:9s}: {r['rps']:8.0f} req/s  p50 {r.get('p50', 0):6.2f} ms"
                  f"  p99 {r.get('p99', 0):6.2f} ms  non-2xx {r.get('non2xx', 0)}")
        print(f"read-by-id fhirlake/baseline throughput ratio: {reads['fhirlake']['rps'] / reads['baseline']['rps']:.2f}")
    with scratch_database() as url:
        tx = bench_transactions(url, args.bundles)
    print(f"transaction bundles (100 resources, validation+indexing): {tx['rate']:8.0f} resources/s "
          f"({tx['resources']} in {tx['seconds']:.1f} s)")
    print(f"raw COPY of the same JSON: {tx['copy_rate']:8.0f} resources/s; ratio {tx['rate'] / tx['copy_rate']:.3f}")


if __name__ == "__main__":
    main()
