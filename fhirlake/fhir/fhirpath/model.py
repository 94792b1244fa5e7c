"""What FHIRPath needs from the R4 type model (fhirlake.fhir.structure), cached per name.

Static types are strings: a FHIR type code ("Patient", "HumanName", "string"), an inline
structure path ("Observation.component"), or "System.X" for FHIRPath literal values.
None means "not known at compile time"; the engine then decides from the data at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhirlake.fhir import structure
from fhirlake.fhir.fhirpath.values import FhirDate, FhirDateTime, FhirTime, Quantity

SYSTEM_TYPES = ("Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity")

# FHIR primitive type -> System type of its value
FHIR_TO_SYSTEM = {
    "boolean": "Boolean", "string": "String", "code": "String", "id": "String", "uri": "String",
    "url": "String", "canonical": "String", "oid": "String", "uuid": "String", "markdown": "String",
    "base64Binary": "String", "xhtml": "String", "integer": "Integer", "unsignedInt": "Integer",
    "positiveInt": "Integer", "decimal": "Decimal", "date": "Date", "dateTime": "DateTime",
    "instant": "DateTime", "time": "Time",
}


def cap(type_code: str) -> str:
    return type_code[0].upper() + type_code[1:]


@lru_cache(maxsize=8192)
def member(parent: str, name: str) -> tuple[str, Any] | None:
    """('plain', child static type) or ('choice', ((json_key, type_code), ...)), None if unknown."""
    el = structure.children(parent).get(name)
    if el is None:
        return None
    if el.is_choice:
        return ("choice", tuple((name + cap(t), t) for t in el.types))
    if not el.types and el.content_reference is None:
        return ("plain", None)
    code = el.types[0] if el.types else "Element"
    return ("plain", structure.next_parent(el, code))


@lru_cache(maxsize=1)
def choice_names() -> frozenset[str]:
    """Every element name that is a choice somewhere (value, effective, onset, ...)."""
    names: set[str] = set()
    model = structure._model()
    for elements in model.children.values():
        for el in elements.values():
            if el.is_choice:
                names.add(el.name)
    return frozenset(names)


@lru_cache(maxsize=4096)
def ancestors(type_code: str) -> tuple[str, ...]:
    """The type and its base types ("Age" -> ("Age", "Quantity", "Element", "Base"))."""
    chain = [type_code]
    t = structure.get_type(type_code)
    while t is not None and t.base:
        chain.append(t.base)
        t = structure.get_type(t.base)
    if type_code in FHIR_TO_SYSTEM and "Element" not in chain:
        chain.append("Element")
    return tuple(chain)


def is_known_type(namespace: str | None, name: str) -> bool:
    if namespace == "System":
        return name in SYSTEM_TYPES
    if namespace in (None, "FHIR"):
        if structure.get_type(name) is not None or name in ("BackboneElement", "Element", "Resource"):
            return True
        return namespace is None and name in SYSTEM_TYPES
    return False


def runtime_system_type(value: Any) -> str | None:
    t = type(value)
    if t is bool:
        return "Boolean"
    if t is str:
        return "String"
    if t is int:
        return "Integer"
    if t is float or t is Decimal:
        return "Decimal"
    if t is FhirDate:
        return "Date"
    if t is FhirDateTime:
        return "DateTime"
    if t is FhirTime:
        return "Time"
    if t is Quantity:
        return "Quantity"
    return None


def static_matches(static_type: str, namespace: str | None, name: str, exact: bool = False) -> bool:
    """Does a value whose static type is known match the type specifier?"""
    if static_type.startswith("System."):
        return namespace in (None, "System") and static_type[7:] == name
    if namespace == "System":
        return False
    if "." in static_type:  # inline structure
        return name in ("BackboneElement", "Element", "Base")
    if exact and static_type in FHIR_TO_SYSTEM:  # for as/ofType a code is not a string
        return name == static_type
    return name in ancestors(static_type)


def value_matches(value: Any, static_type: str | None, namespace: str | None, name: str,
                  exact: bool = False) -> bool:
    """Type test of one item: statically typed when possible, otherwise from the data."""
    if static_type is not None:
        return static_matches(static_type, namespace, name, exact)
    if type(value) is dict:
        rt = value.get("resourceType")
        if rt is not None and namespace in (None, "FHIR"):
            return name in ancestors(rt)
        return False  # an element of unknown type: only the model could tell
    system = runtime_system_type(value)
    if system is None:
        return False
    if namespace == "System":
        return system == name
    if namespace == "FHIR":
        return FHIR_TO_SYSTEM.get(name) == system
    return system == name or FHIR_TO_SYSTEM.get(name) == system


def runtime_type_name(value: Any, static_type: str | None) -> tuple[str, str]:
    """(namespace, name) for type()."""
    if static_type is not None:
        if static_type.startswith("System."):
            return ("System", static_type[7:])
        if "." in static_type:
            return ("FHIR", "BackboneElement")
        return ("FHIR", static_type)
    if type(value) is dict and "resourceType" in value:
        return ("FHIR", value["resourceType"])
    return ("System", runtime_system_type(value) or "Any")


def descendants_of_type(resource: dict, type_code: str) -> Iterator[tuple[Any, Any, str, int | None]]:
    """Every node of a FHIR type in a resource, as (node, parent, json_key, list_index or None).

    Walks the data guided by the type model (choice keys, contained resources, inline
    structures), so replacing `parent[key]` (or `parent[key][index]`) swaps the node.
    Subtypes match too (an Age is a Quantity).
    """
    rt = resource.get("resourceType")
    if not rt:
        return
    yield from _walk(resource, rt, type_code)


def _walk(node: dict, parent_type: str, wanted: str) -> Iterator[tuple[Any, Any, str, int | None]]:
    for key, value in list(node.items()):
        if key == "resourceType" or key.startswith("_"):
            continue
        hit = structure.child_element(parent_type, key)
        if hit is None:
            continue
        el, code = hit
        child_type = structure.next_parent(el, code) if code else None
        if child_type is None:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            index = i if isinstance(value, list) else None
            item_type = item.get("resourceType", child_type) if isinstance(item, dict) and code in (
                "Resource", "DomainResource") else child_type
            if wanted in ancestors(item_type) if "." not in item_type else wanted in ("BackboneElement", "Element"):
                yield item, node, key, index
            if isinstance(item, dict):
                yield from _walk(item, item_type, wanted)
