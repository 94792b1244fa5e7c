"""Validation throughput over the 100-patient Synthea sample (single core).

    python bench/bench_validation.py [--repeat N]

Parses all NDJSON first (parsing is not timed), then times `validate_resource` alone.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import orjson

from fhirlake.fhir.validation import validate_resource, warm_up

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"


def load() -> list[dict]:
    resources: list[dict] = []
    for path in sorted(DATA.glob("*.ndjson.gz")):
        resources.extend(orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line)
    return resources


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    resources = load()
    start = time.perf_counter()
    warm_up()
    print(f"compile tables: {1000 * (time.perf_counter() - start):.1f} ms")
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        issues = sum(len(validate_resource(r)) for r in resources)
        best = min(best, time.perf_counter() - start)
    print(f"{len(resources)} resources, {issues} issues, best of {args.repeat}: {best:.3f} s "
          f"= {len(resources) / best:,.0f} resources/s")


if __name__ == "__main__":
    main()
