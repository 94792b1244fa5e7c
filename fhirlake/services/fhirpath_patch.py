"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): add, insert, delete, replace, move.

The FHIRPath engine returns the very dict/list objects of the resource for complex nodes, so a
node is located by identity; a primitive is located through its parent (the path minus its last
member) and its key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from fhirlake.fhir import structure
from fhirlake.fhir.fhirpath import FhirPathError, ast, compile_path, parse
from fhirlake.fhir.outcome import FhirError

_VALUE_PREFIX = "value"


@dataclass
class Location:
    parent: dict
    key: str
    index: int | None  # position in parent[key] when it is an array

    def get(self) -> object:
        value = self.parent[self.key]
        return value[self.index] if self.index is not None else value


def _fail(status: int, message: str) -> FhirError:
    return FhirError(status, f"FHIRPath Patch: {message}", code="processing" if status == 422 else "invalid")


def _eval(resource: dict, path: str) -> list:
    try:
        return compile_path(path)(resource, {"resource": resource})
    except FhirPathError as exc:
        raise _fail(400, f"cannot evaluate '{path}': {exc}") from exc


def _positions(node: object, out: list[tuple[dict, str, int | None, object]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, list):
                for i, item in enumerate(value):
                    out.append((node, key, i, item))
                    _positions(item, out)
            else:
                out.append((node, key, None, value))
                _positions(value, out)


def _last_member(path: str) -> tuple[str | None, str | None]:
    """Split 'A.b.c' (optionally with a trailing [n] / .first() / .where()) into ('A.b', 'c')."""
    try:
        tree = parse(path)
    except FhirPathError:
        return None, None
    node = tree
    while isinstance(node, (ast.Indexer, ast.FunctionCall)) and getattr(node, "target", None) is not None:
        node = node.target  # type: ignore[assignment]
    if isinstance(node, ast.Member):
        head = path[: path.rfind("." + node.name)] if ("." + node.name) in path else None
        return head, node.name
    return None, None


def locate(resource: dict, path: str) -> list[Location]:
    results = _eval(resource, path)
    if not results:
        return []
    positions: list[tuple[dict, str, int | None, object]] = []
    _positions(resource, positions)
    found: list[Location] = []
    head, name = _last_member(path)
    parents = [p for p in _eval(resource, head) if isinstance(p, dict)] if head else []
    for value in results:
        hit = None
        if isinstance(value, (dict, list)):
            hit = next((p for p in positions if p[3] is value), None)
        elif name is not None:
            hit = next(
                (p for p in positions if p[1] == name and any(p[0] is q for q in parents) and p[3] == value
                 and not any(f.parent is p[0] and f.key == p[1] and f.index == p[2] for f in found)),
                None,
            )
        if hit is None:
            raise _fail(422, f"'{path}' selects something that cannot be changed in place")
        found.append(Location(hit[0], hit[1], hit[2]))
    return found


def _parts(parameter: dict) -> dict:
    out: dict = {}
    for part in parameter.get("part") or []:
        pname = part.get("name")
        if pname == "value":
            value_keys = [k for k in part if k.startswith(_VALUE_PREFIX)]
            if value_keys:
                out["value"] = part[value_keys[0]]
                out["value_type"] = value_keys[0][len(_VALUE_PREFIX):]
            elif "part" in part:  # complex value given as parts
                out["value"] = {p["name"]: next(v for k, v in p.items() if k.startswith(_VALUE_PREFIX))
                                for p in part["part"]}
            elif "resource" in part:
                out["value"] = part["resource"]
        else:
            value_keys = [k for k in part if k.startswith(_VALUE_PREFIX)]
            out[pname] = part[value_keys[0]] if value_keys else None
    return out


def _is_array(parent_type: str | None, key: str) -> bool:
    if parent_type:
        found = structure.child_element(parent_type, key)
        if found:
            return found[0].is_array
    return False


def _single(resource: dict, path: str) -> Location:
    locations = locate(resource, path)
    if len(locations) != 1:
        raise _fail(422, f"'{path}' must select exactly one element, it selected {len(locations)}")
    return locations[0]


def apply_fhirpath_patch(resource: dict, parameters: dict) -> dict:
    doc = copy.deepcopy(resource)
    for n, parameter in enumerate(parameters.get("parameter") or []):
        if parameter.get("name") != "operation":
            raise _fail(400, f"parameter {n} is not an 'operation'")
        op = _parts(parameter)
        kind, path = op.get("type"), op.get("path")
        if not kind or not path:
            raise _fail(400, f"operation {n} needs 'type' and 'path'")
        if kind == "delete":
            locations = locate(doc, path)
            if len(locations) > 1:
                raise _fail(422, f"delete path '{path}' selects {len(locations)} elements")
            for loc in locations:
                _delete(loc)
        elif kind == "replace":
            if "value" not in op:
                raise _fail(400, f"operation {n} (replace) needs a value")
            loc = _single(doc, path)
            if loc.index is None:
                loc.parent[loc.key] = op["value"]
            else:
                loc.parent[loc.key][loc.index] = op["value"]
        elif kind == "add":
            name = op.get("name")
            if not name or "value" not in op:
                raise _fail(400, f"operation {n} (add) needs 'name' and 'value'")
            targets = [t for t in _eval(doc, path) if isinstance(t, dict)]
            if len(targets) != 1:
                raise _fail(422, f"add path '{path}' must select exactly one element")
            target = targets[0]
            parent_type = target.get("resourceType") or _type_of(doc, path)
            value = op["value"]
            key = _choice_key(parent_type, name, op.get("value_type")) or name
            if _is_array(parent_type, key) or isinstance(target.get(key), list):
                target.setdefault(key, []).append(value)
            else:
                target[key] = value
        elif kind == "insert":
            index = op.get("index")
            if not isinstance(index, int) or "value" not in op:
                raise _fail(400, f"operation {n} (insert) needs 'index' and 'value'")
            array = _array_at(doc, path)
            if index > len(array):
                raise _fail(422, f"insert index {index} is beyond the end of '{path}'")
            array.insert(index, op["value"])
        elif kind == "move":
            source, destination = op.get("source"), op.get("destination")
            if not isinstance(source, int) or not isinstance(destination, int):
                raise _fail(400, f"operation {n} (move) needs 'source' and 'destination'")
            array = _array_at(doc, path)
            if not (0 <= source < len(array) and 0 <= destination < len(array)):
                raise _fail(422, f"move indexes out of range for '{path}'")
            array.insert(destination, array.pop(source))
        else:
            raise _fail(400, f"unknown operation type '{kind}'")
    return doc


def _delete(loc: Location) -> None:
    if loc.index is None:
        del loc.parent[loc.key]
    else:
        del loc.parent[loc.key][loc.index]
        if not loc.parent[loc.key]:
            del loc.parent[loc.key]


def _array_at(doc: dict, path: str) -> list:
    head, name = _last_member(path)
    if head is None or name is None:
        raise _fail(422, f"'{path}' must name a repeating element")
    parents = [p for p in _eval(doc, head) if isinstance(p, dict)]
    if len(parents) != 1:
        raise _fail(422, f"'{head}' must select exactly one element")
    array = parents[0].setdefault(name, [])
    if not isinstance(array, list):
        raise _fail(422, f"'{path}' is not a repeating element")
    return array


def _type_of(doc: dict, path: str) -> str | None:
    # Only used to learn whether a new child repeats; resource-level paths are the common case.
    root = path.split(".", 1)[0]
    return root if structure.is_resource_type(root) else None


def _choice_key(parent_type: str | None, name: str, value_type: str | None) -> str | None:
    """'value' + valueQuantity in the patch -> 'valueQuantity' when the element is a choice."""
    if not parent_type or not value_type:
        return None
    element = structure.children(parent_type).get(name)
    if element is None or not element.is_choice:
        return None
    return name + value_type[0].upper() + value_type[1:]
