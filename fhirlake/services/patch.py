"""PATCH with JSON Patch (RFC 6902) or FHIRPath Patch (a Parameters resource)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from sqlalchemy import Connection

from fhirlake.fhir.outcome import FhirError
from fhirlake.services import crud
from fhirlake.services.fhirpath_patch import apply_fhirpath_patch


def patch(conn: Connection, res_type: str, res_id: str, body: object, content_type: str, *,
          if_match: int | None = None, access: Any = None) -> crud.WriteResult:
    current = crud.read(conn, res_type, res_id, access)
    if if_match is not None and current.version != if_match:
        raise FhirError(412, f"{res_type}/{res_id}: version {if_match} was expected, the current version is "
                        f"{current.version}", code="conflict")
    resource = orjson.loads(current.content or "{}")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json-patch+json":
        patched = apply_json_patch(resource, body)
    elif isinstance(body, dict) and body.get("resourceType") == "Parameters":
        patched = apply_fhirpath_patch(resource, body)
    else:
        raise FhirError(415, "PATCH needs application/json-patch+json or a FHIRPath Patch Parameters resource",
                        code="not-supported")
    if patched.get("resourceType") != res_type or patched.get("id") != res_id:
        raise FhirError(422, "A patch may not change resourceType or id", code="invalid")
    return crud.update(conn, res_type, res_id, patched, if_match=current.version, access=access, interaction="patch")


# ---- JSON Patch -------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise FhirError(400, f"JSON Pointer '{path}' must start with '/'", code="invalid")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: object, tokens: list[str], op: str) -> tuple[object, str]:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, op)
    return node, tokens[-1]


def _child(node: object, token: str, op: str) -> object:
    if isinstance(node, dict):
        if token not in node:
            raise FhirError(422, f"JSON Patch {op}: path element '{token}' does not exist", code="processing")
        return node[token]
    if isinstance(node, list):
        index = _index(node, token, op, allow_end=False)
        return node[index]
    raise FhirError(422, f"JSON Patch {op}: cannot descend into a primitive at '{token}'", code="processing")


def _index(node: list, token: str, op: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(node)
    if not token.isdigit():
        raise FhirError(422, f"JSON Patch {op}: '{token}' is not an array index", code="processing")
    index = int(token)
    if index > len(node) or (index == len(node) and not allow_end):
        raise FhirError(422, f"JSON Patch {op}: index {index} is out of range", code="processing")
    return index


def _get(doc: object, path: str, op: str) -> object:
    node = doc
    for token in _pointer(path):
        node = _child(node, token, op)
    return node


def _add(doc: object, path: str, value: object, op: str) -> object:
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _container(doc, tokens, op)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, op, allow_end=True), copy.deepcopy(value))
    else:
        raise FhirError(422, f"JSON Patch {op}: cannot add into a primitive", code="processing")
    return doc


def _remove(doc: object, path: str, op: str) -> object:
    tokens = _pointer(path)
    if not tokens:
        raise FhirError(422, "JSON Patch: cannot remove the whole document", code="processing")
    parent, last = _container(doc, tokens, op)
    if isinstance(parent, dict):
        if last not in parent:
            raise FhirError(422, f"JSON Patch {op}: '{path}' does not exist", code="processing")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, op, allow_end=False)]
    else:
        raise FhirError(422, f"JSON Patch {op}: cannot remove from a primitive", code="processing")
    return doc


def apply_json_patch(resource: dict, operations: object) -> dict:
    if not isinstance(operations, list):
        raise FhirError(400, "A JSON Patch document is an array of operations", code="structure")
    doc: object = copy.deepcopy(resource)
    for n, operation in enumerate(operations):
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise FhirError(400, f"JSON Patch operation {n} needs 'op' and 'path'", code="structure")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise FhirError(400, f"JSON Patch operation {n} ({op}) needs a 'value'", code="structure")
        if op == "add":
            doc = _add(doc, path, operation["value"], op)
        elif op == "remove":
            doc = _remove(doc, path, op)
        elif op == "replace":
            _get(doc, path, op)
            doc = _remove(doc, path, op) if _pointer(path) else doc
            doc = _add(doc, path, operation["value"], op)
        elif op in ("move", "copy"):
            source = operation.get("from")
            if source is None:
                raise FhirError(400, f"JSON Patch operation {n} ({op}) needs 'from'", code="structure")
            value = copy.deepcopy(_get(doc, source, op))
            if op == "move":
                doc = _remove(doc, source, op)
            doc = _add(doc, path, value, op)
        elif op == "test":
            if _get(doc, path, op) != operation["value"]:
                raise FhirError(422, f"JSON Patch test failed at '{path}'", code="processing")
        else:
            raise FhirError(400, f"Unknown JSON Patch operation '{op}'", code="invalid")
    if not isinstance(doc, dict):
        raise FhirError(422, "The patched document is not a resource", code="processing")
    return doc
