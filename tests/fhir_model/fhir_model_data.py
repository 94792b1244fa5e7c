"""Data for the FHIR model tests: the official R4 examples and the Synthea sets."""

from __future__ import annotations

import gzip
import tarfile
from functools import lru_cache
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
EXAMPLES_TAR = SHARED / "fhir-r4" / "examples.tar.gz"
SYNTHEA = SHARED / "synthea"


@lru_cache(maxsize=1)
def official_examples() -> dict[str, dict]:
    """file name -> parsed JSON for the 706 official R4 examples."""
    out: dict[str, dict] = {}
    with tarfile.open(EXAMPLES_TAR) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".json"):
                out[Path(member.name).name] = orjson.loads(tar.extractfile(member).read())
    return out


def synthea_files() -> list[Path]:
    # log.ndjson.gz in smart-bulk-10-patients is the exporting client's log, not FHIR resources.
    return sorted(p for p in SYNTHEA.glob("*/*.ndjson.gz") if p.name != "log.ndjson.gz")


def read_ndjson(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip()]
