"""Compile a FHIRPath AST into nested Python closures.

Every compiled node is `fn(this: list, env: Env) -> list`: `this` is the collection the
expression (or a function argument) starts from ($this), `env` carries variables and
$index/$total. Paths over plain dicts become tight loops; types are worked out at compile
time from the R4 model where the path allows it (`Observation.value.ofType(Quantity)`
compiles to a lookup of `valueQuantity`), and from the data otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhirlake.fhir import structure
from fhirlake.fhir.fhirpath import ast, model
from fhirlake.fhir.fhirpath import operators as ops
from fhirlake.fhir.fhirpath.errors import FhirPathError
from fhirlake.fhir.fhirpath.values import FhirDate, FhirDateTime, FhirTime, Quantity

Fn = Callable[[list, "Env"], list]


class Env:
    """Per-evaluation state. Caller-supplied functions receive it as their first argument."""

    __slots__ = ("variables", "index", "total", "context", "functions")

    def __init__(self, variables: Mapping[str, Any], context: list) -> None:
        self.variables = variables
        self.context = context
        self.index: int | None = None
        self.total: Any = None

    @property
    def resource(self) -> Any:
        value = self.variables.get("resource")
        return value if value is not None else (self.context[0] if self.context else None)


class PrimitiveElement:
    """A primitive value together with its `_name` sibling (id / extension), for `.extension`."""

    __slots__ = ("value", "element")

    def __init__(self, value: Any, element: dict) -> None:
        self.value = value
        self.element = element

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrimitiveElement) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


@dataclass(frozen=True, slots=True)
class Compiled:
    fn: Fn
    type: str | None = None
    # When the node is a choice element access: (input fn, base name, ((json_key, type), ...) or None)
    choice: tuple | None = None
    # When fn is a pure path from $this: the item steps (list -> list), fused into one closure
    steps: tuple | None = None


def _this(this: list, env: Env) -> list:
    return this


def _chain(steps: tuple) -> Fn:
    """One closure for a path of member steps, without a call per level for the plumbing."""
    n = len(steps)
    if n == 0:
        return _this
    if n == 1:
        (s0,) = steps
        return lambda this, env: s0(this)
    if n == 2:
        s0, s1 = steps
        return lambda this, env: s1(s0(this))
    if n == 3:
        s0, s1, s2 = steps
        return lambda this, env: s2(s1(s0(this)))
    if n == 4:
        s0, s1, s2, s3 = steps
        return lambda this, env: s3(s2(s1(s0(this))))

    def chain(this: list, env: Env) -> list:
        for step in steps:
            this = step(this)
        return this
    return chain


def _then(target: Compiled, step: Callable[[list], list]) -> tuple[Fn, tuple | None]:
    if target.steps is not None:
        steps = target.steps + (step,)
        return _chain(steps), steps
    tf = target.fn
    return (lambda this, env: step(tf(this, env))), None


def _empty(this: list, env: Env) -> list:
    return []


# -- collection helpers ---------------------------------------------------------------------------

def singleton(items: list, what: str = "value") -> Any:
    n = len(items)
    if n == 0:
        return None
    if n > 1:
        raise FhirPathError(f"expected a single {what}, got {n} items")
    item = items[0]
    if type(item) is PrimitiveElement:
        return item.value
    return item


def to_bool(items: list) -> bool | None:
    """Singleton evaluation of collections in a boolean context."""
    n = len(items)
    if n == 0:
        return None
    if n > 1:
        raise FhirPathError(f"expected a single boolean, got {n} items")
    item = items[0]
    if type(item) is bool:
        return item
    if type(item) is PrimitiveElement and type(item.value) is bool:
        return item.value
    return True


def unwrap(items: list) -> list:
    return [x.value if type(x) is PrimitiveElement else x for x in items]


def _append_value(out: list, v: Any) -> None:
    if type(v) is list:
        if None in v:
            out.extend(x for x in v if x is not None)
        else:
            out.extend(v)
    else:
        out.append(v)


# -- member access ----------------------------------------------------------------------------------

def _member_step(key: str) -> Callable[[list], list]:
    def step(items: list) -> list:
        out: list = []
        for it in items:
            if type(it) is dict:
                v = it.get(key)
                if v is not None:
                    if type(v) is list:
                        if None in v:
                            out.extend(x for x in v if x is not None)
                        else:
                            out.extend(v)
                    else:
                        out.append(v)
            elif type(it) is PrimitiveElement:  # `.extension` / `.id` of a primitive value
                v = it.element.get(key)
                if v is not None:
                    _append_value(out, v)
        return out
    return step


def _keyed_step(keys: tuple[str, ...]) -> Callable[[list], list]:
    """Access of a choice element: the first of its typed keys found in each item."""
    if len(keys) > 6:  # Extension.value[x] has 50 variants: look at the item's few keys instead
        key_set = frozenset(keys)

        def scan_step(items: list) -> list:
            out: list = []
            for it in items:
                if type(it) is dict:
                    for k, v in it.items():
                        if k in key_set and v is not None:
                            _append_value(out, v)
                            break
            return out
        return scan_step

    def step(items: list) -> list:
        out: list = []
        for it in items:
            if type(it) is dict:
                for key in keys:
                    v = it.get(key)
                    if v is not None:
                        _append_value(out, v)
                        break
        return out
    return step


def _scan_choice(it: dict, name: str) -> Any:
    n = len(name)
    for k, v in it.items():
        if len(k) > n and k.startswith(name) and k[n].isupper():
            return v
    return None


def _generic_step(key: str) -> Callable[[list], list]:
    """Member access when the type is unknown: plain key, or a choice key found by prefix."""
    may_be_choice = key in model.choice_names()

    def step(items: list) -> list:
        out: list = []
        for it in items:
            if type(it) is dict:
                v = it.get(key)
                if v is None and may_be_choice:
                    v = _scan_choice(it, key)
                if v is not None:
                    _append_value(out, v)
            elif type(it) is PrimitiveElement and key in ("id", "extension"):
                v = it.element.get(key)
                if v is not None:
                    _append_value(out, v)
        return out
    return step


def _element_step(key: str) -> Callable[[list], list]:
    """Member access keeping primitive values' `_key` siblings (for a following `.extension`)."""
    underscored = "_" + key

    def step(items: list) -> list:
        out: list = []
        for it in items:
            if type(it) is not dict:
                continue
            v = it.get(key)
            ext = it.get(underscored)
            if ext is None:
                if v is not None:
                    _append_value(out, v)
                continue
            values = v if type(v) is list else [v]
            exts = ext if type(ext) is list else [ext]
            for i in range(max(len(values), len(exts))):
                val = values[i] if i < len(values) else None
                e = exts[i] if i < len(exts) else None
                if e is not None:
                    out.append(PrimitiveElement(val, e))
                elif val is not None:
                    out.append(val)
        return out
    return step


