"""Is a resource inside a patient's compartment? (official R4 Patient CompartmentDefinition)

Used for patient-context writes and for checks on single resources. The compartment's parameters
are reference search parameters whose FHIRPath expressions (for the resource's own type) are all
plain member paths, optionally ending in ``.where(resolve() is Patient)``; they are compiled once
into tuples of member names, so a check is a few dict lookups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
COMPARTMENT_FILE = RESOURCES / "compartments" / "compartmentdefinition-patient.json"
SEARCH_PARAMETERS_FILE = RESOURCES / "search-parameters.json"

_WHERE_PATIENT = ".where(resolve() is Patient)"
_MEMBER_PATH = re.compile(r"^[A-Za-z]+(?:\.[A-Za-z]+)+$")


def _paths_for(resource_type: str, expression: str) -> list[tuple[str, ...]]:
    paths = []
    for part in expression.split("|"):
        part = part.strip()
        if part.endswith(_WHERE_PATIENT):
            part = part[: -len(_WHERE_PATIENT)]
        if not part.startswith(resource_type + "."):
            continue  # the expression of another base type
        if not _MEMBER_PATH.match(part):
            raise ValueError(f"unsupported compartment expression for {resource_type}: {part!r}")
        paths.append(tuple(part.split(".")[1:]))
    return paths


@cache
def compartment_paths() -> dict[str, tuple[tuple[str, ...], ...]]:
    """resource type -> member paths whose references put a resource into a Patient compartment."""
    definition = json.loads(COMPARTMENT_FILE.read_text(encoding="utf-8"))
    bundle = json.loads(SEARCH_PARAMETERS_FILE.read_text(encoding="utf-8"))
    expressions: dict[tuple[str, str], str] = {}
    for entry in bundle["entry"]:
        param = entry["resource"]
        for base in param.get("base", []):
            if param.get("expression"):
                expressions[(base, param["code"])] = param["expression"]
    result: dict[str, tuple[tuple[str, ...], ...]] = {}
    for item in definition["resource"]:
        resource_type = item["code"]
        paths: list[tuple[str, ...]] = []
        for name in item.get("param", []):
            if name == "{def}":
                continue
            for path in _paths_for(resource_type, expressions[(resource_type, name)]):
                if path not in paths:
                    paths.append(path)
        if paths or resource_type == "Patient":
            result[resource_type] = tuple(paths)
    return result


@cache
def all_resource_types() -> tuple[str, ...]:
    """Every R4 resource type (the Patient CompartmentDefinition lists them all)."""
    definition = json.loads(COMPARTMENT_FILE.read_text(encoding="utf-8"))
    return tuple(item["code"] for item in definition["resource"])


def compartment_types() -> frozenset[str]:
    """Resource types that can belong to a Patient compartment (others never do)."""
    return frozenset(compartment_paths())


def _values(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def patient_references(reference: str, patient_id: str, base_url: str | None = None) -> bool:
    """Does a Reference.reference string point at ``Patient/<patient_id>`` on this server?"""
    return _referenced_patient(reference, base_url) == patient_id


def _referenced_patient(reference: str, base_url: str | None) -> str | None:
    """The id in ``Patient/<id>`` or ``Patient/<id>/_history/<v>`` (relative, or under ``base_url``)."""
    if base_url and reference.startswith(base_url.rstrip("/") + "/"):
        reference = reference[len(base_url.rstrip("/")) + 1 :]
    if not reference.startswith("Patient/"):
        return None
    patient_id, slash, rest = reference[len("Patient/"):].partition("/")
    if not patient_id or (slash and not rest.startswith("_history/")):
        return None
    return patient_id


def compartment_patients(resource: dict, base_url: str | None = None) -> set[str]:
    """Ids of the patients in whose compartments ``resource`` is."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return set()
    found = set()
    if resource_type == "Patient" and isinstance(resource.get("id"), str):
        found.add(resource["id"])
    for path in compartment_paths().get(resource_type, ()):
        for value in _values(resource, path):
            reference = value.get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str) and (patient_id := _referenced_patient(reference, base_url)):
                found.add(patient_id)
    return found


def in_patient_compartment(resource: dict, patient_id: str, base_url: str | None = None) -> bool:
    return patient_id in compartment_patients(resource, base_url)
