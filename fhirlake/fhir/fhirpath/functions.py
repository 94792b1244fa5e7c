"""The FHIRPath function library.

PLAIN functions get their input collection and already evaluated arguments (lists):
`impl(input, *args) -> list`. SPECIAL functions build their own closure at compile time
(iteration with $this/$index, lazy arguments, type arguments).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from fhirlake.fhir.fhirpath import ast, model
from fhirlake.fhir.fhirpath import operators as ops
from fhirlake.fhir.fhirpath.boundaries import boundary
from fhirlake.fhir.fhirpath.compiler import (
    Compiled,
    Compiler,
    Env,
    PrimitiveElement,
    _type_name,
    singleton,
    to_bool,
    unwrap,
)
from fhirlake.fhir.fhirpath.errors import FhirPathError
from fhirlake.fhir.fhirpath.values import (
    CALENDAR_UNITS,
    FhirDate,
    FhirDateTime,
    FhirTime,
    Quantity,
    now_datetime,
)

# -- iteration and lazy functions -----------------------------------------------------------------


def _arity(name: str, args: tuple, lo: int, hi: int) -> None:
    if not lo <= len(args) <= hi:
        raise FhirPathError(f"{name}() takes {lo}..{hi} arguments, got {len(args)}")


def _where(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("where", args, 1, 1)
    tf = target.fn
    crit = c.compile(args[0], target.type).fn

    def where(this: list, env: Env) -> list:
        items = tf(this, env)
        if not items:
            return []
        saved = env.index
        out = []
        for i, item in enumerate(items):
            env.index = i
            r = crit([item], env)
            if r and r[0] is True:
                out.append(item)
            elif r and len(r) > 1:
                raise FhirPathError("where() criteria must give a single boolean")
        env.index = saved
        return out
    return Compiled(where, target.type)


def _select(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("select", args, 1, 1)
    tf = target.fn
    proj = c.compile(args[0], target.type)
    pf = proj.fn

    def select(this: list, env: Env) -> list:
        saved = env.index
        out: list = []
        for i, item in enumerate(tf(this, env)):
            env.index = i
            out.extend(pf([item], env))
        env.index = saved
        return out
    return Compiled(select, proj.type)


def _repeat(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("repeat", args, 1, 1)
    tf = target.fn
    pf = c.compile(args[0], None).fn

    def repeat(this: list, env: Env) -> list:
        out: list = []
        queue = list(tf(this, env))
        while queue:
            nxt: list = []
            for item in queue:
                for r in pf([item], env):
                    if not ops.contains_item(out, r):
                        out.append(r)
                        nxt.append(r)
            queue = nxt
        return out
    return Compiled(repeat)


def _exists(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("exists", args, 0, 1)
    tf = target.fn
    if not args:
        return Compiled(lambda this, env: [bool(tf(this, env))], "System.Boolean")
    where = _where(c, target, args, this_type).fn
    return Compiled(lambda this, env: [bool(where(this, env))], "System.Boolean")


def _all(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("all", args, 1, 1)
    tf = target.fn
    crit = c.compile(args[0], target.type).fn

    def all_(this: list, env: Env) -> list:
        saved = env.index
        try:
            for i, item in enumerate(tf(this, env)):
                env.index = i
                if to_bool(crit([item], env)) is not True:
                    return [False]
            return [True]
        finally:
            env.index = saved
    return Compiled(all_, "System.Boolean")


def _aggregate(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("aggregate", args, 1, 2)
    tf = target.fn
    agg = c.compile(args[0], target.type).fn
    init = c.compile(args[1], this_type).fn if len(args) > 1 else None

    def aggregate(this: list, env: Env) -> list:
        saved_index, saved_total = env.index, env.total
        env.total = init(this, env) if init else []
        try:
            for i, item in enumerate(tf(this, env)):
                env.index = i
                env.total = agg([item], env)
            return env.total
        finally:
            env.index, env.total = saved_index, saved_total
    return Compiled(aggregate)


def _iif(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("iif", args, 2, 3)
    tf = target.fn
    crit = c.compile(args[0], target.type).fn
    yes = c.compile(args[1], this_type).fn
    no = c.compile(args[2], this_type).fn if len(args) > 2 else None

    def iif(this: list, env: Env) -> list:
        focus = tf(this, env)
        if len(focus) > 1:
            raise FhirPathError("iif() needs a single input")
        r = crit(focus, env)
        if len(r) > 1 or (r and type(r[0]) is not bool):
            raise FhirPathError("iif() criterion must be a boolean")
        if r and r[0]:
            return yes(focus, env)
        return no(focus, env) if no else []
    return Compiled(iif)


def _type_function(op: str) -> Callable:
    def build(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
        _arity(op, args, 1, 1)
        namespace, name = _type_name(args[0])
        return c._type_op(op, target, namespace, name)
    return build


def _trace(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("trace", args, 1, 2)
    for a in args:
        c.compile(a, target.type)
    return target  # tracing has no effect on the result; we log nothing on the hot path


def _type(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    tf, static = target.fn, target.type

    def type_(this: list, env: Env) -> list:
        out = []
        for x in tf(this, env):
            namespace, name = model.runtime_type_name(x, static)
            out.append({"namespace": namespace, "name": name})
        return out
    return Compiled(type_)


class _SortKey:
    """Orders items by FHIRPath comparison; empty keys sort first."""

    __slots__ = ("values", "descending")

    def __init__(self, values: list, descending: list[bool]) -> None:
        self.values, self.descending = values, descending

    def __lt__(self, other: _SortKey) -> bool:
        for a, b, desc in zip(self.values, other.values, self.descending, strict=True):
            if a is None or b is None:
                if a is b:
                    continue
                return a is None  # empty keys first, either direction
            c = ops.compare(a, b)
            if c:
                return (c < 0) != desc
        return False


def _sort(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    tf = target.fn
    if not args:
        def plain_sort(this: list, env: Env) -> list:
            return sorted(unwrap(tf(this, env)), key=lambda x: _SortKey([x], [False]))
        return Compiled(plain_sort, target.type)
    keys = []
    descending = []
    for a in args:
        desc = isinstance(a, ast.Unary) and a.op == "-"
        keys.append(c.compile(a.operand if desc else a, target.type).fn)
        descending.append(desc)

    def sort(this: list, env: Env) -> list:
        items = tf(this, env)
        decorated = [(_SortKey([singleton(k([x], env)) for k in keys], descending), x) for x in items]
        decorated.sort(key=lambda pair: pair[0])
        return [x for _, x in decorated]
    return Compiled(sort, target.type)


def _conforms_to(items: list, url: list) -> list:
    resource = singleton(items)
    target = singleton(url)
    if resource is None or target is None:
        return []
    prefix = "http://hl7.org/fhir/StructureDefinition/"
    if not target.startswith(prefix):
        raise FhirPathError(f"unknown profile {target}")
    return [type(resource) is dict and resource.get("resourceType") == target[len(prefix):]]


def _precision(items: list) -> list:
    v = singleton(items)
    if v is None:
        return []
    if type(v) is int:
        return [0]
    if type(v) is float or type(v) is Decimal:
        exponent = ops.to_decimal(v).as_tuple().exponent
        return [max(-exponent, 0)] if isinstance(exponent, int) else []
    if type(v) is FhirDate:
        return [{1: 4, 2: 6, 3: 8}[v.precision]]
    if type(v) is FhirDateTime:
        return [{1: 4, 2: 6, 3: 8, 4: 10, 5: 12, 6: 14, 7: 17}[v.precision]]
    if type(v) is FhirTime:
        return [{1: 2, 2: 4, 3: 6, 4: 9}[v.precision]]
    return []


def _comparable(items: list, other: list) -> list:
    a, b = singleton(items), singleton(other)
    if type(a) is not Quantity or type(b) is not Quantity:
        return []
    ca, cb = a.canonical(False), b.canonical(False)
    return [ca is not None and cb is not None and ca[0] == cb[0]]


def _extension(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    _arity("extension", args, 1, 1)
    tf = target.fn
    url_fn = c.compile(args[0], this_type).fn

    def extension(this: list, env: Env) -> list:
        url = singleton(url_fn(this, env))
        out = []
        for item in tf(this, env):
            holder = item.element if type(item) is PrimitiveElement else item
            if type(holder) is dict:
                for ext in holder.get("extension") or ():
                    if type(ext) is dict and ext.get("url") == url:
                        out.append(ext)
        return out
    return Compiled(extension, "Extension")


def _has_value(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    tf = target.fn

    def has_value(this: list, env: Env) -> list:
        items = tf(this, env)
        if len(items) != 1:
            return [False]
        item = items[0]
        if type(item) is PrimitiveElement:
            return [item.value is not None]
        return [type(item) is not dict and type(item) is not list]
    return Compiled(has_value, "System.Boolean")


def _get_value(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    tf = target.fn

    def get_value(this: list, env: Env) -> list:
        items = tf(this, env)
        if len(items) != 1:
            return []
        item = items[0]
        if type(item) is PrimitiveElement:
            item = item.value
        return [] if item is None or type(item) is dict else [item]
    return Compiled(get_value, target.type)


def _resolve(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    """No store access here: a reference resolves to a stub typed from its literal reference."""
    tf = target.fn

    def resolve(this: list, env: Env) -> list:
        out = []
        for item in tf(this, env):
            ref = item.get("reference") if type(item) is dict else item if type(item) is str else None
            if type(ref) is not str:
                continue
            contained = _resolve_contained(ref, env)
            if contained is not None:
                out.append(contained)
                continue
            parts = ref.split("/_history/")[0].split("?")[0].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2][:1].isupper():
                out.append({"resourceType": parts[-2], "id": parts[-1]})
        return out
    return Compiled(resolve)


def _resolve_contained(ref: str, env: Env) -> dict | None:
    if not ref.startswith("#"):
        return None
    resource = env.resource
    if type(resource) is dict:
        for r in resource.get("contained") or ():
            if type(r) is dict and r.get("id") == ref[1:]:
                return r
    return None


def _member_of(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
    def member_of(this: list, env: Env) -> list:
        raise FhirPathError("memberOf() needs a terminology service, which this engine does not have")
    return Compiled(member_of)


def _children_builder(recursive: bool) -> Callable:
    def build(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
        tf = target.fn

        def run(this: list, env: Env) -> list:
            items = tf(this, env)
            if not recursive:
                return _children(items)
            out: list = []
            level = _children(items)
            while level:
                out.extend(level)
                level = _children(level)
            return out
        return Compiled(run)
    return build


def _children(items: list) -> list:
    out: list = []
    for it in items:
        if type(it) is PrimitiveElement:
            it = it.element
        if type(it) is not dict:
            continue
        for k, v in it.items():
            if k == "resourceType" or k.startswith("_"):
                continue
            if type(v) is list:
                out.extend(x for x in v if x is not None)
            elif v is not None:
                out.append(v)
    return out




# -- plain functions --------------------------------------------------------------------------------

def _single_arg(args: list, what: str = "argument") -> Any:
    return singleton(args, what)


def _boolean_list(items: list, name: str) -> list[bool]:
    out = []
    for x in unwrap(items):
        if type(x) is not bool:
            raise FhirPathError(f"{name}() needs booleans")
        out.append(x)
    return out


def _not(items: list) -> list:
    b = to_bool(items)
    return [] if b is None else [not b]


def _single(items: list) -> list:
    if len(items) > 1:
        raise FhirPathError("single() on a collection of several items")
    return items


def _string_input(items: list, name: str) -> str | None:
    v = singleton(items)
    if v is None:
        return None
    if type(v) is not str:
        raise FhirPathError(f"{name}() needs a string input")
    return v


def _string_fn(fn: Callable[..., Any], name: str) -> Callable[..., list]:
    """Wrap a function of (str, *single args) -> value; empty input or argument gives empty."""
    def run(items: list, *args: list) -> list:
        s = _string_input(items, name)
        if s is None:
            return []
        values = []
        for a in args:
            v = singleton(a)
            if v is None:
                return []
            values.append(v)
        r = fn(s, *values)
        return [] if r is None else (r if type(r) is list else [r])
    return run


def _substring(s: str, start: int, length: int | None = None) -> str | None:
    if start < 0 or start >= len(s):
        return None
    if length is None:
        return s[start:]
    return s[start : start + max(length, 0)]


def _substring_fn(items: list, *args: list) -> list:
    s = _string_input(items, "substring")
    if s is None:
        return []
    start = singleton(args[0])
    if start is None:
        return []
    length = singleton(args[1]) if len(args) > 1 else None
    r = _substring(s, start, length)
    return [] if r is None else [r]


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.DOTALL)


def _encode(s: str, kind: str) -> str | None:
    data = s.encode()
    if kind == "base64":
        return base64.b64encode(data).decode()
    if kind == "urlbase64":
        return base64.urlsafe_b64encode(data).decode()
    if kind == "hex":
        return data.hex()
    return None


def _decode(s: str, kind: str) -> str | None:
    if kind == "base64":
        return base64.b64decode(s).decode()
    if kind == "urlbase64":
        return base64.urlsafe_b64decode(s).decode()
    if kind == "hex":
        return bytes.fromhex(s).decode()
    return None


def _escape(s: str, kind: str) -> str | None:
    if kind == "html":
        return html.escape(s)
    if kind == "json":
        return json.dumps(s)[1:-1]
    return None


def _unescape(s: str, kind: str) -> str | None:
    if kind == "html":
        return html.unescape(s)
    if kind == "json":
        return json.loads('"' + re.sub(r'(?<!\\)"', '\\"', s) + '"')
    return None


def _number_input(items: list, name: str) -> Any:
    v = singleton(items)
    if v is None:
        return None
    if type(v) is Quantity or ops.is_number(v):
        return v
    raise FhirPathError(f"{name}() needs a number")


def _math(fn: Callable[[Any], Any], name: str) -> Callable[..., list]:
    def run(items: list, *args: list) -> list:
        v = _number_input(items, name)
        if v is None:
            return []
        extra = [singleton(a) for a in args]
        if any(e is None for e in extra):
            return []
        try:
            r = fn(v, *extra)
        except (ValueError, InvalidOperation, OverflowError, ZeroDivisionError):
            return []
        return [] if r is None else [r]
    return run


def _abs(v: Any) -> Any:
    if type(v) is Quantity:
        return Quantity(abs(v.value), v.unit)
    return abs(v)


def _round(v: Any, precision: int = 0) -> Decimal:
    if precision < 0:
        raise FhirPathError("round() precision must be >= 0")
    return ops.to_decimal(v).quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP)


def _to_decimal_float(v: Any) -> float:
    return float(v)


def _from_float(x: float) -> Decimal:
    return Decimal(repr(x))


def _sqrt(v: Any) -> Decimal | None:
    d = ops.to_decimal(v)
    if d < 0:
        return None
    return d.sqrt()


def _power(v: Any, p: Any) -> Any:
    if type(v) is int and type(p) is int and p >= 0:
        return v**p
    try:
        r = ops.to_decimal(v) ** ops.to_decimal(p)
    except InvalidOperation:
        return None
    if r.is_nan():
        return None
    return r


def _ln(v: Any) -> Decimal:
    return ops.to_decimal(v).ln()


def _log(v: Any, base: Any) -> Decimal:
    return ops.to_decimal(v).ln() / ops.to_decimal(base).ln()


def _exp(v: Any) -> Decimal:
    return ops.to_decimal(v).exp()


def _truncate(v: Any) -> int:
    return int(v)


def _floor(v: Any) -> int:
    return int(ops.to_decimal(v).to_integral_value(rounding=ROUND_FLOOR))


def _ceiling(v: Any) -> int:
    return int(math.ceil(ops.to_decimal(v)))


# -- conversions --------------------------------------------------------------------------------

_INT_RE = re.compile(r"^[+-]?\d+$")
_DEC_RE = re.compile(r"^[+-]?\d+(\.\d+)?$")
_QTY_RE = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*(?:'([^']+)'|([a-zA-Z]+))?$")


def _conv_boolean(v: Any) -> bool | None:
    t = type(v)
    if t is bool:
        return v
    if t is int:
        return {1: True, 0: False}.get(v)
    if t is Decimal or t is float:
        return True if v == 1 else False if v == 0 else None
    if t is str:
        low = v.lower()
        if low in ("true", "t", "yes", "y", "1", "1.0"):
            return True
        if low in ("false", "f", "no", "n", "0", "0.0"):
            return False
    return None


def _conv_integer(v: Any) -> int | None:
    t = type(v)
    if t is int:
        return v
    if t is bool:
        return 1 if v else 0
    if t is str and _INT_RE.match(v):
        return int(v)
    return None


def _conv_decimal(v: Any) -> Decimal | None:
    t = type(v)
    if t is bool:
        return Decimal(1 if v else 0)
    if t is int or t is float or t is Decimal:
        return ops.to_decimal(v)
    if t is str and _DEC_RE.match(v):
        return Decimal(v)
    return None


def _conv_string(v: Any) -> str | None:
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float or t is Decimal:
        return str(ops.to_decimal(v))
    if t is Quantity or t is FhirDate or t is FhirDateTime or t is FhirTime:
        return str(v)
    return None


def _conv_date(v: Any) -> FhirDate | None:
    if type(v) is FhirDate:
        return v
    if type(v) is FhirDateTime:
        return v.date()
    if type(v) is str:
        d = FhirDate.parse(v)
        if d is None:
            dt = FhirDateTime.parse(v)
            return dt.date() if dt is not None else None
        return d
    return None


def _conv_datetime(v: Any) -> FhirDateTime | None:
    if type(v) is FhirDateTime:
        return v
    if type(v) is FhirDate:
        return v.to_datetime()
    if type(v) is str:
        return FhirDateTime.parse(v)
    return None


def _conv_time(v: Any) -> FhirTime | None:
    if type(v) is FhirTime:
        return v
    if type(v) is str:
        return FhirTime.parse(v[1:] if v.startswith("T") else v)
    return None


def _conv_quantity(v: Any, unit: Any = None) -> Quantity | None:
    t = type(v)
    q: Quantity | None = None
    if t is Quantity:
        q = v
    elif t is bool:
        q = Quantity(Decimal(1 if v else 0), "1")
    elif t is int or t is float or t is Decimal:
        q = Quantity(ops.to_decimal(v), "1")
    elif t is dict:
        q = ops.quantity_from_dict(v)
    elif t is str:
        m = _QTY_RE.match(v.strip())
        if m:
            number, quoted, word = m.groups()
            if word is not None and word not in CALENDAR_UNITS:
                return None
            q = Quantity(Decimal(number), quoted or word or "1")
    if q is None or unit is None or unit == q.unit:
        return q
    cq, target = q.canonical(False), Quantity(1, unit).canonical(False)
    if cq and target and cq[0] == target[0]:
        return Quantity(cq[1] / target[1], unit)
    return None


def _converter(conv: Callable[..., Any], test: bool) -> Callable[..., list]:
    def run(items: list, *args: list) -> list:
        v = singleton(items)
        if v is None:
            return []
        extra = [singleton(a) for a in args]
        r = conv(v, *extra)
        if test:
            return [r is not None]
        return [] if r is None else [r]
    return run


def _index_of(s: str, sub: str) -> int:
    return s.find(sub)


def _split(s: str, sep: str) -> list:
    return s.split(sep)


def _join(items: list, *args: list) -> list:
    sep = singleton(args[0]) if args else ""
    return ["".join([]) if not items else (sep or "").join(str(x) for x in unwrap(items))]


def _to_chars(items: list) -> list:
    s = _string_input(items, "toChars")
    return [] if s is None else list(s)


def _matches(s: str, pattern: str) -> bool:
    return _regex(pattern).search(s) is not None


def _matches_full(s: str, pattern: str) -> bool:
    return _regex(pattern).fullmatch(s) is not None


def _replace_matches(s: str, pattern: str, repl: str) -> str:
    if pattern == "":
        return s
    repl = re.sub(r"\$(\d+)", r"\\\1", repl)
    return _regex(pattern).sub(repl, s)


def _replace(s: str, old: str, new: str) -> str:
    if old == "":
        return new + new.join(s) + new
    return s.replace(old, new)


def _subset_of(items: list, other: list) -> list:
    other = unwrap(other)
    return [all(ops.contains_item(other, x) for x in unwrap(items))]


def _superset_of(items: list, other: list) -> list:
    return _subset_of(other, items)


def _intersect(items: list, other: list) -> list:
    other = unwrap(other)
    return [x for x in ops.distinct(unwrap(items)) if ops.contains_item(other, x)]


def _exclude(items: list, other: list) -> list:
    other = unwrap(other)
    return [x for x in unwrap(items) if not ops.contains_item(other, x)]


def _skip(items: list, n: list) -> list:
    k = singleton(n)
    return items[max(k, 0):] if k is not None else []


def _take(items: list, n: list) -> list:
    k = singleton(n)
    return items[: max(k, 0)] if k is not None else []


def _is_distinct(items: list) -> list:
    return [len(ops.distinct(unwrap(items))) == len(items)]


def _now(items: list) -> list:
    return [now_datetime()]


def _today(items: list) -> list:
    return [now_datetime().date()]


def _time_of_day(items: list) -> list:
    n = now_datetime()
    return [FhirTime(n.parts[3:6], n.millis)]


def _boundary(high: bool) -> Callable:
    def build(c: Compiler, target: Compiled, args: tuple, this_type: str | None) -> Compiled:
        _arity("boundary", args, 0, 1)
        tf, static = target.fn, target.type
        pf = c.compile(args[0], this_type).fn if args else None

        def run(this: list, env: Env) -> list:
            v = singleton(tf(this, env))
            if v is None:
                return []
            precision = singleton(pf(this, env)) if pf else None
            r = boundary(v, precision, high, static)
            return [] if r is None else [r]
        return Compiled(run, static)
    return build


def _distinct_fn(items: list) -> list:
    return ops.distinct(unwrap(items))


def _all_bool(value: bool | None, every: bool) -> Callable[[list], list]:
    def run(items: list) -> list:
        bools = _boolean_list(items, "allTrue")
        if every:
            return [all(b is value for b in bools)]
        return [any(b is value for b in bools)]
    return run


def _length(s: str) -> int:
    return len(s)


def _upper(s: str) -> str:
    return s.upper()


def _lower(s: str) -> str:
    return s.lower()


def _trim(s: str) -> str:
    return s.strip()


def _starts_with(s: str, p: str) -> bool:
    return s.startswith(p)


def _ends_with(s: str, p: str) -> bool:
    return s.endswith(p)


def _contains_str(s: str, p: str) -> bool:
    return p in s


# name -> (impl, min args, max args, static result type: "same" = the input's, or None)
PLAIN: dict[str, tuple[Callable[..., list], int, int, str | None]] = {
    "empty": (lambda items: [not items], 0, 0, "System.Boolean"),
    "not": (_not, 0, 0, "System.Boolean"),
    "count": (lambda items: [len(items)], 0, 0, "System.Integer"),
    "allTrue": (_all_bool(True, True), 0, 0, "System.Boolean"),
    "anyTrue": (_all_bool(True, False), 0, 0, "System.Boolean"),
    "allFalse": (_all_bool(False, True), 0, 0, "System.Boolean"),
    "anyFalse": (_all_bool(False, False), 0, 0, "System.Boolean"),
    "subsetOf": (_subset_of, 1, 1, "System.Boolean"),
    "supersetOf": (_superset_of, 1, 1, "System.Boolean"),
    "distinct": (_distinct_fn, 0, 0, "same"),
    "isDistinct": (_is_distinct, 0, 0, "System.Boolean"),
    "single": (_single, 0, 0, "same"),
    "first": (lambda items: items[:1], 0, 0, "same"),
    "last": (lambda items: items[-1:], 0, 0, "same"),
    "tail": (lambda items: items[1:], 0, 0, "same"),
    "skip": (_skip, 1, 1, "same"),
    "take": (_take, 1, 1, "same"),
    "intersect": (_intersect, 1, 1, "same"),
    "exclude": (_exclude, 1, 1, "same"),
    "union": (lambda items, other: ops.distinct(unwrap(items) + unwrap(other)), 1, 1, None),
    "combine": (lambda items, other: unwrap(items) + unwrap(other), 1, 1, None),
    "toBoolean": (_converter(_conv_boolean, False), 0, 0, "System.Boolean"),
    "convertsToBoolean": (_converter(_conv_boolean, True), 0, 0, "System.Boolean"),
    "toInteger": (_converter(_conv_integer, False), 0, 0, "System.Integer"),
    "convertsToInteger": (_converter(_conv_integer, True), 0, 0, "System.Boolean"),
    "toDecimal": (_converter(_conv_decimal, False), 0, 0, "System.Decimal"),
    "convertsToDecimal": (_converter(_conv_decimal, True), 0, 0, "System.Boolean"),
    "toString": (_converter(_conv_string, False), 0, 0, "System.String"),
    "convertsToString": (_converter(_conv_string, True), 0, 0, "System.Boolean"),
    "toDate": (_converter(_conv_date, False), 0, 0, "System.Date"),
    "convertsToDate": (_converter(_conv_date, True), 0, 0, "System.Boolean"),
    "toDateTime": (_converter(_conv_datetime, False), 0, 0, "System.DateTime"),
    "convertsToDateTime": (_converter(_conv_datetime, True), 0, 0, "System.Boolean"),
    "toTime": (_converter(_conv_time, False), 0, 0, "System.Time"),
    "convertsToTime": (_converter(_conv_time, True), 0, 0, "System.Boolean"),
    "toQuantity": (_converter(_conv_quantity, False), 0, 1, "System.Quantity"),
    "convertsToQuantity": (_converter(_conv_quantity, True), 0, 1, "System.Boolean"),
    "indexOf": (_string_fn(_index_of, "indexOf"), 1, 1, "System.Integer"),
    "substring": (_substring_fn, 1, 2, "System.String"),
    "startsWith": (_string_fn(_starts_with, "startsWith"), 1, 1, "System.Boolean"),
    "endsWith": (_string_fn(_ends_with, "endsWith"), 1, 1, "System.Boolean"),
    "contains": (_string_fn(_contains_str, "contains"), 1, 1, "System.Boolean"),
    "upper": (_string_fn(_upper, "upper"), 0, 0, "System.String"),
    "lower": (_string_fn(_lower, "lower"), 0, 0, "System.String"),
    "replace": (_string_fn(_replace, "replace"), 2, 2, "System.String"),
    "matches": (_string_fn(_matches, "matches"), 1, 1, "System.Boolean"),
    "matchesFull": (_string_fn(_matches_full, "matchesFull"), 1, 1, "System.Boolean"),
    "replaceMatches": (_string_fn(_replace_matches, "replaceMatches"), 2, 2, "System.String"),
    "length": (_string_fn(_length, "length"), 0, 0, "System.Integer"),
    "toChars": (_to_chars, 0, 0, "System.String"),
    "split": (_string_fn(_split, "split"), 1, 1, "System.String"),
    "join": (_join, 0, 1, "System.String"),
    "trim": (_string_fn(_trim, "trim"), 0, 0, "System.String"),
    "encode": (_string_fn(_encode, "encode"), 1, 1, "System.String"),
    "decode": (_string_fn(_decode, "decode"), 1, 1, "System.String"),
    "escape": (_string_fn(_escape, "escape"), 1, 1, "System.String"),
    "unescape": (_string_fn(_unescape, "unescape"), 1, 1, "System.String"),
    "abs": (_math(_abs, "abs"), 0, 0, "same"),
    "ceiling": (_math(_ceiling, "ceiling"), 0, 0, "System.Integer"),
    "floor": (_math(_floor, "floor"), 0, 0, "System.Integer"),
    "truncate": (_math(_truncate, "truncate"), 0, 0, "System.Integer"),
    "exp": (_math(_exp, "exp"), 0, 0, "System.Decimal"),
    "ln": (_math(_ln, "ln"), 0, 0, "System.Decimal"),
    "log": (_math(_log, "log"), 1, 1, "System.Decimal"),
    "power": (_math(_power, "power"), 1, 1, None),
    "round": (_math(_round, "round"), 0, 1, "System.Decimal"),
    "sqrt": (_math(_sqrt, "sqrt"), 0, 0, "System.Decimal"),
    "now": (_now, 0, 0, "System.DateTime"),
    "conformsTo": (_conforms_to, 1, 1, "System.Boolean"),
    "precision": (_precision, 0, 0, "System.Integer"),
    "comparable": (_comparable, 1, 1, "System.Boolean"),
    "today": (_today, 0, 0, "System.Date"),
    "timeOfDay": (_time_of_day, 0, 0, "System.Time"),
}

SPECIAL: dict[str, Callable[[Compiler, Compiled, tuple, str | None], Compiled]] = {
    "where": _where, "select": _select, "repeat": _repeat, "exists": _exists, "all": _all,
    "aggregate": _aggregate, "iif": _iif, "is": _type_function("is"), "as": _type_function("as()"),
    "ofType": _type_function("ofType"), "trace": _trace, "type": _type, "extension": _extension,
    "hasValue": _has_value, "getValue": _get_value, "resolve": _resolve, "memberOf": _member_of,
    "lowBoundary": _boundary(False), "highBoundary": _boundary(True),
    "children": _children_builder(False), "descendants": _children_builder(True), "sort": _sort,
}

__all__ = ["PLAIN", "SPECIAL", "ast"]