def _type_name(node: ast.Node) -> tuple[str | None, str]:
    """A type specifier written as an expression argument: `Quantity`, `System.String`."""
    if isinstance(node, ast.TypeSpecifier):
        return node.namespace, node.name
    if isinstance(node, ast.Identifier):
        return None, node.name
    if isinstance(node, ast.Member) and isinstance(node.target, ast.Identifier):
        return node.target.name, node.name
    raise FhirPathError("expected a type name")


# -- the compiler ---------------------------------------------------------------------------------

class Compiler:
    def __init__(self, functions: Mapping[str, Callable] | None = None) -> None:
        self.functions = dict(functions or {})
        self.may_wrap = False  # True once a step can yield PrimitiveElement (results need unwrapping)

    def compile(self, node: ast.Node, this_type: str | None, keep_elements: bool = False) -> Compiled:
        method = getattr(self, "c_" + type(node).__name__)
        if type(node) is ast.Member or type(node) is ast.Identifier:
            return method(node, this_type, keep_elements)
        return method(node, this_type)

    # terms
    def c_Literal(self, node: ast.Literal, this_type: str | None) -> Compiled:
        value = node.value
        result = [value]
        return Compiled(lambda this, env: result, "System." + (model.runtime_system_type(value) or "Any"))

    def c_EmptyLiteral(self, node: ast.EmptyLiteral, this_type: str | None) -> Compiled:
        return Compiled(_empty)

    def c_Variable(self, node: ast.Variable, this_type: str | None) -> Compiled:
        if node.name == "this":
            return Compiled(_this, this_type, None, ())
        if node.name == "index":
            return Compiled(lambda this, env: [] if env.index is None else [env.index], "System.Integer")
        return Compiled(lambda this, env: _as_list(env.total))

    def c_External(self, node: ast.External, this_type: str | None) -> Compiled:
        name = node.name
        fixed = _FIXED_CONSTANTS.get(name)
        if fixed is None and name.startswith("vs-"):
            fixed = "http://hl7.org/fhir/ValueSet/" + name[3:]
        if fixed is None and name.startswith("ext-"):
            fixed = "http://hl7.org/fhir/StructureDefinition/" + name[4:]
        if fixed is not None:
            result = [fixed]
            return Compiled(lambda this, env: result, "System.String")
        if name == "context":
            return Compiled(lambda this, env: env.variables["context"] if "context" in env.variables
                            else env.context)
        if name in ("resource", "rootResource"):
            def resource(this: list, env: Env) -> list:
                if name in env.variables:
                    return _as_list(env.variables[name])
                if "resource" in env.variables:
                    return _as_list(env.variables["resource"])
                return env.context
            return Compiled(resource)

        def variable(this: list, env: Env) -> list:
            try:
                return _as_list(env.variables[name])
            except KeyError:
                raise FhirPathError(f"unknown variable %{name}") from None
        return Compiled(variable)

    def c_Identifier(self, node: ast.Identifier, this_type: str | None, keep: bool = False) -> Compiled:
        name = node.name
        if name[:1].isupper() and (structure.get_type(name) is not None or name in ("Resource", "DomainResource")):
            return self._type_filter(name, this_type)
        return self._member(Compiled(_this, this_type, None, ()), name, keep)

    def _type_filter(self, name: str, this_type: str | None) -> Compiled:
        if this_type is not None and "." not in this_type and not this_type.startswith("System."):
            if name in model.ancestors(this_type):
                return Compiled(_this, this_type, None, ())

        def type_filter(items: list) -> list:
            if len(items) == 1:  # the usual case: one resource of the named type
                x = items[0]
                if type(x) is dict and x.get("resourceType") == name:
                    return items
            return [x for x in items if type(x) is dict and name in model.ancestors(x.get("resourceType", ""))]
        return Compiled(_chain((type_filter,)), name, None, (type_filter,))

    def c_Member(self, node: ast.Member, this_type: str | None, keep: bool = False) -> Compiled:
        target = self.compile(node.target, this_type, keep_elements=node.name in ("extension", "id"))
        return self._member(target, node.name, keep)

    def _member(self, target: Compiled, name: str, keep: bool) -> Compiled:
        tf = target.fn
        info = None
        if target.type is not None and not target.type.startswith("System."):
            info = model.member(target.type, name)
        if info is not None and info[0] == "choice":
            variants = info[1]
            fn, steps = _then(target, _keyed_step(tuple(k for k, _ in variants)))
            return Compiled(fn, None, (tf, name, variants), steps)
        if keep:
            self.may_wrap = True
            fn, steps = _then(target, _element_step(name))
            return Compiled(fn, info[1] if info else None, None, steps)
        if info is not None:
            fn, steps = _then(target, _member_step(name))
            return Compiled(fn, info[1], None, steps)
        fn, steps = _then(target, _generic_step(name))
        choice = (tf, name, None) if name in model.choice_names() else None
        return Compiled(fn, None, choice, steps)

    def c_Indexer(self, node: ast.Indexer, this_type: str | None) -> Compiled:
        target = self.compile(node.target, this_type)
        tf = target.fn
        index_fn = self.compile(node.index, this_type).fn

        def indexer(this: list, env: Env) -> list:
            items = tf(this, env)
            i = singleton(index_fn(this, env))
            if i is None:
                return []
            if type(i) is not int:
                raise FhirPathError("index must be an integer")
            return [items[i]] if 0 <= i < len(items) else []
        return Compiled(indexer, target.type)

    def c_Unary(self, node: ast.Unary, this_type: str | None) -> Compiled:
        operand = self.compile(node.operand, this_type)
        of = operand.fn
        if node.op == "+":
            return operand

        def negate(this: list, env: Env) -> list:
            v = singleton(of(this, env))
            if v is None:
                return []
            if type(v) is Quantity:
                return [Quantity(-v.value, v.unit)]
            if not ops.is_number(v):
                raise FhirPathError("unary minus needs a number")
            return [-v]
        return Compiled(negate, operand.type)

    # type operators
    def c_TypeOp(self, node: ast.TypeOp, this_type: str | None) -> Compiled:
        operand = self.compile(node.operand, this_type)
        return self._type_op(node.op, operand, node.type.namespace, node.type.name)

    def _type_op(self, op: str, operand: Compiled, namespace: str | None, name: str) -> Compiled:
        """`is` / `as` / `as()` / `ofType`."""
        if not model.is_known_type(namespace, name) and namespace != "System":
            raise FhirPathError(f"unknown type {name}")
        result_type = ("System." + name) if namespace == "System" or (
            namespace is None and structure.get_type(name) is None) else name
        if operand.choice is not None and namespace != "System":
            return self._choice_type_op(op, operand, name, result_type)
        of = operand.fn
        static = operand.type

        if op == "is":
            def is_(this: list, env: Env) -> list:
                items = of(this, env)
                if not items:
                    return []
                if len(items) > 1:
                    raise FhirPathError("'is' needs a single item")
                return [model.value_matches(items[0], static, namespace, name)]
            return Compiled(is_, "System.Boolean")

        if op == "as()":  # the function form insists on a single item, as the spec says
            def as_function(this: list, env: Env) -> list:
                items = of(this, env)
                if len(items) > 1:
                    raise FhirPathError("as() needs a single item")
                return [x for x in items if model.value_matches(x, static, namespace, name, True)]
            return Compiled(as_function, result_type)

        # The operator `as` on several items filters like ofType(): the R4 search parameters rely
        # on it ("(Observation.component.value as Quantity)" over several components).
        def of_type(this: list, env: Env) -> list:
            return [x for x in of(this, env) if model.value_matches(x, static, namespace, name, True)]
        return Compiled(of_type, result_type)

    def _choice_type_op(self, op: str, operand: Compiled, name: str, result_type: str) -> Compiled:
        """`value.ofType(Quantity)` on a choice element reads `valueQuantity` directly."""
        tf, base, variants = operand.choice  # type: ignore[misc]
        if variants is None:  # parent type unknown at compile time: read the typed key from the data
            keys: tuple[str, ...] = (base + model.cap(name),)
        elif op != "is" and name in model.FHIR_TO_SYSTEM:  # as/ofType: a code is not a string
            keys = tuple(k for k, t in variants if t == name)
        else:
            keys = tuple(k for k, t in variants if name in model.ancestors(t))
        plain = _member_step(base) if variants is None else None
        keyed = _keyed_step(keys) if keys else None

        def matching(items: list) -> tuple[list, int]:
            found = keyed(items) if keyed else []
            if plain is not None and not found:
                direct = plain(items)
                return [x for x in direct if model.value_matches(x, None, None, name)], len(direct)
            return found, len(found)

        if op == "is":
            all_step = _keyed_step(tuple(k for k, _ in variants)) if variants else _generic_step(base)

            def is_(this: list, env: Env) -> list:
                items = tf(this, env)
                found, _ = matching(items)
                if found:
                    return [True]
                return [False] if all_step(items) else []
            return Compiled(is_, "System.Boolean")

        static = result_type if not result_type.startswith("System.") else None

        def as_(this: list, env: Env) -> list:
            return matching(tf(this, env))[0]
        return Compiled(as_, static)

    # binary operators
    def c_Binary(self, node: ast.Binary, this_type: str | None) -> Compiled:
        op = node.op
        left = self.compile(node.left, this_type)
        right = self.compile(node.right, this_type)
        lf, rf = left.fn, right.fn
        if op in _COMPARISONS:  # strings from data typed date/dateTime/time compare as such
            lf, rf = _typed_temporal(lf, left.type), _typed_temporal(rf, right.type)
        builder = _BINARY_BUILDERS.get(op)
        if builder is None:
            raise FhirPathError(f"unknown operator {op}")
        result_type = left.type if op == "|" and left.type == right.type else _BINARY_TYPES.get(op)
        return Compiled(builder(lf, rf), result_type)

    # function calls
    def c_FunctionCall(self, node: ast.FunctionCall, this_type: str | None) -> Compiled:
        name = node.name
        keep = name in ("extension", "hasValue", "getValue", "children", "descendants") or (
            name in ("select", "where", "exists", "all") and any(_mentions_element_access(a) for a in node.args))
        if node.target is None:
            target = Compiled(_this, this_type, None, ())
        else:
            target = self.compile(node.target, this_type, keep_elements=keep)
        if name in self.functions:
            return self._caller_function(self.functions[name], target, node.args, this_type)
        from fhirlake.fhir.fhirpath import functions as fnlib

        special = fnlib.SPECIAL.get(name)
        if special is not None:
            return special(self, target, node.args, this_type)
        plain = fnlib.PLAIN.get(name)
        if plain is None:
            raise FhirPathError(f"unknown function {name}()")
        impl, min_args, max_args, result_type = plain
        if not min_args <= len(node.args) <= max_args:
            raise FhirPathError(f"{name}() takes {min_args}..{max_args} arguments, got {len(node.args)}")
        tf = target.fn
        arg_fns = [self.compile(a, this_type).fn for a in node.args]
        if result_type == "same":
            result_type = target.type
        if not arg_fns:
            return Compiled(lambda this, env: impl(tf(this, env)), result_type)
        if len(arg_fns) == 1:
            a0 = arg_fns[0]
            return Compiled(lambda this, env: impl(tf(this, env), a0(this, env)), result_type)
        return Compiled(lambda this, env: impl(tf(this, env), *[a(this, env) for a in arg_fns]), result_type)

    def _caller_function(self, fn: Callable, target: Compiled, args: tuple[ast.Node, ...],
                         this_type: str | None) -> Compiled:
        tf = target.fn
        if getattr(fn, "fhirpath_lazy", False):
            arg_fns = [self.compile(a, target.type).fn for a in args]

            def lazy_call(this: list, env: Env) -> list:
                arg_callables = [lambda items, a=a: a(items, env) for a in arg_fns]
                return _as_list(fn(env, unwrap(tf(this, env)), *arg_callables))
            return Compiled(lazy_call)
        arg_fns = [self.compile(a, this_type).fn for a in args]

        def call(this: list, env: Env) -> list:
            return _as_list(fn(env, unwrap(tf(this, env)), *[a(this, env) for a in arg_fns]))
        return Compiled(call)


