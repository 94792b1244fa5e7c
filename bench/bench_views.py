"""Benchmark: the catalog's observation view from NDJSON bytes in memory to Arrow.

Compares the vectorized back end, the closure back end, and a row-by-row evaluation of the same
column paths with fhirpathpy (getResourceKey()/getReferenceKey() become `id`/`reference`, which
fhirpathpy lacks). Run: python bench/bench_views.py [--repeat N] [--fhirpathpy-sample N]
Pin to one core for the single-core figure: taskset -c 0 python bench/bench_views.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow as pa  # noqa: E402

from fhirlake.views import compile_view  # noqa: E402
from fhirlake.views.ndjson import evaluate_lines_with_closures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100" / "Observation.ndjson.gz"


def best_rate(fn, count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def fhirpathpy_rows(definition: dict, resources: list[dict]) -> int:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    def plain(path: str) -> str:
        path = path.replace("getResourceKey()", "id")
        return re.sub(r"\.getReferenceKey\(\w*\)", ".reference", path)

    columns = [col for sel in definition["select"] for col in sel["column"]]
    compiled = [fp_compile(plain(col["path"]), models["r4"]) for col in columns]
    rows = 0
    for resource in resources:
        row = {}
        for col, fn in zip(columns, compiled, strict=True):
            values = fn(resource)
            row[col["name"]] = values[0] if values else None
        rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fhirpathpy-sample", type=int, default=2000)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    lines = gzip.open(DATA).read().splitlines()
    definition = json.loads((REPO / "views" / "observation.json").read_text())
    view = compile_view(definition)
    assert view.fast_plan() is not None, "observation view should be in the vectorized subset"
    n = len(lines)

    fast = best_rate(lambda: sum(b.num_rows for b in view.evaluate_ndjson(lines, batch_size=16384)), n, args.repeat)
    closures = best_rate(lambda: sum(b.num_rows for b in evaluate_lines_with_closures(view, lines, 16384)), n, 1)
    sample = [json.loads(line) for line in lines[: args.fhirpathpy_sample]]
    fhirpathpy = best_rate(lambda: fhirpathpy_rows(definition, sample), len(sample), 1)

    print(f"observations: {n}, columns: {len(view.schema)}")
    print(f"vectorized (NDJSON bytes -> Arrow): {fast:10,.0f} resources/s")
    print(f"closures   (NDJSON bytes -> Arrow): {closures:10,.0f} resources/s")
    print(f"fhirpathpy (dicts -> rows, {len(sample)} sample): {fhirpathpy:10,.0f} resources/s")
    print(f"vectorized / fhirpathpy: {fast / fhirpathpy:.1f}x; target >= 150,000/s and >= 20x")


if __name__ == "__main__":
    main()
