"""Cost of token verification + audit on read-by-id through the real server (issue 7: at most 15%).

One run, one scratch database loaded with a Synthea sample, two gunicorn gthread servers on the same
database (``fhirlake.server.wsgi:app``): (a) auth off, (b) auth on (RS256 bearer token verified against
a local JWKS file, scope check, durable AuditEvent per request). wrk drives both, interleaved round by
round so that load from other processes on the machine hits both alike; medians are reported.

Also reported, from PostgreSQL's own statistics for the scratch database: audit rows written and
commits per request in each configuration (how well the audit writer groups concurrent requests).

    python bench/bench_auth.py [--seconds 10] [--rounds 5] [--connections 16] [--breakdown]

``--breakdown`` adds two auth-on servers whose read skips the audit INSERT (one answers at once, one
first sleeps 0.5 ms without holding the GIL, about what the audited statement's commit keeps a
thread waiting) and prints CPU time per request by process group (gunicorn user/system, PostgreSQL,
everything else) from /proc. It separates what the audit costs PostgreSQL from what waiting for it
costs the GIL-bound workers.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jwt
import psycopg
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bench._common import SHARED, apply_group_commit, gunicorn, scratch_database, wrk
from fhirlake.services.loader import load_folder
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

SAMPLES = SHARED / "synthea" / "msft-anonymization-samples-r4"
ISSUER = "https://issuer.bench.example.org"
AUDIENCE = "https://bench.example.org/r4"


def unaudited_app() -> Any:
    """gunicorn factory: the server with the guard's hooks removed (no authentication, no audit)."""
    from flask import g

    from fhirlake.auth import AccessContext
    from fhirlake.server.wsgi import app

    for hooks in (app.before_request_funcs, app.after_request_funcs):
        hooks[None] = [f for f in hooks.get(None, []) if f.__name__ not in ("_authenticate", "_audit")]

    @app.before_request
    def unrestricted() -> None:
        g.access = AccessContext.unrestricted()

    return app


def _read_without_audit_insert(wait_seconds: float) -> Any:
    """gunicorn factory helper: the full server (token, scopes, guard) whose read by id does not
    insert its audit row, optionally waiting ``wait_seconds`` (GIL released) where the commit was."""
    import fhirlake.services.crud as crud
    from fhirlake.store.resources import read_current

    def read_then_wait(conn: Any, res_type: str, res_id: str, audit_row: dict) -> tuple[Any, int, int]:
        found = read_current(conn, res_type, res_id)
        if wait_seconds:
            time.sleep(wait_seconds)
        return found, 0, 404 if found is None else 410 if found.deleted else 200

    crud.read_current_audited = read_then_wait
    from fhirlake.server.wsgi import app

    return app


def guarded_without_insert_app() -> Any:
    return _read_without_audit_insert(0.0)


def guarded_with_wait_app() -> Any:
    return _read_without_audit_insert(0.0005)


def _cpu_by_group() -> dict[str, int]:
    """Clock ticks used so far by gunicorn (user, system), PostgreSQL and every other process."""
    ticks = {"gunicorn user": 0, "gunicorn sys": 0, "postgres": 0, "other": 0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                name, _, rest = fh.read().rpartition(")")
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue  # the process ended meanwhile
        fields = rest.split()
        user, system = int(fields[11]), int(fields[12])
        if b"gunicorn" in cmdline:
            ticks["gunicorn user"] += user
            ticks["gunicorn sys"] += system
        elif name.endswith("(postgres") or cmdline.startswith(b"postgres"):
            ticks["postgres"] += user + system
        else:
            ticks["other"] += user + system
    return ticks


def _ids(resource_type: str) -> list[str]:
    with gzip.open(SAMPLES / f"{resource_type}.ndjson.gz", "rt") as fh:
        return [f"/{resource_type}/{json.loads(line)['id']}" for line in fh if line.strip()]


def _signing_material(folder: Path) -> tuple[Path, str]:
    """A JWKS file with one RS256 key, and a long-lived system token signed with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "RS256", "use": "sig"}
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-client", "client_id": "bench-client",
              "scope": "system/*.rs", "iat": now, "exp": now + 3600}
    return jwks, jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


def _lua(folder: Path, paths: list[str], token: str | None) -> Path:
    script = folder / ("auth.lua" if token else "plain.lua")
    header = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    script.write_text(
        header + "local paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n"
        "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
    )
    return script


def _pg_counters(url: str) -> tuple[int, int]:
    """(committed transactions, audit rows) of the scratch database."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM audit_event").fetchone()[0]
    return int(commits), int(rows)


