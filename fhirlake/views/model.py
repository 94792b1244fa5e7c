"""Parse a ViewDefinition (a JSON dict) into an immutable model, checking its structure.

Only structure is checked here (keys, types, names, unionAll shapes, constants); FHIRPath syntax and
column types are checked when the view is compiled (``compiler.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import ViewDefinitionError
from .types import PRIMITIVE_TYPES, normalize_type

COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESOURCE_NAME = re.compile(r"^[A-Z][A-Za-z]+$")
STATUSES = frozenset({"draft", "active", "retired", "unknown"})

# Keys a ViewDefinition may carry besides the ones the engine reads (metadata of the canonical resource).
VIEW_METADATA_KEYS = frozenset(
    {
        "resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
        "modifierExtension", "url", "identifier", "version", "name", "title", "experimental", "publisher",
        "contact", "description", "useContext", "copyright", "fhirVersion", "profile", "date", "jurisdiction",
        "purpose",
    }
)
VIEW_KEYS = VIEW_METADATA_KEYS | {"resource", "status", "constant", "select", "where"}
SELECT_KEYS = frozenset({"id", "extension", "column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"})
COLUMN_KEYS = frozenset({"id", "extension", "name", "path", "description", "collection", "type", "tag"})
WHERE_KEYS = frozenset({"id", "extension", "path", "description"})
CONSTANT_VALUE_TYPES = frozenset(PRIMITIVE_TYPES - {"xhtml"})


@dataclass(frozen=True)
class ColumnDef:
    name: str
    path: str
    collection: bool
    declared_type: str | None
    description: str | None
    tags: tuple[tuple[str, str], ...]
    where: str  # element path, e.g. "select[0].column[1]"


@dataclass(frozen=True)
class SelectDef:
    columns: tuple[ColumnDef, ...]
    selects: tuple[SelectDef, ...]
    union_all: tuple[SelectDef, ...]
    for_each: str | None
    for_each_or_null: str | None
    repeat: tuple[str, ...] | None
    where: str

    def output_columns(self) -> list[ColumnDef]:
        """Columns in output order: own columns, then nested selects, then the unionAll's (first branch)."""
        out = list(self.columns)
        for sub in self.selects:
            out.extend(sub.output_columns())
        if self.union_all:
            out.extend(self.union_all[0].output_columns())
        return out


@dataclass(frozen=True)
class WhereDef:
    path: str
    where: str


@dataclass(frozen=True)
class ConstantDef:
    name: str
    value_type: str
    value: Any
    where: str


@dataclass(frozen=True)
class ViewModel:
    resource: str
    name: str | None
    status: str | None
    constants: tuple[ConstantDef, ...]
    selects: tuple[SelectDef, ...]
    wheres: tuple[WhereDef, ...]

    def output_columns(self) -> list[ColumnDef]:
        out: list[ColumnDef] = []
        for sel in self.selects:
            out.extend(sel.output_columns())
        return out


def parse_view(view: Any) -> ViewModel:
    if not isinstance(view, dict):
        raise ViewDefinitionError("a ViewDefinition must be a JSON object")
    _reject_unknown(view, VIEW_KEYS, "")
    if view.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise ViewDefinitionError("resourceType must be 'ViewDefinition'", "resourceType")
    resource = view.get("resource")
    if not isinstance(resource, str) or not RESOURCE_NAME.match(resource):
        raise ViewDefinitionError("'resource' (a FHIR resource type name) is required", "resource")
    status = view.get("status")
    if status is not None and status not in STATUSES:
        raise ViewDefinitionError(f"status must be one of {sorted(STATUSES)}", "status")
    name = view.get("name")
    if name is not None and not isinstance(name, str):
        raise ViewDefinitionError("name must be a string", "name")

    constants = tuple(_parse_constant(c, f"constant[{i}]") for i, c in enumerate(_list(view, "constant", "")))
    seen_constants: set[str] = set()
    for const in constants:
        if const.name in seen_constants:
            raise ViewDefinitionError(f"duplicate constant name {const.name!r}", const.where)
        seen_constants.add(const.name)

    raw_selects = _list(view, "select", "")
    if not raw_selects:
        raise ViewDefinitionError("'select' must list at least one select", "select")
    selects = tuple(_parse_select(s, f"select[{i}]") for i, s in enumerate(raw_selects))
    wheres = tuple(_parse_where(w, f"where[{i}]") for i, w in enumerate(_list(view, "where", "")))
    model = ViewModel(resource, name, status, constants, selects, wheres)
    _check_unique_columns(model)
    return model


