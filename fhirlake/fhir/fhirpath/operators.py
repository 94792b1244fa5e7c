"""Value semantics shared by operators and functions: equality, equivalence, ordering, arithmetic."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhirlake.fhir.fhirpath.errors import FhirPathError
from fhirlake.fhir.fhirpath.values import (
    CALENDAR_UNITS,
    FhirDate,
    FhirDateTime,
    FhirTime,
    Quantity,
    _Temporal,
    add_duration,
)

_TEMPORAL_TYPES = (FhirDate, FhirDateTime, FhirTime)


def is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is float or t is Decimal


def to_decimal(v: int | float | Decimal) -> Decimal:
    if type(v) is float:
        return Decimal(repr(v))
    return Decimal(v)


def parse_temporal_like(text: str, like: _Temporal) -> _Temporal | None:
    """Read a string from data as the same kind of value as `like` (implicit conversion)."""
    if isinstance(like, FhirTime):
        return FhirTime.parse(text)
    if "T" in text:
        return FhirDateTime.parse(text)
    return FhirDate.parse(text)


def _align(a: Any, b: Any) -> tuple[Any, Any]:
    """Bring two values to comparable Python types (strings from data to dates, numbers to Decimal)."""
    ta, tb = type(a), type(b)
    if ta is tb:
        return a, b
    if is_number(a) and is_number(b):
        return to_decimal(a), to_decimal(b)
    if ta is str and isinstance(b, _Temporal):
        pa = parse_temporal_like(a, b)
        if pa is not None:
            a, ta = pa, type(pa)
    elif tb is str and isinstance(a, _Temporal):
        pb = parse_temporal_like(b, a)
        if pb is not None:
            b, tb = pb, type(pb)
    if ta is FhirDate and tb is FhirDateTime:
        return a.to_datetime(), b
    if ta is FhirDateTime and tb is FhirDate:
        return a, b.to_datetime()
    if ta is Quantity and is_number(b):
        return a, Quantity(b, "1")
    if tb is Quantity and is_number(a):
        return Quantity(a, "1"), b
    if ta is Quantity and tb is dict:
        qb = quantity_from_dict(b)
        if qb is not None:
            return a, qb
    if tb is Quantity and ta is dict:
        qa = quantity_from_dict(a)
        if qa is not None:
            return qa, b
    return a, b


def quantity_from_dict(d: dict) -> Quantity | None:
    value = d.get("value")
    if value is None or not is_number(value):
        return None
    unit = d.get("code") or d.get("unit") or "1"
    return Quantity(to_decimal(value), unit)


def equals(a: Any, b: Any) -> bool | None:
    """FHIRPath `=` on two single items; None when unknown (dates of different precision)."""
    a, b = _align(a, b)
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is FhirDateTime or ta is FhirDate or ta is FhirTime:
        c = a.compare(b)
        return None if c is None else c == 0
    if ta is Quantity:
        ca, cb = a.canonical(True), b.canonical(True)
        if ca is None or cb is None:
            return None
        if ca[0] != cb[0]:
            if {ca[0][4:], cb[0][5:]} <= {"a", "mo"} or {cb[0][4:], ca[0][5:]} <= {"a", "mo"}:
                return None  # calendar year/month vs UCUM a/mo: not comparable for equality
            return False
        return ca[1] == cb[1]
    return a == b


def _normalize_string(s: str) -> str:
    return " ".join(s.lower().split())


def equivalent(a: Any, b: Any) -> bool:
    """FHIRPath `~` on two single items."""
    a, b = _align(a, b)
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is str:
        return _normalize_string(a) == _normalize_string(b)
    if ta is Decimal:
        exp = max(a.as_tuple().exponent, b.as_tuple().exponent)  # type: ignore[type-var]
        q = Decimal(1).scaleb(exp)  # type: ignore[arg-type]
        return a.quantize(q) == b.quantize(q)
    if ta is FhirDateTime or ta is FhirDate or ta is FhirTime:
        return a.compare(b) == 0
    if ta is Quantity:
        ca, cb = a.canonical(False), b.canonical(False)
        return ca is not None and cb is not None and ca[0] == cb[0] and equivalent(ca[1], cb[1])
    if ta is dict:
        return _dict_equivalent(a, b)
    return a == b


def _dict_equivalent(a: dict, b: dict) -> bool:
    keys = (set(a) | set(b)) - {"id", "extension"}
    for k in keys:
        va, vb = a.get(k), b.get(k)
        la = va if isinstance(va, list) else ([] if va is None else [va])
        lb = vb if isinstance(vb, list) else ([] if vb is None else [vb])
        if not collections_equivalent(la, lb):
            return False
    return True


def collections_equal(left: list, right: list) -> bool | None:
    if len(left) != len(right):
        return False
    result: bool | None = True
    for a, b in zip(left, right, strict=True):
        r = equals(a, b)
        if r is False:
            return False
        if r is None:
            result = None
    return result


def collections_equivalent(left: list, right: list) -> bool:
    if len(left) != len(right):
        return False
    remaining = list(right)
    for a in left:
        for i, b in enumerate(remaining):
            if equivalent(a, b):
                del remaining[i]
                break
        else:
            return False
    return True


def compare(a: Any, b: Any) -> int | None:
    """Ordering of two single items: -1/0/1, None if unknown; raises if not comparable."""
    a, b = _align(a, b)
    ta = type(a)
    if ta is not type(b):
        raise FhirPathError(f"cannot compare {type(a).__name__} with {type(b).__name__}")
    if ta is FhirDateTime or ta is FhirDate or ta is FhirTime:
        return a.compare(b)
    if ta is Quantity:
        ca, cb = a.canonical(False), b.canonical(False)
        if ca is None or cb is None or ca[0] != cb[0]:
            return None
        a, b = ca[1], cb[1]
    elif ta is bool or ta is dict:
        raise FhirPathError(f"cannot order values of type {ta.__name__}")
    return -1 if a < b else (1 if a > b else 0)


def contains_item(collection: list, item: Any) -> bool:
    for x in collection:
        if equals(x, item):
            return True
    return False


def distinct(items: list) -> list:
    out: list = []
    seen: set = set()
    for x in items:
        tx = type(x)
        if tx is str or tx is int or tx is bool:
            key = (tx, x)
            if key in seen:
                continue
            seen.add(key)
            out.append(x)
        elif not contains_item(out, x):
            out.append(x)
    return out


# -- arithmetic --------------------------------------------------------------------------------

def _num_pair(a: Any, b: Any) -> tuple[Any, Any]:
    if type(a) is int and type(b) is int:
        return a, b
    return to_decimal(a), to_decimal(b)


def add(a: Any, b: Any) -> Any:
    if type(a) is str and type(b) is str:
        return a + b
    if is_number(a) and is_number(b):
        x, y = _num_pair(a, b)
        return x + y
    if isinstance(a, (str, _Temporal)) and isinstance(b, Quantity):
        return add_duration(_as_temporal(a), b, 1)
    if type(a) is Quantity and type(b) is Quantity:
        return _quantity_sum(a, b, 1)
    raise FhirPathError(f"cannot add {type(a).__name__} and {type(b).__name__}")


def subtract(a: Any, b: Any) -> Any:
    if is_number(a) and is_number(b):
        x, y = _num_pair(a, b)
        return x - y
    if isinstance(a, (str, _Temporal)) and isinstance(b, Quantity):
        return add_duration(_as_temporal(a), b, -1)
    if type(a) is Quantity and type(b) is Quantity:
        return _quantity_sum(a, b, -1)
    raise FhirPathError(f"cannot subtract {type(b).__name__} from {type(a).__name__}")


def _as_temporal(v: Any) -> _Temporal:
    if isinstance(v, _Temporal):
        return v
    parsed = FhirDateTime.parse(v) if "T" in v else FhirDate.parse(v)
    if parsed is None:
        raise FhirPathError(f"not a date: {v!r}")
    return parsed


def _quantity_sum(a: Quantity, b: Quantity, sign: int) -> Quantity | None:
    if a.unit == b.unit:
        return Quantity(to_decimal(a.value) + sign * to_decimal(b.value), a.unit)
    ca, cb = a.canonical(False), b.canonical(False)
    if ca is None or cb is None or ca[0] != cb[0]:
        return None
    factor = ca[1] / to_decimal(a.value) if a.value else None
    if not factor:
        return None
    return Quantity((ca[1] + sign * cb[1]) / factor, a.unit)


def multiply(a: Any, b: Any) -> Any:
    if is_number(a) and is_number(b):
        x, y = _num_pair(a, b)
        return x * y
    if type(a) is Quantity and is_number(b):
        return Quantity(to_decimal(a.value) * to_decimal(b), a.unit)
    if is_number(a) and type(b) is Quantity:
        return Quantity(to_decimal(a) * to_decimal(b.value), b.unit)
    if type(a) is Quantity and type(b) is Quantity:
        return Quantity(to_decimal(a.value) * to_decimal(b.value), _unit_product(a.unit, b.unit, "."))
    raise FhirPathError(f"cannot multiply {type(a).__name__} and {type(b).__name__}")


def _unit_product(u: str, v: str, op: str) -> str:
    u = CALENDAR_UNITS.get(u, u)
    v = CALENDAR_UNITS.get(v, v)
    if v == "1":
        return u
    if u == v and op == "/":
        return "1"
    return f"{u}{op}{v}"


def divide(a: Any, b: Any) -> Any:
    try:
        if is_number(a) and is_number(b):
            if b == 0:
                return None
            return to_decimal(a) / to_decimal(b)
        if type(a) is Quantity and is_number(b):
            return None if b == 0 else Quantity(to_decimal(a.value) / to_decimal(b), a.unit)
        if type(a) is Quantity and type(b) is Quantity:
            if b.value == 0:
                return None
            ca, cb = a.canonical(False), b.canonical(False)
            if ca and cb and ca[0] == cb[0]:
                return Quantity(ca[1] / cb[1], "1")
            return Quantity(to_decimal(a.value) / to_decimal(b.value), _unit_product(a.unit, b.unit, "/"))
    except InvalidOperation:
        return None
    raise FhirPathError(f"cannot divide {type(a).__name__} by {type(b).__name__}")


def int_divide(a: Any, b: Any) -> Any:
    if not (is_number(a) and is_number(b)):
        raise FhirPathError("div needs numbers")
    if b == 0:
        return None
    x, y = _num_pair(a, b)
    q = x / y
    return int(q) if type(x) is int else int(q)


def modulo(a: Any, b: Any) -> Any:
    if not (is_number(a) and is_number(b)):
        raise FhirPathError("mod needs numbers")
    if b == 0:
        return None
    x, y = _num_pair(a, b)
    if type(x) is int:
        r = abs(x) % abs(y)
        return -r if x < 0 else r
    return x % y  # Decimal % keeps the sign of the dividend, as FHIRPath does
