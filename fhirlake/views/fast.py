"""The vectorized back end: NDJSON bytes -> pyarrow (explicit schema) -> column operations -> rows.

It covers the common subset of views: top-level selects of columns, at most one of them with a
``forEach``; paths made of member access, ``first()``, ``[n]``, ``ofType(T)`` on choice elements,
``where(path = 'literal')``, ``getResourceKey()``, ``getReferenceKey([Type])``, ``%rowIndex`` and
string literals. A view outside the subset is not compiled here (``compile_fast`` answers None) and
the closures run instead; a batch whose data does not fit the schema (invalid FHIR) or that
needs an answer the closures give differently (e.g. ``=`` on several values) is re-run by the closures.

The reader schema comes only from the paths the view uses and the R4 structure model, never from
data. Decimal leaves are read as strings holding their exact text: before parsing, numbers under
the view's decimal keys are quoted in the raw bytes (JSON string contents cannot match the pattern,
since quotes inside strings are escaped). A view in which one key name is a decimal in one place
and another kind of number elsewhere stays with the closures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from fhirlake.fhir import structure
from fhirlake.fhir.fhirpath import ast

from .errors import ViewDefinitionError
from .keys import reference_key
from .model import ViewModel
from .paths import parse_path
from .types import INT32_TYPES, STRING_TYPES, TEMPORAL_TYPES


class Unsupported(Exception):
    """The view (or one of its paths) is outside the vectorized subset."""


class Fallback(Exception):
    """This batch must be evaluated by the closures."""


@dataclass
class Coll:
    """A FHIRPath collection per context row: element i belongs to row parent[i] (non-decreasing)."""

    parent: np.ndarray
    values: pa.Array


@dataclass
class SchemaNode:
    children: dict[str, SchemaNode] = field(default_factory=dict)
    leaf: pa.DataType | None = None
    is_array: bool = False
    fhir_code: str | None = None

    def arrow_type(self) -> pa.DataType:
        if self.leaf is not None:
            base = self.leaf
        else:
            base = pa.struct([pa.field(k, c.arrow_type()) for k, c in self.children.items()])
        return pa.list_(base) if self.is_array else base

    def child(self, key: str, is_array: bool, fhir_code: str | None, leaf: pa.DataType | None) -> SchemaNode:
        node = self.children.get(key)
        if node is None:
            node = self.children[key] = SchemaNode(leaf=leaf, is_array=is_array, fhir_code=fhir_code)
        elif node.is_array != is_array or node.leaf != leaf:
            raise Unsupported(f"{key} used with two shapes")
        return node


def _leaf_type(code: str) -> pa.DataType | None:
    if code in STRING_TYPES or code in TEMPORAL_TYPES or code == "decimal":
        return pa.string()
    if code == "boolean":
        return pa.bool_()
    if code in INT32_TYPES or code == "integer64":
        return pa.int64()
    if code.startswith("http://hl7.org/fhirpath/System."):
        return pa.string()
    return None


Op = Callable[[Coll, "Frame"], Coll]
# Quoted numbers start with this private-use character, so that a decimal written as a JSON string
# (invalid FHIR, which the closures reject) is not taken for a number.
NUMBER_MARK = "\ue000"
_NUMBER_MARK_BYTES = NUMBER_MARK.encode()


@dataclass
class Frame:
    """What a path sees besides its input: the resource-level struct (for getResourceKey) and row positions."""

    resource_ids: pa.Array | None
    row_index: np.ndarray | None


def _first_mask(parent: np.ndarray) -> np.ndarray:
    mask = np.ones(len(parent), dtype=bool)
    if len(parent) > 1:
        mask[1:] = parent[1:] != parent[:-1]
    return mask


def rank_in_group(parent: np.ndarray) -> np.ndarray:
    idx = np.arange(len(parent))
    starts = np.where(_first_mask(parent), idx, 0)
    return idx - np.maximum.accumulate(starts) if len(parent) else idx


def _filter(coll: Coll, mask: np.ndarray) -> Coll:
    return Coll(coll.parent[mask], coll.values.filter(pa.array(mask)))


class PathCompiler:
    """Compiles one path to a chain of vector operations, recording the JSON keys it reads."""

    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type

    def compile(self, node: ast.Node, parent_type: str, schema: SchemaNode) -> tuple[Op, str | None, SchemaNode]:
        """-> (op, structure parent type of the result (None for primitives/keys), schema node of the result)"""
        if isinstance(node, ast.Identifier):
            return self._member(lambda c, f: c, parent_type, schema, node.name, None)
        if isinstance(node, ast.Member):
            op, ptype, snode = self.compile(node.target, parent_type, schema)
            if ptype is None:
                raise Unsupported("member of a primitive")
            return self._member(op, ptype, snode, node.name, None)
        if isinstance(node, ast.Indexer):
            if not isinstance(node.index, ast.Literal) or type(node.index.value) is not int:
                raise Unsupported("non-literal index")
            op, ptype, snode = self.compile(node.target, parent_type, schema)
            n = node.index.value

            def index(c: Coll, f: Frame, op: Op = op) -> Coll:
                inner = op(c, f)
                return _filter(inner, rank_in_group(inner.parent) == n)
            return index, ptype, snode
        if isinstance(node, ast.External) and node.name == "rowIndex":
            def row_index(c: Coll, f: Frame) -> Coll:
                assert f.row_index is not None
                return Coll(np.arange(len(f.row_index)), pa.array(f.row_index, pa.int64()))
            return row_index, None, SchemaNode(leaf=pa.int64())
        if isinstance(node, ast.Literal) and isinstance(node.value, str):
            text = node.value

            def literal(c: Coll, f: Frame) -> Coll:
                rows = len(f.row_index) if f.row_index is not None else 0
                return Coll(np.arange(rows), pa.array([text] * rows, pa.string()))
            return literal, None, SchemaNode(leaf=pa.string())
        if isinstance(node, ast.FunctionCall):
            return self._call(node, parent_type, schema)
        raise Unsupported(type(node).__name__)

    def _member(self, op: Op, parent_type: str, snode: SchemaNode, name: str, of_type: str | None
                ) -> tuple[Op, str | None, SchemaNode]:
        element = structure.children(parent_type).get(name)
        if element is None:
            raise Unsupported(f"unknown element {parent_type}.{name}")
        if element.is_choice:
            if of_type is None:
                raise Unsupported("choice element without ofType()")
            codes = [t for t in element.types if t.lower() == of_type.lower()]
            if not codes:
                raise Unsupported(f"{name} has no type {of_type}")
            code = codes[0]
            key = name + code[0].upper() + code[1:]
        else:
            if of_type is not None:
                raise Unsupported("ofType() on a non-choice element")
            code = element.types[0] if element.types else "Element"
            key = name
        inline = element.content_reference is not None or code in structure.INLINE_TYPES
        leaf = None if inline else _leaf_type(code)
        next_type = None if leaf is not None else structure.next_parent(element, code)
        if leaf is None and not structure.children(next_type or ""):
            raise Unsupported(f"cannot read {code}")
        child = snode.child(key, element.is_array, code, leaf)
        is_array = element.is_array
        is_decimal = code == "decimal"

        def member(c: Coll, f: Frame) -> Coll:
            inner = op(c, f)
            values = pc.struct_field(inner.values, [key]) if len(inner.values) else _empty_child(inner.values, key)
            if is_array:
                lengths = pc.list_value_length(values).fill_null(0).to_numpy(zero_copy_only=False)
                parent = np.repeat(inner.parent, lengths)
                values = pc.list_flatten(values)
            else:
                parent = inner.parent
            if is_decimal and len(values):
                if pc.all(pc.starts_with(values, NUMBER_MARK)).as_py() is False:
                    raise Fallback("a decimal that was a JSON string")  # the closures report it
                values = pc.utf8_slice_codeunits(values, 1)
            valid = values.is_valid().to_numpy(zero_copy_only=False)
            if not valid.all():
                return _filter(Coll(parent, values), valid)
            return Coll(parent, values)
        return member, next_type, child

    def _call(self, node: ast.FunctionCall, parent_type: str, schema: SchemaNode) -> tuple[Op, str | None, SchemaNode]:
        name = node.name
        if name == "getResourceKey" and node.target is None and not node.args:
            if parent_type != self.resource_type:
                raise Unsupported("getResourceKey() below the resource")
            schema.child("id", False, "id", pa.string())

            def resource_key(c: Coll, f: Frame) -> Coll:
                ids = pc.struct_field(c.values, ["id"])
                valid = ids.is_valid().to_numpy(zero_copy_only=False)
                return _filter(Coll(c.parent, ids), valid)
            return resource_key, None, SchemaNode(leaf=pa.string())
        if node.target is None:
            raise Unsupported(f"{name}() without a target")
        if name == "ofType":
            arg = node.args[0] if len(node.args) == 1 else None
            target = node.target
            if not isinstance(arg, (ast.Identifier, ast.TypeSpecifier)) or not isinstance(target, (ast.Member, ast.Identifier)):
                raise Unsupported("ofType() form")
            if isinstance(target, ast.Member):
                op, ptype, snode = self.compile(target.target, parent_type, schema)
                if ptype is None:
                    raise Unsupported("ofType() on a primitive")
            else:
                op, ptype, snode = (lambda c, f: c), parent_type, schema
            return self._member(op, ptype, snode, target.name, arg.name)
        op, ptype, snode = self.compile(node.target, parent_type, schema)
        if name == "first" and not node.args:
            def first(c: Coll, f: Frame, op: Op = op) -> Coll:
                inner = op(c, f)
                return _filter(inner, _first_mask(inner.parent))
            return first, ptype, snode
        if name == "where" and len(node.args) == 1:
            return self._where(op, ptype, snode, node.args[0])
        if name == "getReferenceKey" and len(node.args) <= 1:
            wanted = None
            if node.args:
                arg = node.args[0]
                if not isinstance(arg, (ast.Identifier, ast.TypeSpecifier)):
                    raise Unsupported("getReferenceKey() argument")
                wanted = arg.name
            if ptype != "Reference":
                raise Unsupported("getReferenceKey() on a non-Reference")
            snode.child("reference", False, "string", pa.string())
            snode.child("type", False, "uri", pa.string())

            def reference_keys(c: Coll, f: Frame, op: Op = op) -> Coll:
                inner = op(c, f)
                arr = _reference_keys(inner.values, wanted)
                return _filter(Coll(inner.parent, arr), arr.is_valid().to_numpy(zero_copy_only=False))
            return reference_keys, None, SchemaNode(leaf=pa.string())
        raise Unsupported(f"function {name}()")

    def _where(self, op: Op, ptype: str | None, snode: SchemaNode, cond: ast.Node) -> tuple[Op, str | None, SchemaNode]:
        if ptype is None:
            raise Unsupported("where() on primitives")
        if not (isinstance(cond, ast.Binary) and cond.op == "=" and isinstance(cond.right, ast.Literal)
                and isinstance(cond.right.value, str)):
            raise Unsupported("where() condition")
        inner_op, _, leaf = self.compile(cond.left, ptype, snode)
        if leaf.leaf != pa.string():
            raise Unsupported("where() on a non-string")
        literal = cond.right.value

        def where(c: Coll, f: Frame) -> Coll:
            outer = op(c, f)
            n = len(outer.parent)
            focus = Coll(np.arange(n), outer.values)
            inner = inner_op(focus, f)
            if len(inner.parent) > 1 and np.any(inner.parent[1:] == inner.parent[:-1]):
                raise Fallback("'=' on several values")
            hits = np.zeros(n, dtype=bool)
            matches = pc.equal(inner.values, literal).to_numpy(zero_copy_only=False)
            hits[inner.parent[matches]] = True
            return _filter(outer, hits)
        return where, ptype, snode


def _reference_keys(references: pa.StructArray, wanted: str | None) -> pa.Array:
    """keys.reference_key over a Reference array, computed once per distinct (reference, type)."""
    refs = pc.struct_field(references, ["reference"])
    types = pc.struct_field(references, ["type"])
    if types.null_count == len(types):
        distinct = pc.unique(refs)
        keys = pa.array(
            [None if r is None else reference_key({"reference": r}, wanted) for r in distinct.to_pylist()], pa.string()
        )
        return keys.take(pc.index_in(refs, value_set=distinct))
    return pa.array(
        [
            None if r is None else reference_key({"reference": r, "type": t} if t else {"reference": r}, wanted)
            for r, t in zip(refs.to_pylist(), types.to_pylist(), strict=True)
        ],
        pa.string(),
    )


def _quote_numbers(pattern: re.Pattern[bytes], data: bytes) -> bytes:
    """Quote every number the pattern's second group matches (split is much cheaper than sub with a template)."""
    parts = pattern.split(data)
    if len(parts) == 1:
        return data
    parts[2::3] = [b'"' + _NUMBER_MARK_BYTES + number + b'"' for number in parts[2::3]]
    return b"".join(parts)


