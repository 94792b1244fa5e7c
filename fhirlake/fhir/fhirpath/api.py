"""The public entry point: compile an expression once, evaluate it on many resources."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from fhirlake.fhir.fhirpath.compiler import Compiler, Env, unwrap
from fhirlake.fhir.fhirpath.parser import parse

_NO_VARIABLES: Mapping[str, Any] = {}


class CompiledPath:
    """A compiled FHIRPath expression; call it as `expr(resource, variables)`.

    `resource` is the input: a dict (a resource or any element), a list (a collection), or None.
    `variables` maps names without '%' to values (a list is a collection); `%resource`,
    `%rootResource` and `%context` default to the input.
    """

    __slots__ = ("expression", "_fn", "static_type", "_may_wrap")

    def __init__(self, expression: str, fn: Callable, static_type: str | None, may_wrap: bool) -> None:
        self.expression = expression
        self._fn = fn
        self.static_type = static_type
        self._may_wrap = may_wrap

    def __call__(self, resource: Any, variables: Mapping[str, Any] | None = None) -> list:
        if resource is None:
            context: list = []
        elif type(resource) is list:
            context = resource
        else:
            context = [resource]
        result = self._fn(context, Env(variables if variables is not None else _NO_VARIABLES, context))
        return unwrap(result) if self._may_wrap else result

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"


def compile_path(
    expression: str,
    functions: Mapping[str, Callable] | None = None,
    *,
    base_type: str | None = None,
) -> CompiledPath:
    """Compile `expression` (cached per expression, function set and base type).

    `functions` adds or overrides functions. Calling convention:
    `fn(env, focus: list, *args: list) -> list | value | None`, where `focus` is the input
    collection and each argument is already evaluated (a list) against the same $this as the
    call. A function with attribute `fhirpath_lazy = True` instead receives each argument as a
    callable `arg(items: list) -> list` that evaluates it with `items` as $this.
    `env.variables` holds the caller's variables, `env.resource` the resource.

    `base_type` (e.g. "Patient") types the input when the expression does not start with a
    type name, so that choice elements and `is`/`as` resolve at compile time.
    """
    key = None
    if functions is not None:
        key = tuple(sorted((name, id(fn)) for name, fn in functions.items()))
        return _compile_uncached(expression, functions, base_type, key)
    return _compile_cached(expression, base_type)


@lru_cache(maxsize=4096)
def _compile_cached(expression: str, base_type: str | None) -> CompiledPath:
    compiler = Compiler(None)
    compiled = compiler.compile(parse(expression), base_type)
    return CompiledPath(expression, compiled.fn, compiled.type, compiler.may_wrap)


_WITH_FUNCTIONS: dict[tuple, CompiledPath] = {}


def _compile_uncached(expression: str, functions: Mapping[str, Callable], base_type: str | None,
                      key: tuple) -> CompiledPath:
    cache_key = (expression, base_type, key)
    hit = _WITH_FUNCTIONS.get(cache_key)
    if hit is not None:
        return hit
    compiler = Compiler(functions)
    compiled = compiler.compile(parse(expression), base_type)
    result = CompiledPath(expression, compiled.fn, compiled.type, compiler.may_wrap)
    if len(_WITH_FUNCTIONS) < 4096:
        _WITH_FUNCTIONS[cache_key] = result
    return result
