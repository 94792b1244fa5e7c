"""Throughput of fhirlake's FHIRPath engine vs fhirpathpy on Synthea Observations.

    python bench/bench_fhirpath.py [--limit N]

Five typical search-parameter / view expressions, each evaluated on every Observation.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import orjson

from fhirlake.fhir.fhirpath import compile_path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100" / "Observation.ndjson.gz"

EXPRESSIONS = [
    "Observation.code",
    "Observation.subject.reference",
    "(Observation.value as Quantity) | (Observation.value as SampledData)",
    "Observation.effective",
    "Observation.category.coding.where(system = 'http://terminology.hl7.org/CodeSystem/observation-category').code",
]


def load(limit: int | None) -> list[dict]:
    with gzip.open(DATA, "rb") as f:
        rows = [orjson.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def run(label: str, compiled: list, resources: list[dict]) -> float:
    start = time.perf_counter()
    for r in resources:
        for fn in compiled:
            fn(r)
    elapsed = time.perf_counter() - start
    rate = len(resources) / elapsed
    print(f"{label:12s} {len(resources):6d} resources x {len(compiled)} expressions: "
          f"{elapsed:6.2f} s = {rate:9.0f} resources/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--fhirpathpy-limit", type=int, default=3000, help="fhirpathpy is slow: fewer rows")
    args = parser.parse_args()
    resources = load(args.limit)
    ours = [compile_path(e) for e in EXPRESSIONS]
    mine = [lambda r, fn=fn: fn(r, {"resource": r}) for fn in ours]
    fast = run("fhirlake", mine, resources)
    try:
        from fhirpathpy import compile as fp_compile
        from fhirpathpy.models import models
    except ImportError:
        print("fhirpathpy not installed: no comparison")
        return
    theirs = [fp_compile(e, models["r4"]) for e in EXPRESSIONS]
    slow = run("fhirpathpy", theirs, resources[: args.fhirpathpy_limit])
    print(f"speed-up: {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