def _empty_child(values: pa.Array, key: str) -> pa.Array:
    return pa.array([], values.type.field(key).type)


@dataclass
class FastColumn:
    name: str
    op: Op
    collection: bool
    arrow_type: pa.DataType
    where: str


@dataclass
class FastView:
    reader_schema: pa.Schema
    decimal_keys: re.Pattern[bytes] | None
    resource_columns: list[FastColumn]
    for_each: Op | None
    for_each_columns: list[FastColumn]
    output_order: list[tuple[bool, int]]  # (from the forEach select?, index in its list)
    schema: pa.Schema
    resource_type: str


def compile_fast(model: ViewModel, output_schema: pa.Schema) -> FastView | None:
    """The vectorized plan of a view, or None when the view is outside the subset."""
    try:
        return _compile(model, output_schema)
    except Unsupported:
        return None


def _compile(model: ViewModel, output_schema: pa.Schema) -> FastView:
    if model.wheres or model.constants:
        raise Unsupported("where / constants")
    rt = model.resource
    root = SchemaNode()
    root.child("resourceType", False, "string", pa.string())
    compiler = PathCompiler(rt)
    resource_columns: list[FastColumn] = []
    for_each_columns: list[FastColumn] = []
    for_each = None
    order: list[tuple[bool, int]] = []
    types = {f.name: f.type for f in output_schema}
    for sel in model.selects:
        if sel.selects or sel.union_all or sel.repeat is not None or sel.for_each_or_null is not None:
            raise Unsupported("select shape")
        if sel.for_each is not None:
            if for_each is not None:
                raise Unsupported("two forEach selects")
            op, ptype, snode = compiler.compile(parse_path(sel.for_each, sel.where), rt, root)
            if ptype is None:
                raise Unsupported("forEach over primitives")
            for_each = op
            for col in sel.columns:
                col_op, _, _ = compiler.compile(parse_path(col.path, col.where), ptype, snode)
                order.append((True, len(for_each_columns)))
                for_each_columns.append(FastColumn(col.name, col_op, col.collection, types[col.name], col.where))
        else:
            for col in sel.columns:
                col_op, _, _ = compiler.compile(parse_path(col.path, col.where), rt, root)
                order.append((False, len(resource_columns)))
                resource_columns.append(FastColumn(col.name, col_op, col.collection, types[col.name], col.where))
    reader_schema = pa.schema([pa.field(k, c.arrow_type()) for k, c in root.children.items()])
    return FastView(reader_schema, _decimal_pattern(root), resource_columns, for_each, for_each_columns,
                    order, output_schema, rt)


