"""A small leak scanner: identifying values found in input resources, searched for in output bytes."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import orjson

PERSON_TYPES = ("Patient", "Practitioner", "RelatedPerson", "Person")


def read_ndjson(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def identifying_values(resources: Iterable[dict]) -> set[str]:
    """Names (family, given), address lines, cities, phones and e-mails, full birth dates of people."""
    found: set[str] = set()

    def add(value: object) -> None:
        if isinstance(value, str) and len(value.strip()) >= 4:
            found.add(value.strip())

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "family" in node or "given" in node:
                add(node.get("family"))
                for given in node.get("given", []):
                    add(given)
            if "line" in node or "city" in node:
                for line in node.get("line", []):
                    add(line)
                add(node.get("city"))
            if node.get("system") in ("phone", "email", "fax"):
                add(node.get("value"))
            for value in node.values():
                walk(value)

    for resource in resources:
        if resource.get("resourceType") in PERSON_TYPES:
            walk({k: v for k, v in resource.items() if k != "meta"})
            add(resource.get("birthDate"))
    return found


def leaks(secrets: set[str], output: bytes) -> list[str]:
    # JSON text of the output: a value appears as a quoted string or inside one
    return sorted(s for s in secrets if s.encode() in output)