_COMPARISONS = frozenset({"=", "!=", "~", "!~", "<", ">", "<=", ">="})
_TEMPORAL_PARSERS: dict[str, Callable[[str], Any]] = {
    "date": FhirDate.parse, "dateTime": FhirDateTime.parse, "instant": FhirDateTime.parse,
    "time": FhirTime.parse,
}


def _typed_temporal(fn: Fn, static_type: str | None) -> Fn:
    parse = _TEMPORAL_PARSERS.get(static_type or "")
    if parse is None:
        return fn

    def typed(this: list, env: Env) -> list:
        out = []
        for x in fn(this, env):
            if type(x) is str:
                parsed = parse(x)
                out.append(x if parsed is None else parsed)
            else:
                out.append(x)
        return out
    return typed


def _mentions_element_access(node: Any) -> bool:
    """Does an argument use hasValue()/extension/id on its items (needs primitive elements)?"""
    if isinstance(node, ast.FunctionCall):
        if node.name in ("hasValue", "getValue", "extension"):
            return True
        return any(_mentions_element_access(a) for a in node.args) or _mentions_element_access(node.target)
    if isinstance(node, ast.Member):
        return node.name in ("extension", "id") or _mentions_element_access(node.target)
    if isinstance(node, ast.Binary):
        return _mentions_element_access(node.left) or _mentions_element_access(node.right)
    if isinstance(node, (ast.Unary, ast.TypeOp)):
        return _mentions_element_access(node.operand)
    if isinstance(node, ast.Indexer):
        return _mentions_element_access(node.target)
    return False


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if type(value) is list:
        return value
    return [value]


