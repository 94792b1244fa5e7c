"""``_summary`` and ``_elements``: reduce a resource and tag it SUBSETTED."""

from __future__ import annotations

from fhirlake.fhir import structure

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")
SUMMARY_MODES = ("true", "false", "text", "data", "count")


def _tag(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    resource["meta"] = meta
    return resource


def _summary_keys(res_type: str) -> set[str]:
    keys: set[str] = set()
    for key, (element, _type) in structure.json_keys(res_type).items():
        if element.is_summary:
            keys.add(key)
            keys.add("_" + key)
    return keys


def summarize(resource: dict, mode: str) -> dict:
    """Apply ``_summary=mode`` (true | text | data | false)."""
    if mode == "false":
        return resource
    res_type = resource.get("resourceType", "")
    if mode == "true":
        allowed = _summary_keys(res_type) | set(_ALWAYS)
        out = {k: v for k, v in resource.items() if k in allowed}
    elif mode == "text":
        allowed = {"text", "id", "meta", "resourceType"}
        allowed |= {k for k in _summary_keys(res_type) if structure.child_element(res_type, k.lstrip("_")) and
                    structure.child_element(res_type, k.lstrip("_"))[0].min > 0}
        out = {k: v for k, v in resource.items() if k in allowed}
    elif mode == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        raise ValueError(mode)
    return _tag(out)


def select_elements(resource: dict, elements: list[str]) -> dict:
    """Apply ``_elements=a,b``: keep the named top-level elements (and mandatory ones)."""
    wanted = {e.strip() for e in elements if e.strip()}
    # "Patient.name" style is accepted as well as "name"
    wanted = {w.split(".", 1)[1] if "." in w else w for w in wanted}
    keep = set(_ALWAYS) | wanted | {"_" + w for w in wanted}
    out = {k: v for k, v in resource.items() if k in keep}
    return _tag(out)
