"""Benchmark: Safe Harbor de-identification over the 100-patient Synthea set (27,861 resources),
next to a plain orjson parse-and-serialize pass over the same NDJSON in the same run.

    python bench/bench_deid.py [--repeat 3] [--min-rate 20000]

Exits 1 when the de-identification rate is below --min-rate.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import orjson

from fhirlake.deid import Deidentifier, DeidKeys, load_profile

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--min-rate", type=float, default=20_000)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    lines = [line for f in sorted(args.data.glob("*.ndjson.gz"))
             for line in gzip.decompress(f.read_bytes()).splitlines() if line.strip()]
    engine = Deidentifier(load_profile("safe-harbor"), DeidKeys("benchmark-only-secret-0123456789"))
    errors: list = []

    def deid() -> None:
        for _ in engine.deidentify_ndjson(lines, on_error=lambda n, e: errors.append(n)):
            pass

    def plain() -> None:
        for line in lines:
            orjson.dumps(orjson.loads(line))

    start = time.perf_counter()
    deid()  # first pass: fills the per-structure transition caches
    cold = time.perf_counter() - start
    t_deid = _best(deid, args.repeat)
    t_plain = _best(plain, args.repeat)
    n = len(lines)
    rate = n / t_deid
    print(f"resources:                 {n}")
    print(f"errors:                    {len(errors)}")
    print(f"safe-harbor (first pass):  {n / cold:>9,.0f} resources/s")
    print(f"safe-harbor (warm, best):  {rate:>9,.0f} resources/s  ({t_deid:.2f} s)")
    print(f"orjson parse+serialize:    {n / t_plain:>9,.0f} resources/s  ({t_plain:.2f} s)")
    print(f"ratio deid/plain time:     {t_deid / t_plain:.1f}x")
    if rate < args.min_rate or errors:
        print(f"FAIL: below {args.min_rate:,.0f} resources/s or errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
