"""Typical patient-app searches against a database filled by bench/scale_synthea.py.

  python bench/bench_search.py --url postgresql://postgres@127.0.0.1:5432/fhirlake_bench --runs 200
Prints p50/p99 per query (target: p50 < 10 ms, p99 < 50 ms), `_total=accurate` over all
Observations (target < 1 s at 500k), and EXPLAIN ANALYZE of the slowest query's SQL.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from sqlalchemy import text

from fhirlake.search import service
from fhirlake.search.service import SearchRequest, search
from fhirlake.store.db import make_engine

BASE = "http://bench/fhir"


def sample_values(conn, n: int) -> list[dict]:
    rng = random.Random(1)
    patients = [r[0] for r in conn.execute(text("SELECT res_id FROM resource WHERE res_type = 'Patient' ORDER BY rid LIMIT 2000"))]
    out = []
    for pid in rng.sample(patients, min(n, len(patients))):
        code = conn.execute(text(
            "SELECT t.code FROM sp_reference r JOIN resource o ON o.rid = r.rid JOIN sp_token t ON t.rid = r.rid"
            " WHERE r.target_type = 'Patient' AND r.target_id = :p AND o.res_type = 'Observation'"
            " AND t.system = 'http://loinc.org' LIMIT 1"), {"p": pid}).scalar() or "8302-2"
        name, birth = conn.execute(text(
            "SELECT v.content::jsonb #>> '{name,0,family}', v.content::jsonb ->> 'birthDate' FROM resource r"
            " JOIN resource_version v ON v.rid = r.rid AND v.version = r.version WHERE r.res_type = 'Patient' AND r.res_id = :p"),
            {"p": pid}).one()
        out.append({"pid": pid, "code": code, "name": name[:4], "birth": birth})
    return out


QUERIES = {
    "Observation?patient&code&date&_sort=-date": lambda v: ("Observation", [("patient", v["pid"]), ("code", f"http://loinc.org|{v['code']}"),
                                                                          ("date", "ge2010-01-01"), ("_sort", "-date")]),
    "Condition?patient&clinical-status=active": lambda v: ("Condition", [("patient", v["pid"]), ("clinical-status", "active")]),
    "Patient?name&birthdate": lambda v: ("Patient", [("name", v["name"]), ("birthdate", v["birth"])]),
    "MedicationRequest?patient&_include=medication": lambda v: ("MedicationRequest", [("patient", v["pid"]),
                                                                                       ("_include", "MedicationRequest:medication")]),
    "Observation?patient&_sort=-date (first page)": lambda v: ("Observation", [("patient", v["pid"]), ("_sort", "-date")]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/fhirlake_bench")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    engine = make_engine(args.url)
    with engine.connect() as conn:
        values = sample_values(conn, 50)
        counts = dict(conn.execute(text("SELECT res_type, count(*) FROM resource GROUP BY 1")).all())
        print(f"{sum(counts.values())} resources, {counts.get('Observation', 0)} Observations")
        worst = (0.0, "", None)
        for label, build in QUERIES.items():
            timings = []
            for i in range(args.runs):
                res_type, params = build(values[i % len(values)])
                t0 = time.perf_counter()
                search(conn, SearchRequest(res_type, params, BASE))
                timings.append((time.perf_counter() - t0) * 1000)
            timings.sort()
            p50, p99 = statistics.median(timings), timings[int(len(timings) * 0.99) - 1]
            print(f"{label:55s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
            if p99 > worst[0]:
                worst = (p99, label, build(values[0]))
        t0 = time.perf_counter()
        body = search(conn, SearchRequest("Observation", [("_total", "accurate")], BASE))
        print(f"Observation?_total=accurate: {(time.perf_counter() - t0) * 1000:.0f} ms ({body[:120]!r}...)")
        # EXPLAIN ANALYZE of the slowest: capture the SQL the service runs
        captured: list[tuple[str, object]] = []
        real = conn.exec_driver_sql

        def spy(sql, params=None):
            captured.append((sql, params))
            return real(sql, params)

        conn.exec_driver_sql = spy  # type: ignore[method-assign]
        res_type, params = worst[2]
        service.search(conn, SearchRequest(res_type, params, BASE))
        conn.exec_driver_sql = real  # type: ignore[method-assign]
        print(f"\nEXPLAIN ANALYZE, slowest query ({worst[1]}):")
        for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + captured[0][0], captured[0][1]).all():
            print(row[0])


if __name__ == "__main__":
    main()