def _list(obj: dict, key: str, where: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ViewDefinitionError(f"'{key}' must be an array", _join(where, key))
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _reject_unknown(obj: dict, allowed: frozenset[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ViewDefinitionError(f"unknown element {key!r}", _join(where, key))


def _string(obj: dict, key: str, where: str, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ViewDefinitionError(f"'{key}' is required", _join(where, key))
        return None
    if not isinstance(value, str) or not value.strip():
        raise ViewDefinitionError(f"'{key}' must be a non-empty string", _join(where, key))
    return value


def _parse_select(raw: Any, where: str) -> SelectDef:
    if not isinstance(raw, dict):
        raise ViewDefinitionError("a select must be a JSON object", where)
    _reject_unknown(raw, SELECT_KEYS, where)
    for_each = _string(raw, "forEach", where, False)
    for_each_or_null = _string(raw, "forEachOrNull", where, False)
    repeat = None
    if "repeat" in raw:
        paths = raw["repeat"]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            raise ViewDefinitionError("'repeat' must be a non-empty array of FHIRPath strings", f"{where}.repeat")
        repeat = tuple(paths)
    if sum(x is not None for x in (for_each, for_each_or_null, repeat)) > 1:
        raise ViewDefinitionError("only one of forEach, forEachOrNull and repeat may be given", where)

    columns = tuple(_parse_column(c, f"{where}.column[{i}]") for i, c in enumerate(_list(raw, "column", where)))
    selects = tuple(_parse_select(s, f"{where}.select[{i}]") for i, s in enumerate(_list(raw, "select", where)))
    union_all = tuple(
        _parse_select(s, f"{where}.unionAll[{i}]") for i, s in enumerate(_list(raw, "unionAll", where))
    )
    if not columns and not selects and not union_all:
        raise ViewDefinitionError("a select needs at least one of column, select or unionAll", where)
    sel = SelectDef(columns, selects, union_all, for_each, for_each_or_null, repeat, where)
    _check_union_shapes(sel)
    return sel


def _parse_column(raw: Any, where: str) -> ColumnDef:
    if not isinstance(raw, dict):
        raise ViewDefinitionError("a column must be a JSON object", where)
    _reject_unknown(raw, COLUMN_KEYS, where)
    name = _string(raw, "name", where, True)
    assert name is not None
    if not COLUMN_NAME.match(name):
        raise ViewDefinitionError(
            f"column name {name!r} must start with a letter and hold only letters, digits and '_'", f"{where}.name"
        )
    path = _string(raw, "path", where, True)
    assert path is not None
    collection = raw.get("collection", False)
    if not isinstance(collection, bool):
        raise ViewDefinitionError("'collection' must be true or false", f"{where}.collection")
    declared = _string(raw, "type", where, False)
    if declared is not None:
        declared = normalize_type(declared)
        if declared not in PRIMITIVE_TYPES:
            raise ViewDefinitionError(
                f"column type {declared!r} is not a FHIR primitive type", f"{where}.type"
            )
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise ViewDefinitionError("'description' must be a string", f"{where}.description")
    tags = []
    for i, tag in enumerate(_list(raw, "tag", where)):
        if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not isinstance(tag.get("value"), str):
            raise ViewDefinitionError("a tag needs a string 'name' and 'value'", f"{where}.tag[{i}]")
        tags.append((tag["name"], tag["value"]))
    return ColumnDef(name, path, collection, declared, description, tuple(tags), where)


def _parse_where(raw: Any, where: str) -> WhereDef:
    if not isinstance(raw, dict):
        raise ViewDefinitionError("a where must be a JSON object", where)
    _reject_unknown(raw, WHERE_KEYS, where)
    path = _string(raw, "path", where, True)
    assert path is not None
    return WhereDef(path, where)


def _parse_constant(raw: Any, where: str) -> ConstantDef:
    if not isinstance(raw, dict):
        raise ViewDefinitionError("a constant must be a JSON object", where)
    name = _string(raw, "name", where, True)
    assert name is not None
    if not COLUMN_NAME.match(name):
        raise ViewDefinitionError(f"constant name {name!r} is not a valid name", f"{where}.name")
    values = [k for k in raw if k.startswith("value")]
    unknown = [k for k in raw if k not in ("id", "extension", "name") and not k.startswith("value")]
    if unknown:
        raise ViewDefinitionError(f"unknown element {unknown[0]!r}", f"{where}.{unknown[0]}")
    if len(values) != 1:
        raise ViewDefinitionError("a constant needs exactly one value[x]", where)
    key = values[0]
    value_type = key[5:6].lower() + key[6:]  # valueDateTime -> dateTime
    if value_type not in CONSTANT_VALUE_TYPES:
        raise ViewDefinitionError(f"{key} is not a primitive value[x]", f"{where}.{key}")
    value = raw[key]
    _check_constant_value(value_type, value, f"{where}.{key}")
    return ConstantDef(name, value_type, value, where)


def _check_constant_value(value_type: str, value: Any, where: str) -> None:
    if value_type == "boolean":
        ok = isinstance(value, bool)
    elif value_type in ("integer", "positiveInt", "unsignedInt", "integer64"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if value_type == "integer64" and isinstance(value, str):
            ok = value.lstrip("-").isdigit()
    elif value_type == "decimal":
        ok = isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ViewDefinitionError(f"value is not a valid {value_type}", where)


def _check_union_shapes(sel: SelectDef) -> None:
    if not sel.union_all:
        return
    first = _shape(sel.union_all[0].output_columns())
    for i, branch in enumerate(sel.union_all[1:], start=1):
        shape = _shape(branch.output_columns())
        if shape != first:
            raise ViewDefinitionError(
                f"unionAll branches must have the same columns in the same order "
                f"; branch 0 has {_describe(first)}, branch {i} has {_describe(shape)}",
                f"{sel.where}.unionAll[{i}]",
            )


def _shape(columns: list[ColumnDef]) -> list[str]:
    # Types are compared after inference, in the compiler.
    return [c.name for c in columns]


def _describe(shape: list[str]) -> str:
    return "[" + ", ".join(shape) + "]"


def _check_unique_columns(model: ViewModel) -> None:
    seen: dict[str, str] = {}
    for col in model.output_columns():
        if col.name in seen:
            raise ViewDefinitionError(
                f"duplicate column name {col.name!r} (also at {seen[col.name]})", f"{col.where}.name"
            )
        seen[col.name] = col.where
