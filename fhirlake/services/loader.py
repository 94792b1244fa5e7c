"""Load NDJSON resources through the store in batches (sample data and small imports).

The bulk importer (fhirlake.jobs) builds on the same store call; this module keeps the simplest path
that `fhirlake serve --sample-data` needs: validate, write versions, index, one transaction per batch.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from sqlalchemy import Engine

from fhirlake.services.resource_body import check_body
from fhirlake.store.resources import WriteOp, write_resources

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
# Referenced types first so that a reader sees a consistent picture early; order is not required.
_TYPE_ORDER = ["Organization", "Location", "Practitioner", "PractitionerRole", "Patient"]


def _open(path: Path):  # noqa: ANN202
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def iter_ndjson(path: Path) -> Iterator[dict]:
    with _open(path) as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield orjson.loads(line)


def _sorted_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz")))

    def rank(p: Path) -> int:
        name = p.name.split(".", 1)[0]
        return _TYPE_ORDER.index(name) if name in _TYPE_ORDER else len(_TYPE_ORDER)

    return sorted(files, key=rank)


def load_folder(engine: Engine, folder: Path = SAMPLE_DIR, batch_size: int = 500,
                progress: Callable[[int], None] | None = None) -> int:
    total = 0
    for path in _sorted_files(folder):
        batch: list[WriteOp] = []
        for resource in iter_ndjson(path):
            check_body(resource, resource.get("resourceType", ""))
            batch.append(WriteOp(resource["resourceType"], resource["id"], resource))
            if len(batch) >= batch_size:
                total += _flush(engine, batch, progress)
        total += _flush(engine, batch, progress)
    return total


def _flush(engine: Engine, batch: list[WriteOp], progress: Callable[[int], None] | None) -> int:
    if not batch:
        return 0
    with engine.begin() as conn:
        write_resources(conn, batch)
    n = len(batch)
    batch.clear()
    if progress:
        progress(n)
    return n
