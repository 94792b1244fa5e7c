"""Compile the FHIRPath subset used by R4 search expressions into fast typed extractors.

An extractor maps a resource (parsed JSON) to a list of ``(value, type_code)`` pairs, where
type_code is the FHIR type of the value (``CodeableConcept``, ``dateTime``, ``Reference``, ...)
known from the type model; the indexer turns those into typed index rows.

Supported: paths ``A.b.c`` (choice elements expand to every ``b[x]`` variant), ``|`` unions,
``(path as T)``, ``.as(T)``, ``.ofType(T)``, ``.where(resolve() is T)``, ``.where(k='v')``,
``.extension('url')``, ``[n]``, ``.exists()``. Anything else falls back to the project's
FHIRPath engine (``fhirlake.fhir.fhirpath.compile_path``) with the value type inferred.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from fhirlake.fhir import structure

Item = tuple[Any, str, str]  # (json value, type code, parent key for its children)
Extractor = Callable[[dict], list[tuple[Any, str]]]
Step = Callable[[list[Item]], list[Item]]


class Unsupported(Exception):
    """The expression is outside the subset compiled here."""


_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<op>!=|[.()|\[\]=,]))")


def _tokenize(expression: str) -> list[str]:
    tokens, pos = [], 0
    expression = expression.strip()
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if not m:
            raise Unsupported(expression)
        tokens.append(m.group(m.lastgroup))
        pos = m.end()
    return tokens


@cache
def _children_options(parent: str, name: str) -> tuple[tuple[str, str, str, bool], ...]:
    """(json key, type code, next parent, is array) for element `name` under `parent`."""
    element = structure.children(parent).get(name)
    if element is None:
        return ()
    if element.is_choice:
        options = []
        for key, (el, code) in structure.json_keys(parent).items():
            if el is element:
                options.append((key, code, structure.next_parent(el, code), el.is_array))
        return tuple(options)
    code = element.types[0] if element.types else "Element"
    return ((name, code, structure.next_parent(element, code), element.is_array),)


def _child_step(name: str, only_type: str | None = None) -> Step:
    """Children called ``name``; with ``only_type``, only those of that type (a choice element
    followed by ``as``/``ofType``: one key looked up instead of every ``name[x]`` variant)."""
    options_of: dict[str, tuple[tuple[str, str, str, bool], ...]] = {}  # parent -> options, per step

    def step(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for node, _code, parent in items:
            if type(node) is not dict:
                continue
            options = options_of.get(parent)
            if options is None:
                options = _children_options(parent, name)
                if only_type is not None:
                    options = tuple(o for o in options if _type_matches(o[1], only_type))
                options_of[parent] = options
            for key, code, next_parent, _is_array in options:
                value = node.get(key)
                if value is None:
                    continue
                if type(value) is list:
                    out.extend((v, code, next_parent) for v in value if v is not None)
                else:
                    out.append((value, code, next_parent))
        return out

    step.child_name = name  # type: ignore[attr-defined]  # read by top_level_keys
    return step


def _type_matches(code: str, wanted: str) -> bool:
    return code == wanted or code.lower() == wanted.lower()


def _as_step(type_name: str) -> Step:
    def step(items: list[Item]) -> list[Item]:
        return [it for it in items if _type_matches(it[1], type_name)]

    step.as_type = type_name  # type: ignore[attr-defined]  # lets _chain fuse it into a child step
    return step


def _fuse(steps: list[Step]) -> list[Step]:
    """child(name) followed by as(T) -> child(name, only T): same items, fewer lookups."""
    out: list[Step] = []
    for s in steps:
        as_type = getattr(s, "as_type", None)
        child = getattr(out[-1], "child_name", None) if out else None
        if as_type is not None and child is not None and getattr(out[-1], "only_type", None) is None:
            out[-1] = _child_step(child, as_type)
            out[-1].only_type = as_type  # type: ignore[attr-defined]
        else:
            out.append(s)
    return out


def reference_type(reference: str) -> str | None:
    """Resource type named by a literal reference ("Patient/1", "http://x/fhir/Patient/1/_history/2")."""
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and structure.is_resource_type(parts[-2]):
        return parts[-2]
    return None


def _resolve_is_step(type_name: str) -> Step:
    def step(items: list[Item]) -> list[Item]:
        out = []
        for it in items:
            node = it[0]
            if type(node) is dict:
                ref = node.get("reference")
                if isinstance(ref, str) and reference_type(ref) == type_name:
                    out.append(it)
                elif ref is None and node.get("type") == type_name:
                    out.append(it)
        return out

    return step


def _where_eq_step(key: str, value: str) -> Step:
    def step(items: list[Item]) -> list[Item]:
        return [it for it in items if type(it[0]) is dict and it[0].get(key) == value]

    return step


def _extension_step(url: str) -> Step:
    def step(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for node, _c, _p in items:
            if type(node) is dict:
                out.extend((e, "Extension", "Extension") for e in node.get("extension", ()) if e.get("url") == url)
        return out

    return step


def _index_step(index: int) -> Step:
    def step(items: list[Item]) -> list[Item]:
        return items[index : index + 1]

    return step


def _exists_step(items: list[Item]) -> list[Item]:
    return [(bool(items), "boolean", "boolean")]


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise Unsupported(f"expected {expected!r} at {tok!r}")
        self.pos += 1
        return tok

    def union(self) -> list[list[Step]]:
        branches = [self.term()]
        while self.peek() == "|":
            self.take("|")
            branches.append(self.term())
        return branches

    def term(self) -> list[Step]:
        if self.peek() == "(":
            self.take("(")
            inner = self.union()
            if len(inner) != 1:
                raise Unsupported("union inside parentheses")
            steps = list(inner[0])
            if self.peek() == "as":
                self.take("as")
                steps.append(_as_step(self.take()))
            self.take(")")
        else:
            steps = [_ROOT_MARK(self.take())]
        while self.peek() in (".", "["):
            if self.take() == "[":
                steps.append(_index_step(int(self.take())))
                self.take("]")
                continue
            name = self.take()
            if self.peek() == "(":
                steps.append(self.function(name))
            else:
                steps.append(_child_step(name))
        return steps

    def function(self, name: str) -> Step:
        self.take("(")
        if name in ("as", "ofType"):
            step = _as_step(self.take())
        elif name == "exists":
            step = _exists_step
        elif name == "extension":
            step = _extension_step(self.take()[1:-1])
        elif name == "where" and self.peek() == "resolve":
            self.take()
            self.take("(")
            self.take(")")
            self.take("is")
            step = _resolve_is_step(self.take())
        elif name == "where" and self.peek(1) == "=":
            key = self.take()
            self.take("=")
            step = _where_eq_step(key, self.take()[1:-1])
        else:
            raise Unsupported(f"function {name}")
        self.take(")")
        return step


class _RootMark:
    """Placeholder for the first name of a path: the resource type (or a child of the context)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _ROOT_MARK(name: str) -> Any:  # noqa: N802 - reads like a node constructor
    return _RootMark(name)