_FIXED_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org", "sct": "http://snomed.info/sct", "loinc": "http://loinc.org",
}

_BINARY_TYPES = {
    "=": "System.Boolean", "!=": "System.Boolean", "~": "System.Boolean", "!~": "System.Boolean",
    "<": "System.Boolean", ">": "System.Boolean", "<=": "System.Boolean", ">=": "System.Boolean",
    "and": "System.Boolean", "or": "System.Boolean", "xor": "System.Boolean", "implies": "System.Boolean",
    "in": "System.Boolean", "contains": "System.Boolean", "&": "System.String",
}


# -- operator builders ----------------------------------------------------------------------------

def _eq(lf: Fn, rf: Fn) -> Fn:
    def eq(this: list, env: Env) -> list:
        left = lf(this, env)
        if not left:
            return []
        right = rf(this, env)
        if not right:
            return []
        if len(left) == 1 and len(right) == 1:
            a, b = left[0], right[0]
            if type(a) is str and type(b) is str:  # the common case, kept short
                return [a == b]
            r = ops.equals(_unwrap1(a), _unwrap1(b))
        else:
            r = ops.collections_equal(unwrap(left), unwrap(right))
        return [] if r is None else [r]
    return eq


def _ne(lf: Fn, rf: Fn) -> Fn:
    eq = _eq(lf, rf)

    def ne(this: list, env: Env) -> list:
        r = eq(this, env)
        return [not r[0]] if r else []
    return ne


