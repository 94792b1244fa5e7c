"""Cost of authentication + authorization + audit on read-by-id (issue 7: at most 15%).

Runs the real Flask app over a fresh PostgreSQL database loaded with the Synthea sample, and
reads resources by id from several threads twice in the same run: without auth, then with a
before/after-request guard doing exactly what the server does per request (verify the bearer token,
check the scope, compute the access constraint, persist the AuditEvent through the group-commit
writer). Also reports the raw cost of one full token verification (no cache) and of one audit
record written alone.

    python bench/bench_auth.py [--requests 3000] [--threads 4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

from flask import Flask, g, request
from sqlalchemy import create_engine, text

from fhirlake.api.app import create_app
from fhirlake.audit import AuditRecord, AuditWriter
from fhirlake.auth import AuthConfig, Authenticator
from fhirlake.config import Settings
from fhirlake.services.loader import load_folder
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "synthea" / "msft-anonymization-samples-r4"
ADMIN_URL = os.environ.get("FHIRLAKE_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def ids_of(resource_type: str) -> list[str]:
    with gzip.open(SAMPLES / f"{resource_type}.ndjson.gz", "rt") as fh:
        return [json.loads(line)["id"] for line in fh if line.strip()]


def guard(app: Flask, auth: Authenticator, audit: AuditWriter | None) -> None:
    @app.before_request
    def authenticate() -> None:
        ctx = auth.authenticate(request.headers.get("Authorization"))
        resource_type = request.path.strip("/").split("/")[0]
        ctx.require("read", resource_type)
        g.access = ctx.access_constraint(resource_type, "read")
        g.ctx = ctx

    @app.after_request
    def record(response):  # noqa: ANN001, ANN202
        if audit is None:
            return response
        parts = request.path.strip("/").split("/")
        audit.record(
            AuditRecord.for_request(
                g.ctx,
                "read",
                response.status_code,
                parts[0],
                parts[1:2],
                request.args.keys(),
                request.remote_addr,
            )
        )
        return response


def hammer(app: Flask, paths: list[str], threads: int, header: dict[str, str]) -> float:
    chunks = [paths[i::threads] for i in range(threads)]
    failures: list[int] = []

    def work(chunk: list[str]) -> None:
        client = app.test_client()
        for path in chunk:
            status = client.get(path, headers=header).status_code
            if status != 200:
                failures.append(status)

    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} failed requests, e.g. HTTP {failures[0]}")
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    name = f"fhirlake_bench_auth_{secrets.token_hex(4)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(ADMIN_URL.rsplit("/", 1)[0] + "/" + name, pool_size=args.threads + 2)
    try:
        upgrade(engine)
        load_folder(engine, SAMPLES)
        ids = [f"/Patient/{i}" for i in ids_of("Patient")] + [
            f"/Observation/{i}" for i in ids_of("Observation")
        ]
        paths = [ids[i % len(ids)] for i in range(args.requests)]
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                base_url="https://bench.example.org/r4", data_dir=Path(tmp), auth_enabled=True
            )
            auth = Authenticator(AuthConfig.from_settings(settings), engine)
            audit = AuditWriter(engine)
            token, _ = auth.issue_access_token("bench-client", "system/*.rs")
            header = {"Authorization": "Bearer " + token}
            plain = create_app(settings, engine)
            guarded = create_app(settings, engine)
            guard(guarded, auth, audit)
            token_only = create_app(settings, engine)
            guard(token_only, auth, None)
            relaxed_audit = AuditWriter(engine, synchronous=False)
            relaxed = create_app(settings, engine)
            guard(relaxed, auth, relaxed_audit)
            hammer(plain, paths[:200], args.threads, {})  # warm up pools and caches
            hammer(guarded, paths[:200], args.threads, header)
            without, with_auth, with_token, with_relaxed = [], [], [], []
            for _ in range(args.rounds):  # interleaved, so drift hits all alike
                without.append(hammer(plain, paths, args.threads, {}))
                with_token.append(hammer(token_only, paths, args.threads, header))
                with_auth.append(hammer(guarded, paths, args.threads, header))
                with_relaxed.append(hammer(relaxed, paths, args.threads, header))
            batches_before, records_before = audit.batches, audit.records

            n = 300
            start = time.perf_counter()
            for _ in range(n):
                auth.verify(token)
            verify_us = (time.perf_counter() - start) / n * 1e6
            start = time.perf_counter()
            for _ in range(n):
                audit.record(AuditRecord("read", 200, "Patient", ("x",), client_id="bench-single"))
            audit_us = (time.perf_counter() - start) / n * 1e6
            audit.close()
            relaxed_audit.close()
        a, b, c = statistics.median(without), statistics.median(with_auth), statistics.median(with_token)
        print(
            f"read-by-id, {args.threads} threads, {args.requests} requests x {args.rounds} rounds (median):"
        )
        print(f"  without auth:                  {a:8.0f} req/s")
        print(f"  token + scope check, no audit: {c:8.0f} req/s   overhead {100 * (a - c) / a:5.1f}%")
        print(f"  token + scope + durable audit: {b:8.0f} req/s   overhead {100 * (a - b) / a:5.1f}%")
        d = statistics.median(with_relaxed)
        print(f"  same, audit synchronous=False: {d:8.0f} req/s   overhead {100 * (a - d) / a:5.1f}%")
        print(f"  audit group commit: {records_before} records in {batches_before} commits")
        print(f"  one full token verification (RS384, no cache): {verify_us:6.0f} us")
        print(f"  one audit record alone (commit each): {audit_us:6.0f} us")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
