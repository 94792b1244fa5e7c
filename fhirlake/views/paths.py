"""Compile a view's FHIRPath expressions with the project's FHIRPath engine, adding the view functions
getResourceKey() and getReferenceKey([type]), and turning engine errors into ViewDefinitionErrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirlake.fhir.fhirpath import FhirPathError, parse
from fhirlake.fhir.fhirpath import ast as fp_ast

from .errors import ViewDefinitionError
from .keys import reference_key, resource_key

PathFn = Callable[[Any, dict[str, Any]], list]

# Variables every view path may use besides its constants.
BUILTIN_VARIABLES = frozenset({"resource", "rootResource", "context", "rowIndex", "ucum", "sct", "loinc"})


def parse_path(path: str, where: str) -> fp_ast.Node:
    try:
        return parse(path)
    except FhirPathError as exc:
        raise ViewDefinitionError(f"invalid FHIRPath {path!r}: {exc}", where) from exc


# Engine calling convention: fn(env, focus: list, *argument_collections) -> list | value | None.
def _get_resource_key(env: Any, focus: list, *args: Any) -> list:
    keys = [resource_key(item) for item in focus]
    return [k for k in keys if k is not None]


def _get_reference_key(env: Any, focus: list, *args: list) -> list:
    wanted = args[0][0] if args and args[0] and isinstance(args[0][0], str) else None
    keys = [reference_key(item, wanted) for item in focus]
    return [k for k in keys if k is not None]


def quote_type_arguments(path: str, node: fp_ast.Node) -> str:
    """getReferenceKey(Patient) -> getReferenceKey('Patient').

    The type argument is a type name, not a path: evaluated as a path it would select the
    resource itself (in a Patient view) or nothing. Quoting it hands the name to the function.
    """
    from .analysis import walk

    spots = []
    for item in walk(node):
        if isinstance(item, fp_ast.FunctionCall) and item.name == "getReferenceKey" and item.args:
            arg = item.args[0]
            if isinstance(arg, (fp_ast.Identifier, fp_ast.TypeSpecifier)) and path.startswith(arg.name, arg.pos):
                spots.append((arg.pos, arg.name))
    for pos, name in sorted(spots, reverse=True):
        path = f"{path[:pos]}'{name}'{path[pos + len(name):]}"
    return path


VIEW_FUNCTIONS: dict[str, Callable[..., list]] = {
    "getResourceKey": _get_resource_key,
    "getReferenceKey": _get_reference_key,
}


def compile_fhirpath(path: str, where: str, context_type: str | None = None) -> PathFn:
    from fhirlake.fhir.fhirpath import compile_path  # the engine lands separately from the parser

    node = parse_path(path, where)
    source = quote_type_arguments(path, node) if "getReferenceKey" in path else path
    try:
        return compile_path(source, functions=VIEW_FUNCTIONS)
    except FhirPathError as exc:
        raise ViewDefinitionError(f"invalid FHIRPath {path!r}: {exc}", where) from exc
