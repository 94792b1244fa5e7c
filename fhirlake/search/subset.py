"""_summary and _elements: reduce a resource to a subset and mark it SUBSETTED."""

from __future__ import annotations

from functools import cache

from fhirlake.fhir import structure

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


@cache
def summary_keys(res_type: str) -> frozenset[str]:
    keys = set(ALWAYS)
    for key, (element, _code) in structure.json_keys(res_type).items():
        if element.is_summary or element.min > 0:
            keys.add(key)
            keys.add("_" + key)
    return frozenset(keys)


@cache
def mandatory_keys(res_type: str) -> frozenset[str]:
    return frozenset(k for k, (el, _c) in structure.json_keys(res_type).items() if el.min > 0)


def _mark(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return resource


def apply_summary(resource: dict, mode: str) -> dict:
    res_type = resource.get("resourceType", "")
    if mode == "true":
        keys = summary_keys(res_type)
        return _mark({k: v for k, v in resource.items() if k in keys})
    if mode == "text":
        keys = {*ALWAYS, "text", *mandatory_keys(res_type)}
        return _mark({k: v for k, v in resource.items() if k in keys})
    if mode == "data":
        return _mark({k: v for k, v in resource.items() if k != "text"})
    return resource


def apply_elements(resource: dict, elements: list[str]) -> dict:
    keep = set(ALWAYS)
    known = structure.json_keys(resource.get("resourceType", ""))
    for name in elements:
        keep.add(name)
        keep.add("_" + name)
        # a choice element named without its type (value -> valueQuantity)
        keep.update(k for k, (el, _c) in known.items() if el.is_choice and el.name == name)
    return _mark({k: v for k, v in resource.items() if k in keep})
