"""Static facts about a column's FHIRPath, read from the AST: the %variables it uses and its FHIR type.

Type inference walks the path through the R4 structure model (``fhirlake.fhir.structure``); it
answers None where the type cannot be known from the definition alone (the caller then falls back
to ``string``), so a view's schema never depends on data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from fhirlake.fhir import structure
from fhirlake.fhir.fhirpath import ast

# Functions whose result keeps the type of their input collection.
_SAME_TYPE = frozenset(
    {
        "first", "last", "single", "tail", "skip", "take", "where", "distinct", "lowBoundary", "highBoundary",
        "trace", "intersect", "exclude", "union", "combine", "repeat",
    }
)
_BOOLEAN = frozenset(
    {
        "exists", "empty", "not", "all", "allTrue", "anyTrue", "allFalse", "anyFalse", "isDistinct",
        "subsetOf", "supersetOf", "hasValue", "contains", "startsWith", "endsWith", "matches", "is",
        "convertsToBoolean", "convertsToInteger", "convertsToDecimal", "convertsToString", "convertsToDate",
        "convertsToDateTime", "convertsToTime", "convertsToQuantity", "memberOf", "conformsTo",
    }
)
_STRING = frozenset(
    {
        "join", "toString", "substring", "upper", "lower", "replace", "replaceMatches", "trim", "toChars",
        "getResourceKey", "getReferenceKey", "encode", "decode", "escape", "unescape",
    }
)
_INTEGER = frozenset({"count", "length", "indexOf", "toInteger"})
_BOOLEAN_OPS = frozenset({"=", "!=", "~", "!~", "<", ">", "<=", ">=", "and", "or", "xor", "implies", "in", "contains"})
_SYSTEM_TYPES = {
    "String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal", "Date": "date",
    "DateTime": "dateTime", "Time": "time",
}


def walk(node: ast.Node) -> Iterator[ast.Node]:
    yield node
    for f in fields(node):
        value = getattr(node, f.name)
        if isinstance(value, ast.Node):
            yield from walk(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, ast.Node):
                    yield from walk(item)


def external_names(node: ast.Node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, ast.External)}


def _system_type(code: str) -> str:
    """'http://hl7.org/fhirpath/System.String' -> 'string'."""
    if code.startswith("http://hl7.org/fhirpath/System."):
        return _SYSTEM_TYPES.get(code.rsplit(".", 1)[1], "string")
    return code


class _Typed:
    """The inferred type of a sub-expression: the structure parent to look children up in, and the
    FHIR type code (None when unknown; 'choice' parents keep the element for ofType())."""

    __slots__ = ("parent", "code", "choice")

    def __init__(self, parent: str | None, code: str | None, choice: structure.ElementDef | None = None) -> None:
        self.parent = parent
        self.code = code
        self.choice = choice


def infer_type(node: ast.Node, context_parent: str, resource_type: str) -> str | None:
    """The FHIR type code of the values `node` yields when evaluated on a value of `context_parent`."""
    typed = _infer(node, _Typed(context_parent, context_parent), resource_type)
    return typed.code if typed is not None else None


def infer_parent(node: ast.Node, context_parent: str, resource_type: str) -> str | None:
    """The structure parent of the values `node` yields (for forEach contexts), or None."""
    typed = _infer(node, _Typed(context_parent, context_parent), resource_type)
    return typed.parent if typed is not None else None


def _member(base: _Typed, name: str) -> _Typed | None:
    if base.parent is None:
        return None
    element = structure.children(base.parent).get(name)
    if element is None:
        return None
    if element.is_choice:
        return _Typed(None, None, element)
    if element.content_reference is not None or element.types[0] in structure.INLINE_TYPES:
        return _Typed(element.structure_path, element.types[0])
    code = _system_type(element.types[0])
    return _Typed(structure.next_parent(element, code), code)


def _infer(node: ast.Node, ctx: _Typed, resource_type: str) -> _Typed | None:
    if isinstance(node, ast.Identifier):
        if node.name == resource_type and ctx.parent == resource_type:
            return ctx
        return _member(ctx, node.name)
    if isinstance(node, ast.Member):
        base = _infer(node.target, ctx, resource_type)
        return _member(base, node.name) if base is not None else None
    if isinstance(node, ast.Indexer):
        return _infer(node.target, ctx, resource_type)
    if isinstance(node, ast.Variable):
        return ctx if node.name == "$this" else _Typed(None, "integer")
    if isinstance(node, ast.External):
        if node.name == "rowIndex":
            return _Typed(None, "integer")
        if node.name in ("resource", "rootResource"):
            return _Typed(resource_type, resource_type)
        return None
    if isinstance(node, ast.Literal):
        return _literal_type(node.value)
    if isinstance(node, ast.TypeOp):
        if node.op == "is":
            return _Typed(None, "boolean")
        return _of_type(_infer(node.operand, ctx, resource_type), node.type.name)
    if isinstance(node, ast.Binary):
        if node.op in _BOOLEAN_OPS:
            return _Typed(None, "boolean")
        if node.op == "&":
            return _Typed(None, "string")
        left = _infer(node.left, ctx, resource_type)
        right = _infer(node.right, ctx, resource_type)
        if node.op == "|":
            return left if left and right and left.code == right.code else None
        if left is None or right is None:
            return None
        if node.op in ("div", "mod") and left.code == right.code == "integer":
            return _Typed(None, "integer")
        if node.op in ("+", "-", "*") and left.code == right.code and left.code in ("integer", "string"):
            return left
        if node.op in ("+", "-", "*", "/") and {left.code, right.code} <= {"integer", "decimal"}:
            return _Typed(None, "decimal")
        return None
    if isinstance(node, ast.Unary):
        return _infer(node.operand, ctx, resource_type)
    if isinstance(node, ast.FunctionCall):
        return _infer_call(node, ctx, resource_type)
    return None


def _infer_call(node: ast.FunctionCall, ctx: _Typed, resource_type: str) -> _Typed | None:
    name = node.name
    if name in _BOOLEAN:
        return _Typed(None, "boolean")
    if name in _STRING:
        return _Typed(None, "string")
    if name in _INTEGER:
        return _Typed(None, "integer")
    base = ctx if node.target is None else _infer(node.target, ctx, resource_type)
    if base is None:
        return None
    if name == "ofType" and node.args and isinstance(node.args[0], (ast.Identifier, ast.TypeSpecifier)):
        return _of_type(base, node.args[0].name)
    if name == "extension":
        return _Typed("Extension", "Extension")
    if name in _SAME_TYPE or name == "iif":
        return base if base.code is not None or base.choice is not None else None
    return None


def _of_type(base: _Typed | None, type_name: str) -> _Typed | None:
    if base is None:
        return None
    if base.choice is not None:
        for code in base.choice.types:
            if code == type_name or code.lower() == type_name.lower():
                return _Typed(code, code)
        return None
    if structure.get_type(type_name) is not None:
        return _Typed(type_name, type_name)
    return _Typed(None, _SYSTEM_TYPES.get(type_name, type_name))


def _literal_type(value: object) -> _Typed:
    if isinstance(value, bool):
        return _Typed(None, "boolean")
    if isinstance(value, int):
        return _Typed(None, "integer")
    if isinstance(value, str):
        return _Typed(None, "string")
    name = type(value).__name__
    code = {"Decimal": "decimal", "FhirDate": "date", "FhirDateTime": "dateTime", "FhirTime": "time"}.get(name)
    return _Typed(None, code)
