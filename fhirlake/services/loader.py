"""Load a folder of NDJSON resources through the importer (sample data, tests and benchmarks).

One write path: this is ``fhirlake.jobs.imports.ImportRun`` (validation, versions, search index,
conditional references) with a stricter contract for callers that load known-good data: any
problem raises instead of being reported to an error file.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from sqlalchemy import Engine

from fhirlake.jobs.imports.loader import ImportRun, expand_paths

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


class LoadError(ValueError):
    """A resource of a folder expected to be valid was refused."""


def iter_ndjson(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield orjson.loads(line)


def folder_bytes(folder: Path = SAMPLE_DIR) -> int:
    """What ``load_folder`` reports progress against: the size of the files it reads."""
    return sum(source.size for source in expand_paths([folder]))


def load_folder(engine: Engine, folder: Path = SAMPLE_DIR,
                progress_bytes: Callable[[int], None] | None = None) -> int:
    """Import every NDJSON file of ``folder``; returns the resources loaded or already identical.

    Raises LoadError naming the first problem when any resource is refused; the resources that
    were valid stay loaded (the importer commits batch by batch).
    """
    errors = io.BytesIO()
    run = ImportRun(engine, errors, progress_bytes=progress_bytes)
    try:
        summary = run.load(expand_paths([folder]))
    finally:
        run.close()
    if summary.errors:
        first = orjson.loads(errors.getvalue().split(b"\n", 1)[0])
        raise LoadError(f"{summary.errors} resources of {folder} refused; first: "
                        f"{first['issue'][0]['diagnostics']}")
    return summary.loaded + summary.unchanged