def _chain(steps: list[Any], root_type: str) -> Step:
    rest = _chain_steps(steps, root_type)

    def run(items: list[Item]) -> list[Item]:
        for s in rest:
            if not items:
                return items
            items = s(items)
        return items

    return run


def _chain_steps(steps: list[Any], root_type: str) -> list[Step]:
    """The steps of one union branch, the root mark resolved and as() fused into child steps."""
    first = steps[0]
    rest: list[Step] = []
    if isinstance(first, _RootMark):
        if first.name != root_type:
            rest.append(_child_step(first.name))  # relative path (composite components)
    else:
        rest.append(first)
    for s in steps[1:]:
        if isinstance(s, _RootMark):
            raise Unsupported("nested root")
        rest.append(s)
    return _fuse(rest)


def compile_items(expression: str, root_type: str) -> Callable[[list[Item]], list[Item]]:
    """Compile an expression evaluated on items whose type is root_type (a resource type, or an
    element path such as "Observation.component" for composite components)."""
    parser = _Parser(_tokenize(expression))
    branches = parser.union()
    if parser.peek() is not None:
        raise Unsupported(f"trailing {parser.peek()!r} in {expression}")
    runners = [_chain(b, root_type) for b in branches]
    if len(runners) == 1:
        return runners[0]

    def run_all(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for r in runners:
            out.extend(r(items))
        return out

    return run_all


def top_level_keys(expression: str, root_type: str) -> frozenset[str] | None:
    """The JSON keys of a resource of ``root_type`` that the expression can read first, or None
    when that cannot be told (fallback engine, relative or non-path start). A resource with none
    of these keys yields nothing, so the indexer can skip the expression without running it."""
    if _DECEASED.match(expression.strip()):
        return None  # yields a boolean even when the element is absent
    try:
        parser = _Parser(_tokenize(expression))
        branches = parser.union()
    except Unsupported:
        return None
    if parser.peek() is not None:
        return None
    keys: set[str] = set()
    for steps in branches:
        first = steps[0]
        if not isinstance(first, _RootMark) or first.name != root_type or len(steps) < 2:
            return None
        name = getattr(steps[1], "child_name", None)
        if name is None:
            return None
        keys.update(key for key, _code, _next, _arr in _children_options(root_type, name))
    return frozenset(keys)


_DECEASED = re.compile(r"^(\w+)\.(\w+)\.exists\(\) and \1\.\2 != false$")


def compile_triples(expression: str, res_type: str) -> Callable[[dict], list[Item]] | None:
    """Like compile_extractor, but yields (value, type code, parent) items without repacking them;
    None when the expression needs compile_extractor's special cases or fallback."""
    if _DECEASED.match(expression.strip()):
        return None
    try:
        parser = _Parser(_tokenize(expression))
        branches = parser.union()
        if parser.peek() is not None:
            raise Unsupported(f"trailing {parser.peek()!r} in {expression}")
        runners = [_root_runner(_chain_steps(b, res_type), res_type) for b in branches]
    except Unsupported:
        return None
    if len(runners) == 1:
        return runners[0]

    def triples(resource: dict) -> list[Item]:
        out: list[Item] = []
        for run in runners:
            out.extend(run(resource))
        return out

    return triples


def _root_runner(steps: list[Step], res_type: str) -> Callable[[dict], list[Item]]:
    """A branch run on the resource itself. The first step, nearly always a child step, is done
    here with its options resolved at compile time: the same items as running it on
    ``[(resource, res_type, res_type)]``, without the list and the per-item lookups."""
    first_name = getattr(steps[0], "child_name", None) if steps else None
    if first_name is None:
        def run_generic(resource: dict) -> list[Item]:
            items: list[Item] = [(resource, res_type, res_type)]
            for s in steps:
                if not items:
                    return items
                items = s(items)
            return items

        return run_generic
    only_type = getattr(steps[0], "only_type", None)
    options = _children_options(res_type, first_name)
    if only_type is not None:
        options = tuple(o for o in options if _type_matches(o[1], only_type))
    tail = steps[1:]
    if len(options) == 1 and not tail:  # "Observation.code": one key, nothing after it
        key, code, next_parent, _is_array = options[0]

        def run_one(resource: dict) -> list[Item]:
            if type(resource) is not dict:
                return []
            value = resource.get(key)
            if value is None:
                return []
            if type(value) is list:
                return [(v, code, next_parent) for v in value if v is not None]
            return [(value, code, next_parent)]

        return run_one

    def run(resource: dict) -> list[Item]:
        if type(resource) is not dict:
            return []
        items: list[Item] = []
        for key, code, next_parent, _is_array in options:
            value = resource.get(key)
            if value is None:
                continue
            if type(value) is list:
                items.extend((v, code, next_parent) for v in value if v is not None)
            else:
                items.append((value, code, next_parent))
        for s in tail:
            if not items:
                return items
            items = s(items)
        return items

    return run


def compile_extractor(expression: str, res_type: str) -> Extractor:
    """Extractor from a resource to its (value, type_code) pairs for one search expression."""
    m = _DECEASED.match(expression.strip())
    if m:  # Patient.deceased.exists() and Patient.deceased != false -> a boolean token
        inner = compile_items(f"{m.group(1)}.{m.group(2)}", res_type)

        def deceased(resource: dict) -> list[tuple[Any, str]]:
            values = inner([(resource, res_type, res_type)])
            return [(bool(values) and not any(v is False for v, _c, _p in values), "boolean")]

        return deceased
    try:
        run = compile_items(expression, res_type)
    except Unsupported:
        return _fallback(expression)

    def extract(resource: dict) -> list[tuple[Any, str]]:
        return [(v, c) for v, c, _p in run([(resource, res_type, res_type)])]

    return extract


def infer_type(value: Any) -> str:
    """Best-effort FHIR type of a JSON value produced by a generic FHIRPath engine."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "decimal"
    if isinstance(value, str):
        return "dateTime" if re.match(r"^\d{4}(-\d\d(-\d\d)?)?(T|$)", value) else "string"
    if isinstance(value, dict):
        if "coding" in value or "text" in value and len(value) == 1:
            return "CodeableConcept"
        if "reference" in value:
            return "Reference"
        if "start" in value or "end" in value:
            return "Period"
        if "value" in value and ("unit" in value or "code" in value):
            return "Quantity"
        if "system" in value and "value" in value:
            return "Identifier"
        if "code" in value:
            return "Coding"
    return "Element"


def _fallback(expression: str) -> Extractor:
    try:
        from fhirlake.fhir.fhirpath import compile_path  # type: ignore[attr-defined]
    except ImportError:
        return lambda resource: []
    compiled = compile_path(expression)

    def extract(resource: dict) -> list[tuple[Any, str]]:
        return [(v, infer_type(v)) for v in compiled(resource, {})]

    return extract
