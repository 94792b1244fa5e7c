"""Does one resource satisfy a query-restricted scope (``patient/Observation.cu?category=laboratory``)?

Used only for writes (reads are filtered by the search engine inside SQL). Supports token,
string, reference and uri parameters whose expressions are plain member paths (the usual targets
of finer-grained scopes: category, code, status, _tag, _security, _profile...). Anything else is
answered False: a write the scope cannot be shown to allow is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from fhirlake.auth.compartment import SEARCH_PARAMETERS_FILE

_MEMBER_PATH = re.compile(r"^[A-Za-z]+(?:\.[A-Za-z]+)+$")
_COMMON = {
    "_id": ("token", "Resource.id"),
    "_tag": ("token", "Resource.meta.tag"),
    "_security": ("token", "Resource.meta.security"),
    "_profile": ("uri", "Resource.meta.profile"),
}


@cache
def _search_parameters() -> dict[tuple[str, str], tuple[str, str]]:
    bundle = json.loads(SEARCH_PARAMETERS_FILE.read_text(encoding="utf-8"))
    result: dict[tuple[str, str], tuple[str, str]] = {}
    for entry in bundle["entry"]:
        param = entry["resource"]
        for base in param.get("base", []):
            if param.get("expression"):
                result[(base, param["code"])] = (param["type"], param["expression"])
    return result


@cache
def _compiled(resource_type: str, name: str) -> tuple[str, tuple[tuple[str, ...], ...]] | None:
    if name in _COMMON:
        kind, expression = _COMMON[name]
        return kind, (tuple(expression.split(".")[1:]),)
    found = _search_parameters().get((resource_type, name))
    if found is None:
        return None
    kind, expression = found
    paths = []
    for part in expression.split("|"):
        part = part.strip()
        if not part.startswith(resource_type + "."):
            continue
        if not _MEMBER_PATH.match(part):
            return None  # casts, where(), functions: not provable here
        paths.append(tuple(part.split(".")[1:]))
    return (kind, tuple(paths)) if paths else None


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, path)
    elif not path:
        yield node
    elif isinstance(node, dict) and path[0] in node:
        yield from _walk(node[path[0]], path[1:])


def _codings(value: Any) -> Iterator[tuple[str | None, str | None]]:
    if isinstance(value, str | bool):
        yield None, str(value).lower() if isinstance(value, bool) else value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value["coding"] or []:
                yield from _codings(coding)
        if "code" in value:
            yield value.get("system"), value.get("code")
        elif "value" in value and isinstance(value["value"], str):  # Identifier, ContactPoint
            yield value.get("system"), value["value"]


def _token_matches(value: Any, wanted: str) -> bool:
    if "|" in wanted:
        system, code = wanted.split("|", 1)
        for got_system, got_code in _codings(value):
            if system == "" and got_system is not None:
                continue
            if system and got_system != system:
                continue
            if code and got_code != code:
                continue
            return True
        return False
    return any(got_code == wanted for _, got_code in _codings(value))


def _value_matches(kind: str, value: Any, wanted: str) -> bool:
    if kind == "token":
        return _token_matches(value, wanted)
    if kind == "string" and isinstance(value, str):
        return value.lower().startswith(wanted.lower())
    if kind == "uri" and isinstance(value, str):
        return value == wanted
    if kind == "reference" and isinstance(value, dict):
        return value.get("reference") == wanted
    return False


def matches_query(resource: dict[str, Any], query: tuple[tuple[str, str], ...]) -> bool:
    """True when every ``param=value`` pair holds (a comma in a value means OR, as in search)."""
    resource_type = resource.get("resourceType", "")
    for name, wanted in query:
        compiled = _compiled(resource_type, name)
        if compiled is None:
            return False
        kind, paths = compiled
        alternatives = wanted.split(",")
        if not any(
            _value_matches(kind, value, alt)
            for path in paths
            for value in _walk(resource, path)
            for alt in alternatives
        ):
            return False
    return True