def _equiv(lf: Fn, rf: Fn) -> Fn:
    def equiv(this: list, env: Env) -> list:
        left, right = unwrap(lf(this, env)), unwrap(rf(this, env))
        return [ops.collections_equivalent(left, right)]
    return equiv


def _not_equiv(lf: Fn, rf: Fn) -> Fn:
    e = _equiv(lf, rf)
    return lambda this, env: [not e(this, env)[0]]


def _unwrap1(v: Any) -> Any:
    return v.value if type(v) is PrimitiveElement else v


def _comparison(test: Callable[[int], bool]) -> Callable[[Fn, Fn], Fn]:
    def build(lf: Fn, rf: Fn) -> Fn:
        def cmp(this: list, env: Env) -> list:
            a = singleton(lf(this, env))
            if a is None:
                return []
            b = singleton(rf(this, env))
            if b is None:
                return []
            c = ops.compare(a, b)
            return [] if c is None else [test(c)]
        return cmp
    return build


def _and(lf: Fn, rf: Fn) -> Fn:
    def and_(this: list, env: Env) -> list:
        a = to_bool(lf(this, env))
        if a is False:
            return [False]
        b = to_bool(rf(this, env))
        if b is False:
            return [False]
        if a is None or b is None:
            return []
        return [True]
    return and_