def _decimal_pattern(root: SchemaNode) -> re.Pattern[bytes] | None:
    decimal_keys: set[str] = set()
    other_numeric: set[str] = set()

    def visit(node: SchemaNode) -> None:
        for key, child in node.children.items():
            if child.fhir_code == "decimal":
                decimal_keys.add(key)
            elif child.leaf is not None and child.leaf != pa.string():
                other_numeric.add(key)
            visit(child)
    visit(root)
    if decimal_keys & other_numeric:
        raise Unsupported("a key is both decimal and another number")
    if not decimal_keys:
        return None
    keys = b"|".join(re.escape(k.encode()) for k in sorted(decimal_keys))
    # No match can start inside a JSON string: there every '"' is escaped, so '"key"' never appears.
    return re.compile(rb'("(?:' + keys + rb')"\s*:\s*)(-?[0-9][0-9.eE+-]*)')


def _read(fast: FastView, data: bytes) -> pa.StructArray:
    if fast.decimal_keys is not None:
        data = _quote_numbers(fast.decimal_keys, data)
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=1 << 20),
            parse_options=pj.ParseOptions(explicit_schema=fast.reader_schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise Fallback(str(exc)) from exc
    return table.to_struct_array().combine_chunks() if table.num_rows else pa.array([], pa.struct(fast.reader_schema))


def _finish(col: FastColumn, coll: Coll, rows: int) -> pa.Array:
    parent = coll.parent
    try:
        values = coll.values.cast(col.arrow_type.value_type if col.collection else col.arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise Fallback(str(exc)) from exc
    if col.collection:
        counts = np.bincount(parent, minlength=rows) if len(parent) else np.zeros(rows, dtype=np.int64)
        offsets = np.zeros(rows + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), values)
    if len(parent) > 1 and np.any(parent[1:] == parent[:-1]):
        many = int(np.max(np.bincount(parent)))
        raise ViewDefinitionError(
            f"column {col.name!r} got {many} values; declare \"collection\": true to keep them all",
            f"{col.where}.path",
        )
    index = np.full(rows, -1, dtype=np.int64)
    index[parent] = np.arange(len(parent))
    return values.take(pa.array(index, mask=index < 0))


def evaluate_batch(fast: FastView, data: bytes) -> pa.RecordBatch:
    """Rows of one NDJSON chunk; raises Fallback when the closures must do it."""
    struct = _read(fast, data)
    wanted = pc.equal(pc.struct_field(struct, ["resourceType"]), fast.resource_type).fill_null(False)
    struct = struct.filter(wanted)
    n = len(struct)
    base = Coll(np.arange(n), struct)
    frame = Frame(None, np.zeros(n, dtype=np.int64))
    resource_arrays = [_finish(c, c.op(base, frame), n) for c in fast.resource_columns]
    if fast.for_each is None:
        arrays: list[Any] = resource_arrays
        by_origin = {False: resource_arrays}
    else:
        elements = fast.for_each(base, frame)
        m = len(elements.parent)
        focus = Coll(np.arange(m), elements.values)
        each_frame = Frame(None, rank_in_group(elements.parent))
        take = pa.array(elements.parent)
        by_origin = {
            False: [a.take(take) for a in resource_arrays],
            True: [_finish(c, c.op(focus, each_frame), m) for c in fast.for_each_columns],
        }
    arrays = [by_origin[origin][i] for origin, i in fast.output_order]
    return pa.RecordBatch.from_arrays(arrays, schema=fast.schema)
