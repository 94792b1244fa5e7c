"""NDJSON input for running a view without a server: a file, or a folder of ``*.ndjson[.gz]`` files."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson

SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


class InputError(ValueError):
    """The input cannot be read as NDJSON resources (the message names the file and line)."""


def input_files(path: Path, resource_type: str) -> list[Path]:
    """The files to read: a file as given; in a folder, the files named after the resource type
    (``Patient.ndjson.gz``, ``Patient.001.ndjson``) when there are any, else every NDJSON file."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise InputError(f"{path}: the folder holds no NDJSON files ({', '.join(SUFFIXES)})")
    named = [p for p in files if p.name.split(".", 1)[0] == resource_type]
    return named or files


def _open(path: Path):  # noqa: ANN202
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def read_lines(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        try:
            with _open(path) as handle:
                for line in handle:
                    if line.strip():
                        yield line.rstrip(b"\r\n")
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot be read ({exc})") from None


def find_bad_line(files: list[Path]) -> str | None:
    """Where the first line that is not a JSON object is (the slow path, only after a failure)."""
    for path in files:
        with _open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    return f"{path}, line {number}: not valid JSON ({exc})"
                if not isinstance(value, dict) or "resourceType" not in value:
                    return f"{path}, line {number}: not a FHIR resource (no resourceType)"
    return None
