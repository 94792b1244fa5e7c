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
    """Names (family, given), address lines, cities, phones and e-mails of people.

    Full birth dates are checked apart (:func:`birth_dates`) against the people's own records: a
    shifted clinical date may land on somebody's birth date by chance (seen: an Encounter shifted
    onto another patient's 1986-11-19), which is no leak.
    """
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
    return found


def birth_dates(resources: Iterable[dict]) -> set[str]:
    return {r["birthDate"] for r in resources if r.get("resourceType") in PERSON_TYPES and len(r.get("birthDate", "")) == 10}


def person_records(output: bytes) -> bytes:
    """The output lines of Patient, Practitioner, RelatedPerson and Person resources."""
    return b"\n".join(line for line in output.splitlines() if orjson.loads(line)["resourceType"] in PERSON_TYPES)


def leaks(secrets: set[str], output: bytes) -> list[str]:
    # JSON text of the output: a value appears as a quoted string or inside one
    return sorted(s for s in secrets if s.encode() in output)