def _or(lf: Fn, rf: Fn) -> Fn:
    def or_(this: list, env: Env) -> list:
        a = to_bool(lf(this, env))
        if a is True:
            return [True]
        b = to_bool(rf(this, env))
        if b is True:
            return [True]
        if a is None or b is None:
            return []
        return [False]
    return or_


def _xor(lf: Fn, rf: Fn) -> Fn:
    def xor(this: list, env: Env) -> list:
        a = to_bool(lf(this, env))
        b = to_bool(rf(this, env))
        if a is None or b is None:
            return []
        return [a != b]
    return xor


def _implies(lf: Fn, rf: Fn) -> Fn:
    def implies(this: list, env: Env) -> list:
        a = to_bool(lf(this, env))
        if a is False:
            return [True]
        b = to_bool(rf(this, env))
        if b is True:
            return [True]
        if a is None:
            return []
        return [False] if b is False else []
    return implies


def _union(lf: Fn, rf: Fn) -> Fn:
    return lambda this, env: ops.distinct(unwrap(lf(this, env)) + unwrap(rf(this, env)))


def _in(lf: Fn, rf: Fn) -> Fn:
    def in_(this: list, env: Env) -> list:
        left = lf(this, env)
        if not left:
            return []
        item = singleton(left)
        return [ops.contains_item(unwrap(rf(this, env)), item)]
    return in_


def _contains(lf: Fn, rf: Fn) -> Fn:
    return _in(rf, lf)


def _concat(lf: Fn, rf: Fn) -> Fn:
    def concat(this: list, env: Env) -> list:
        a, b = singleton(lf(this, env)), singleton(rf(this, env))
        return [(a if a is not None else "") + (b if b is not None else "")]
    return concat


def _arithmetic(operation: Callable[[Any, Any], Any]) -> Callable[[Fn, Fn], Fn]:
    def build(lf: Fn, rf: Fn) -> Fn:
        def arith(this: list, env: Env) -> list:
            a = singleton(lf(this, env))
            b = singleton(rf(this, env))
            if a is None or b is None:
                return []
            if type(a) is dict:
                a = ops.quantity_from_dict(a) or a
            if type(b) is dict:
                b = ops.quantity_from_dict(b) or b
            r = operation(a, b)
            return [] if r is None else [r]
        return arith
    return build


_BINARY_BUILDERS: dict[str, Callable[[Fn, Fn], Fn]] = {
    "=": _eq, "!=": _ne, "~": _equiv, "!~": _not_equiv,
    "<": _comparison(lambda c: c < 0), ">": _comparison(lambda c: c > 0),
    "<=": _comparison(lambda c: c <= 0), ">=": _comparison(lambda c: c >= 0),
    "and": _and, "or": _or, "xor": _xor, "implies": _implies,
    "|": _union, "in": _in, "contains": _contains, "&": _concat,
    "+": _arithmetic(ops.add), "-": _arithmetic(ops.subtract), "*": _arithmetic(ops.multiply),
    "/": _arithmetic(ops.divide), "div": _arithmetic(ops.int_divide), "mod": _arithmetic(ops.modulo),
}

__all__ = ["Compiled", "Compiler", "Env", "PrimitiveElement", "singleton", "to_bool", "unwrap",
           "Decimal", "FhirDate", "FhirDateTime", "FhirTime"]