def _measured(url: str, db_url: str, lua: Path, seconds: int, connections: int) -> dict[str, Any]:
    time.sleep(1.0)  # let the statistics collector catch up with the previous run
    commits0, rows0 = _pg_counters(db_url)
    cpu0 = _cpu_by_group()
    result = wrk(url, lua, seconds=seconds, connections=connections)
    cpu1 = _cpu_by_group()
    time.sleep(1.5)  # outcome updates are asynchronous; statistics are flushed about once a second
    commits1, rows1 = _pg_counters(db_url)
    requests = max(1, round(result["rps"] * seconds))
    result["commits_per_request"] = (commits1 - commits0) / requests
    result["audit_rows_per_request"] = (rows1 - rows0) / requests
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    result["cpu_us"] = {group: (cpu1[group] - cpu0[group]) * tick_us / requests for group in cpu0}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--breakdown", action="store_true", help="add the no-INSERT servers and CPU per request")
    args = parser.parse_args()

    with scratch_database("fhirlake_bench_auth") as url, tempfile.TemporaryDirectory() as tmp:
        apply_group_commit(url)  # the same settings for every configuration compared
        folder = Path(tmp)
        engine = make_engine(url)
        upgrade(engine)
        load_folder(engine, SAMPLES)
        engine.dispose()
        paths = _ids("Patient") + _ids("Observation")[:2000]
        jwks, token = _signing_material(folder)
        plain_lua, auth_lua = _lua(folder, paths, None), _lua(folder, paths, token)
        base_env = {"FHIRLAKE_DATABASE_URL": url, "FHIRLAKE_AUTH_ENABLED": "false",
                    "FHIRLAKE_AUTH_ISSUER": "", "FHIRLAKE_AUTH_JWKS": ""}
        auth_env = {"FHIRLAKE_DATABASE_URL": url, "FHIRLAKE_AUTH_ENABLED": "true", "FHIRLAKE_AUTH_ISSUER": ISSUER,
                    "FHIRLAKE_AUTH_JWKS": str(jwks), "FHIRLAKE_AUTH_AUDIENCE": AUDIENCE}
        configs = {  # name -> (gunicorn app, environment, wrk script)
            "no auth, no audit": ("bench.bench_auth:unaudited_app()", base_env, plain_lua),
            "auth off (anonymous accesses audited)": ("fhirlake.server.wsgi:app", base_env, plain_lua),
            "auth on (token + scope + audit)": ("fhirlake.server.wsgi:app", auth_env, auth_lua),
        }
        if args.breakdown:
            configs["auth on, read without audit INSERT"] = ("bench.bench_auth:guarded_without_insert_app()",
                                                             auth_env, auth_lua)
            configs["auth on, no INSERT, 0.5 ms wait instead"] = ("bench.bench_auth:guarded_with_wait_app()",
                                                                   auth_env, auth_lua)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
        with ExitStack() as stack:
            servers = {name: stack.enter_context(gunicorn(app, env)) for name, (app, env, _) in configs.items()}
            for name, (_, _, lua) in configs.items():  # warm-up: pools, caches, first connections
                warm = wrk(servers[name], lua, seconds=2, connections=args.connections)
                if warm.get("non2xx"):
                    raise SystemExit(f"{name}: non-2xx answers:\n" + warm["raw"])
            for _ in range(args.rounds):  # interleaved, so drift in machine load hits all alike
                for name, (_, _, lua) in configs.items():
                    runs[name].append(_measured(servers[name], url, lua, args.seconds, args.connections))

        print(f"read-by-id, gunicorn gthread 2x8, wrk {args.connections} connections, "
              f"{args.seconds}s x {args.rounds} rounds (median):")
        medians: dict[str, float] = {}
        for name, results in runs.items():
            for r in results:
                if r.get("non2xx"):
                    raise SystemExit(f"{name}: {r['non2xx']} non-2xx answers")
            medians[name] = statistics.median(r["rps"] for r in results)
            print(f"  {name}:\n    {medians[name]:7.0f} req/s  (rounds: "
                  f"{', '.join(str(round(r['rps'])) for r in results)})"
                  f"  p50 {statistics.median(r.get('p50', 0) for r in results):5.2f} ms"
                  f"  p99 {statistics.median(r.get('p99', 0) for r in results):6.2f} ms"
                  f"  commits/request {statistics.median(r['commits_per_request'] for r in results):.3f}"
                  f"  audit rows/request {statistics.median(r['audit_rows_per_request'] for r in results):.3f}")
            if args.breakdown:
                print("    CPU per request (median, us): " + ", ".join(
                    f"{group} {statistics.median(r['cpu_us'][group] for r in results):.0f}"
                    for group in results[0]["cpu_us"]))
        base, anonymous, full = (medians[name] for name in list(configs)[:3])
        print(f"  audit alone (auth off vs no audit):               {100 * (base - anonymous) / base:5.1f}%")
        print(f"  token verification + audit (auth on vs neither):  {100 * (base - full) / base:5.1f}%"
              "  (target <= 15%)")
        for name in list(configs)[3:]:
            print(f"  {name} vs neither:  {100 * (base - medians[name]) / base:5.1f}%")


if __name__ == "__main__":
    main()
