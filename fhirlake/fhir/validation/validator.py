"""Structural validation of FHIR R4 JSON resources, compiled from the type model.

Each structure (a type such as "HumanName" or an inline one such as "Observation.component")
is compiled once into a table of JSON keys -> field rules; validation is then a walk over the
JSON that does one dict lookup per key and one predicate call per primitive value. Expressions
for issues are only formatted on the way down into objects and when an issue is found.
FHIRPath invariants and terminology bindings are not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirlake.fhir import structure
from fhirlake.fhir.validation.issues import ValidationIssue
from fhirlake.fhir.validation.primitives import EXPECTED, PRIMITIVE_CHECKS

MAX_DEPTH = 64  # nested JSON objects; real resources stay far below, hostile input does not

_PRIMITIVE, _COMPLEX, _RESOURCE = 0, 1, 2
# kind + 3 * is_array: one comparison per key picks the branch of the walk
_ONE_PRIMITIVE, _ONE_COMPLEX, _ONE_RESOURCE, _MANY_PRIMITIVE, _MANY_COMPLEX = 0, 1, 2, 3, 4

# Where a nested object sits: the resource type at the root, else (parent, key, array index or
# None). Building the tuple on the way down is cheaper than formatting a string that is only
# read when an issue is found.
Location = str | tuple[Any, str, int | None]


def _anything(_value: Any) -> bool:
    return True


class _Field:
    """How to check the value under one JSON key."""

    __slots__ = ("key", "is_array", "max", "kind", "mode", "check", "type_code", "child", "struct", "choice")

    def __init__(self, key: str, is_array: bool, max_: int | None, kind: int, type_code: str,
                 child: str, choice: str | None) -> None:
        self.key = key
        self.is_array = is_array
        self.max = max_ if is_array else None
        self.kind = kind
        self.mode = kind + 3 * is_array
        self.type_code = type_code
        self.check: Callable[[Any], bool] = PRIMITIVE_CHECKS.get(type_code, _anything)
        self.child = child  # parent key of the nested structure (complex) or of Element (primitive)
        self.struct: _Structure | None = None
        self.choice = choice  # base name for choice elements ("value"), else None

    def structure(self) -> _Structure:
        st = self.struct
        if st is None:
            st = self.struct = _structure(self.child)
        return st


class _Structure:
    __slots__ = ("name", "fields", "extension_fields", "required")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, _Field] = {}
        self.extension_fields: dict[str, _Field] = {}  # "_given" -> the field of "given"
        self.required: list[tuple[str, tuple[str, ...]]] = []


_STRUCTURES: dict[str, _Structure] = {}


def _structure(parent: str) -> _Structure:
    st = _STRUCTURES.get(parent)
    if st is None:
        st = _STRUCTURES[parent] = _compile(parent)
    return st


def _compile(parent: str) -> _Structure:
    st = _Structure(parent)
    required: dict[str, list[str]] = {}
    for key, (element, type_code) in structure.json_keys(parent).items():
        kind_name = structure.get_type(type_code).kind if structure.get_type(type_code) else ""
        if element.is_inline:
            kind, child = _COMPLEX, element.structure_path
        elif kind_name == structure.PRIMITIVE_KIND:
            kind, child = _PRIMITIVE, type_code
        elif kind_name == structure.RESOURCE_KIND:
            kind, child = _RESOURCE, ""
        else:
            kind, child = _COMPLEX, type_code
        field = _Field(key, element.is_array, element.max, kind, type_code, child,
                       element.name if element.is_choice else None)
        st.fields[key] = field
        if kind == _PRIMITIVE:
            st.extension_fields["_" + key] = field
        if element.min > 0:
            keys = required.setdefault(element.name, [])
            keys.append(key)
            if kind == _PRIMITIVE:
                keys.append("_" + key)  # a primitive with only extensions is present
    st.required = [(name, tuple(keys)) for name, keys in required.items()]
    if structure.is_resource_type(parent):
        st.fields["resourceType"] = _Field("resourceType", False, 1, _PRIMITIVE, "", "", None)
    return st


def warm_up() -> None:
    """Compile the tables of every resource type now rather than on first use."""
    for name in structure.resource_types():
        _structure(name)


# ---------------------------------------------------------------- the walk


def validate_resource(resource: dict, expected_type: str | None = None) -> list[ValidationIssue]:
    """Structural issues of one FHIR R4 JSON resource; an empty list means valid."""
    issues: list[ValidationIssue] = []
    if type(resource) is not dict:
        issues.append(ValidationIssue("error", "structure", "a resource must be a JSON object", ""))
        return issues
    rtype = resource.get("resourceType")
    if expected_type is not None and rtype != expected_type and isinstance(rtype, str):
        issues.append(ValidationIssue(
            "error", "invalid", f"expected a {expected_type} resource, got {rtype}", rtype))
    _check_resource(resource, None, 0, issues)
    return issues


def _text(path: Location) -> str:
    """The FHIRPath-style location of a lazy path, written out only when an issue is reported."""
    if type(path) is str:
        return path
    parent, key, index = path
    if index is None:
        return f"{_text(parent)}.{key}"
    return f"{_text(parent)}.{key}[{index}]"


def _error(issues: list[ValidationIssue], code: str, message: str, expression: str) -> None:
    issues.append(ValidationIssue("error", code, message, expression))


def _check_resource(resource: Any, path: Location | None, depth: int, issues: list[ValidationIssue]) -> None:
    where = path or "Resource"
    if type(resource) is not dict:
        _error(issues, "structure", "a resource must be a JSON object", _text(where))
        return
    rtype = resource.get("resourceType")
    if rtype is None:
        _error(issues, "required", "resourceType is missing", _text(where))
        return
    if type(rtype) is not str or not structure.is_resource_type(rtype):
        _error(issues, "invalid", f"unknown resourceType {rtype!r}", _text(where))
        return
    _check_object(resource, _structure(rtype), path or rtype, depth, issues)


def _check_object(obj: dict, st: _Structure, path: Location, depth: int, issues: list[ValidationIssue]) -> None:
    if depth > MAX_DEPTH:
        _error(issues, "too-costly", f"nesting deeper than {MAX_DEPTH} levels", _text(path))
        return
    if not obj:
        _error(issues, "structure", "empty objects are not allowed", _text(path))
        return
    fields = st.fields
    choices: dict[str, str] | None = None
    for key, value in obj.items():
        field = fields.get(key)
        if field is None:
            _unknown_key(obj, st, key, value, path, depth, issues)
            continue
        if field.choice is not None:
            if choices is None:
                choices = {}
            other = choices.get(field.choice)
            if other is not None:
                _error(issues, "structure",
                       f"only one of {other} and {key} may be present ({field.choice}[x])", f"{_text(path)}.{key}")
            choices[field.choice] = key
        mode = field.mode
        if mode == _ONE_PRIMITIVE:  # most keys: one string, code, date...
            if type(value) is list:
                _error(issues, "structure", f"{key} allows one value, not an array", f"{_text(path)}.{key}")
            elif not field.check(value):
                _bad_primitive(field, value, f"{_text(path)}.{key}", issues)
        elif mode == _ONE_COMPLEX:
            if type(value) is dict:
                _check_object(value, field.struct or field.structure(), (path, key, None), depth + 1, issues)
            elif type(value) is list:
                _error(issues, "structure", f"{key} allows one value, not an array", f"{_text(path)}.{key}")
            else:
                _error(issues, "structure", f"{key} must be a JSON object", f"{_text(path)}.{key}")
        elif mode == _ONE_RESOURCE:
            if type(value) is list:
                _error(issues, "structure", f"{key} allows one value, not an array", f"{_text(path)}.{key}")
            else:
                _check_resource(value, (path, key, None), depth + 1, issues)
        else:
            if type(value) is not list:
                _error(issues, "structure", f"{key} must be a JSON array", f"{_text(path)}.{key}")
                continue
            if not value:
                _error(issues, "structure", "empty arrays are not allowed", f"{_text(path)}.{key}")
                continue
            if field.max is not None and len(value) > field.max:
                _error(issues, "structure", f"{key} allows at most {field.max} values", f"{_text(path)}.{key}")
            if mode == _MANY_COMPLEX:
                child = field.struct or field.structure()
                for i, item in enumerate(value):
                    if type(item) is dict:
                        _check_object(item, child, (path, key, i), depth + 1, issues)
                    else:
                        _error(issues, "structure", f"{key} items must be JSON objects", f"{_text(path)}.{key}[{i}]")
            elif mode == _MANY_PRIMITIVE:
                check = field.check
                for i, item in enumerate(value):
                    if not check(item):
                        _bad_array_primitive(obj, field, i, item, path, issues)
            else:
                for i, item in enumerate(value):
                    _check_resource(item, (path, key, i), depth + 1, issues)
    for name, keys in st.required:
        for key in keys:
            if key in obj:
                break
        else:
            _error(issues, "required", f"{name} is required", f"{_text(path)}.{name}")


def _unknown_key(obj: dict, st: _Structure, key: str, value: Any, path: Location, depth: int,
                 issues: list[ValidationIssue]) -> None:
    field = st.extension_fields.get(key)
    if field is not None:
        _check_primitive_extension(obj, field, value, path, depth, issues)
    elif key == "resourceType":
        _error(issues, "structure", "resourceType is only allowed at the root of a resource", f"{_text(path)}.{key}")
    else:
        _error(issues, "structure", f"unknown element {key!r} in {st.name}", f"{_text(path)}.{key}")


def _check_primitive_extension(obj: dict, field: _Field, value: Any, path: Location, depth: int,
                               issues: list[ValidationIssue]) -> None:
    """`_given` and friends: the id/extension part of primitive values."""
    key = field.key
    element_st = field.structure()
    if not field.is_array:
        if type(value) is dict:
            _check_object(value, element_st, (path, key, None), depth + 1, issues)
        else:
            _error(issues, "structure", f"_{key} must be a JSON object", f"{_text(path)}._{key}")
        return
    if type(value) is not list or not value:
        _error(issues, "structure", f"_{key} must be a non-empty JSON array", f"{_text(path)}._{key}")
        return
    values = obj.get(key)
    if values is not None and type(values) is list and len(values) != len(value):
        _error(issues, "structure", f"{key} and _{key} must have the same length", f"{_text(path)}._{key}")
    for i, item in enumerate(value):
        if item is None:
            if values is None or (type(values) is list and i < len(values) and values[i] is None):
                _error(issues, "structure", f"{key}[{i}] has neither a value nor extensions", f"{_text(path)}.{key}[{i}]")
        elif type(item) is dict:
            _check_object(item, element_st, (path, key, i), depth + 1, issues)
        else:
            _error(issues, "structure", f"_{key} items must be JSON objects or null", f"{_text(path)}._{key}[{i}]")


def _bad_array_primitive(obj: dict, field: _Field, i: int, item: Any, path: Location,
                         issues: list[ValidationIssue]) -> None:
    if item is None:
        extras = obj.get("_" + field.key)
        if type(extras) is list and i < len(extras) and extras[i] is not None:
            return  # a value carried only by its extensions
    _bad_primitive(field, item, f"{_text(path)}.{field.key}[{i}]", issues)


def _bad_primitive(field: _Field, value: Any, expression: str, issues: list[ValidationIssue]) -> None:
    expected = EXPECTED.get(field.type_code, field.type_code)
    if type(value) in (dict, list) or value is None:
        code = "structure"
    else:
        code = "value"
    shown = repr(value) if not isinstance(value, str) or len(value) < 80 else repr(value[:77] + "...")
    _error(issues, code, f"{shown} is not a valid {field.type_code}: expected {expected}", expression)
