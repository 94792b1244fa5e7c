"""The general back end: rows built per resource by compiled FHIRPath closures.

A select produces, for each focus node, the cross product of its own columns, each nested select's
rows and the concatenation of its unionAll branches' rows. forEach / forEachOrNull / repeat choose
the focus nodes and set %rowIndex (0-based position in the iterated collection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

from fhirlake.fhir.fhirpath import FhirPathError

from .errors import ViewDefinitionError
from .paths import PathFn
from .values import CellTypeError

Row = tuple


@dataclass
class ColumnPlan:
    name: str
    fn: PathFn
    collection: bool
    convert: Callable[[Any], Any]
    where: str


@dataclass
class SelectPlan:
    columns: list[ColumnPlan]
    selects: list[SelectPlan]
    union_all: list[SelectPlan]
    mode: str | None  # None | "forEach" | "forEachOrNull" | "repeat"
    iterate: list[PathFn]  # one path, or the repeat paths
    width: int  # number of output columns of this select (nested ones included)
    where: str


def _run(fn: PathFn, node: Any, env: dict[str, Any], where: str) -> list:
    try:
        return fn(node, env)
    except FhirPathError as exc:
        raise ViewDefinitionError(f"FHIRPath evaluation failed: {exc}", where) from exc


def _cell(col: ColumnPlan, node: Any, env: dict[str, Any]) -> Any:
    values = _run(col.fn, node, env, f"{col.where}.path")
    try:
        if col.collection:
            return [col.convert(v) for v in values]
        if not values:
            return None
        if len(values) > 1:
            raise ViewDefinitionError(
                f"column {col.name!r} got {len(values)} values; declare \"collection\": true to keep them all",
                f"{col.where}.path",
            )
        return col.convert(values[0])
    except CellTypeError as exc:
        raise ViewDefinitionError(f"column {col.name!r}: {exc}", f"{col.where}.path") from exc


def _repeat(plan: SelectPlan, node: Any, env: dict[str, Any]) -> list:
    """Depth-first, pre-order: each node reached by any of the paths, then what is reached from it."""
    out: list = []

    def visit(current: Any) -> None:
        for fn in plan.iterate:
            for child in _run(fn, current, env, f"{plan.where}.repeat"):
                out.append(child)
                visit(child)

    visit(node)
    return out


def select_rows(plan: SelectPlan, node: Any, env: dict[str, Any]) -> list[Row]:
    if plan.mode is None:
        return _focus_rows(plan, node, env)
    if plan.mode == "repeat":
        items = _repeat(plan, node, env)
    else:
        items = _run(plan.iterate[0], node, env, f"{plan.where}.{plan.mode}")
    rows: list[Row] = []
    for index, item in enumerate(items):
        item_env = dict(env)
        item_env["rowIndex"] = index
        rows.extend(_focus_rows(plan, item, item_env))
    if not items and plan.mode == "forEachOrNull":
        return [_null_row(plan, env)]
    return rows


def _null_row(plan: SelectPlan, env: dict[str, Any]) -> Row:
    """forEachOrNull over nothing: one row; own columns see an empty focus and %rowIndex 0."""
    null_env = dict(env)
    null_env["rowIndex"] = 0
    own = tuple(_cell(col, [], null_env) for col in plan.columns)
    return own + (None,) * (plan.width - len(own))


def _focus_rows(plan: SelectPlan, node: Any, env: dict[str, Any]) -> list[Row]:
    parts: list[list[Row]] = [[tuple(_cell(col, node, env) for col in plan.columns)]]
    for sub in plan.selects:
        sub_rows = select_rows(sub, node, env)
        if not sub_rows:
            return []
        parts.append(sub_rows)
    if plan.union_all:
        union_rows: list[Row] = []
        for branch in plan.union_all:
            union_rows.extend(select_rows(branch, node, env))
        if not union_rows:
            return []
        parts.append(union_rows)
    if len(parts) == 1:
        return parts[0]
    return [sum(combo, ()) for combo in product(*parts)]


@dataclass
class ViewPlan:
    resource_type: str
    selects: list[SelectPlan]
    wheres: list[tuple[PathFn, str]]
    constants: dict[str, Any]
    width: int

    def resource_rows(self, resource: dict) -> list[Row]:
        env = dict(self.constants)
        env["resource"] = resource
        env["rootResource"] = resource
        env["rowIndex"] = 0
        for fn, where in self.wheres:
            result = _run(fn, resource, env, f"{where}.path")
            if not result:
                return []
            if len(result) != 1 or not isinstance(result[0], bool):
                raise ViewDefinitionError(
                    f"where path must evaluate to a boolean, got {_describe(result)}", f"{where}.path"
                )
            if not result[0]:
                return []
        parts = []
        for sel in self.selects:
            rows = select_rows(sel, resource, env)
            if not rows:
                return []
            parts.append(rows)
        if len(parts) == 1:
            return parts[0]
        return [sum(combo, ()) for combo in product(*parts)]

    def rows(self, resources: Iterable[dict]) -> Iterator[Row]:
        wanted = self.resource_type
        for resource in resources:
            if isinstance(resource, dict) and resource.get("resourceType") == wanted:
                yield from self.resource_rows(resource)


def _describe(values: list) -> str:
    shown = repr(values)
    return shown if len(shown) <= 80 else shown[:77] + "..."
