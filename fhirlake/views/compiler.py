"""compile_view(): validate a ViewDefinition completely, then build its schema and its evaluators."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from fhirlake.fhir import structure
from fhirlake.fhir.fhirpath import ast as fp_ast

from . import analysis
from .closures import ColumnPlan, SelectPlan, ViewPlan
from .errors import ViewDefinitionError
from .model import ColumnDef, SelectDef, ViewModel, parse_view
from .paths import BUILTIN_VARIABLES, compile_fhirpath, parse_path
from .types import META_DESCRIPTION, META_FHIR_TYPE, arrow_type
from .values import cell_converter

DEFAULT_BATCH_SIZE = 8192


@dataclass(frozen=True)
class ResolvedColumn:
    name: str
    path: str
    fhir_type: str
    collection: bool
    inferred: bool  # True when the type came from the path, not from the definition
    where: str
    description: str | None = None

    @property
    def arrow_field(self) -> pa.Field:
        meta = {META_FHIR_TYPE: self.fhir_type.encode()}
        if self.description:
            meta[META_DESCRIPTION] = self.description.encode()
        return pa.field(self.name, arrow_type(self.fhir_type, self.collection), nullable=True, metadata=meta)


class CompiledView:
    """A validated, compiled ViewDefinition. Compile once, run over any number of resources."""

    def __init__(self, model: ViewModel, columns: list[ResolvedColumn], plan: ViewPlan, definition: dict) -> None:
        self.model = model
        self.columns = columns
        self.definition = definition
        self._plan = plan
        self.schema = pa.schema([c.arrow_field for c in columns])
        self.column_names = [c.name for c in columns]
        self._fast: Any = False  # the vectorized plan (fast.py): False = not built yet, None = not possible

    @property
    def resource_type(self) -> str:
        return self.model.resource

    @property
    def name(self) -> str | None:
        return self.model.name

    def row_tuples(self, resources: Iterable[dict]) -> Iterator[tuple]:
        return self._plan.rows(resources)

    def rows(self, resources: Iterable[dict]) -> Iterator[dict]:
        names = self.column_names
        for row in self._plan.rows(resources):
            yield dict(zip(names, row, strict=True))

    def to_arrow(self, resources: Iterable[dict], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[pa.RecordBatch]:
        batch: list[tuple] = []
        for row in self._plan.rows(resources):
            batch.append(row)
            if len(batch) >= batch_size:
                yield self.batch_from_tuples(batch)
                batch = []
        if batch:
            yield self.batch_from_tuples(batch)

    def batch_from_tuples(self, rows: list[tuple]) -> pa.RecordBatch:
        if not rows:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(col, type=field.type) for col, field in zip(columns, self.schema, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def fast_plan(self) -> Any:
        """The vectorized plan of this view, or None when it is outside the vectorized subset."""
        if self._fast is False:
            from .fast import compile_fast

            self._fast = compile_fast(self.model, self.schema)
        return self._fast

    def evaluate_ndjson(self, lines: Iterable[bytes], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[pa.RecordBatch]:
        """Evaluate over raw NDJSON lines (one resource each); decimals keep their exact text."""
        from .ndjson import evaluate_lines

        return evaluate_lines(self, lines, batch_size)


def compile_view(definition: dict) -> CompiledView:
    """Validate `definition` (raising ViewDefinitionError naming the offending element) and compile it."""
    model = parse_view(definition)
    if not structure.is_resource_type(model.resource):
        raise ViewDefinitionError(f"{model.resource!r} is not a FHIR R4 resource type", "resource")
    constants = {c.name: _constant_value(c.value_type, c.value) for c in model.constants}
    known_variables = BUILTIN_VARIABLES | set(constants)
    builder = _Builder(model.resource, known_variables)
    selects = [builder.select(s, model.resource) for s in model.selects]
    wheres = []
    for w in model.wheres:
        node = builder.check(w.path, f"{w.where}.path")
        inferred = analysis.infer_type(node, model.resource, model.resource)
        if inferred is not None and inferred != "boolean":
            raise ViewDefinitionError(f"where path must evaluate to a boolean; {w.path!r} gives {inferred}", f"{w.where}.path")
        wheres.append((compile_fhirpath(w.path, f"{w.where}.path"), w.where))
    plan = ViewPlan(model.resource, selects, wheres, constants, len(builder.columns))
    return CompiledView(model, builder.columns, plan, definition)


def _constant_value(value_type: str, value: Any) -> Any:
    if value_type == "decimal":
        return Decimal(str(value)) if not isinstance(value, Decimal) else value
    if value_type == "integer64":
        return int(value)
    return value


class _Builder:
    def __init__(self, resource_type: str, known_variables: frozenset[str] | set[str]) -> None:
        self.resource_type = resource_type
        self.known_variables = known_variables
        self.columns: list[ResolvedColumn] = []

    def check(self, path: str, where: str) -> fp_ast.Node:
        node = parse_path(path, where)
        unknown = sorted(analysis.external_names(node) - self.known_variables)
        if unknown:
            raise ViewDefinitionError(f"undefined constant %{unknown[0]}", where)
        return node

    def select(self, sel: SelectDef, context_parent: str | None) -> SelectPlan:
        start = len(self.columns)
        iterate = []
        mode = None
        focus_parent = context_parent
        if sel.for_each is not None or sel.for_each_or_null is not None:
            mode = "forEach" if sel.for_each is not None else "forEachOrNull"
            path = sel.for_each if sel.for_each is not None else sel.for_each_or_null
            assert path is not None
            node = self.check(path, f"{sel.where}.{mode}")
            iterate = [compile_fhirpath(path, f"{sel.where}.{mode}")]
            focus_parent = self._parent(node, context_parent)
        elif sel.repeat is not None:
            mode = "repeat"
            for i, path in enumerate(sel.repeat):
                node = self.check(path, f"{sel.where}.repeat[{i}]")
                iterate.append(compile_fhirpath(path, f"{sel.where}.repeat[{i}]"))
            focus_parent = self._parent(self.check(sel.repeat[0], f"{sel.where}.repeat[0]"), context_parent)
        columns = [self.column(c, focus_parent) for c in sel.columns]
        selects = [self.select(s, focus_parent) for s in sel.selects]
        union_all = []
        if sel.union_all:
            union_start = len(self.columns)
            union_all.append(self.select(sel.union_all[0], focus_parent))
            first_columns = self.columns[union_start:]
            for i, branch in enumerate(sel.union_all[1:], start=1):
                branch_start = len(self.columns)
                union_all.append(self.select(branch, focus_parent))
                branch_columns = self.columns[branch_start:]
                del self.columns[branch_start:]
                self._check_union_types(first_columns, branch_columns, f"{sel.where}.unionAll[{i}]")
        return SelectPlan(columns, selects, union_all, mode, iterate, len(self.columns) - start, sel.where)

    def _parent(self, node: fp_ast.Node, context_parent: str | None) -> str | None:
        if context_parent is None:
            return None
        return analysis.infer_parent(node, context_parent, self.resource_type)

    def column(self, col: ColumnDef, context_parent: str | None) -> ColumnPlan:
        where = f"{col.where}.path"
        node = self.check(col.path, where)
        fhir_type = col.declared_type
        inferred = False
        if fhir_type is None:
            guessed = analysis.infer_type(node, context_parent, self.resource_type) if context_parent else None
            fhir_type = guessed if guessed is not None and structure.is_primitive_type(guessed) else "string"
            if guessed == "integer64":
                fhir_type = guessed
            inferred = True
        self.columns.append(ResolvedColumn(col.name, col.path, fhir_type, col.collection, inferred, col.where, col.description))
        return ColumnPlan(col.name, compile_fhirpath(col.path, where), col.collection, cell_converter(fhir_type), col.where)

    @staticmethod
    def _check_union_types(first: list[ResolvedColumn], other: list[ResolvedColumn], where: str) -> None:
        for a, b in zip(first, other, strict=True):
            if arrow_type(a.fhir_type, a.collection) != arrow_type(b.fhir_type, b.collection):
                raise ViewDefinitionError(
                    f"unionAll column {b.name!r} is {b.fhir_type}{'[]' if b.collection else ''} here but "
                    f"{a.fhir_type}{'[]' if a.collection else ''} in the first branch",
                    where,
                )
