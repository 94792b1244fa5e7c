"""lowBoundary() / highBoundary(): the range a value of limited precision stands for."""

from __future__ import annotations

import calendar
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from fhirlake.fhir.fhirpath import operators as ops
from fhirlake.fhir.fhirpath.values import FhirDate, FhirDateTime, FhirTime, Quantity

_TEMPORAL_STATIC = {"date": "date", "dateTime": "dateTime", "instant": "dateTime", "time": "time",
                    "System.Date": "date", "System.DateTime": "dateTime", "System.Time": "time"}


def boundary(value: Any, precision: int | None, high: bool, static_type: str | None = None) -> Any:
    kind = _TEMPORAL_STATIC.get(static_type or "")
    if type(value) is str:
        if kind == "date":
            value = FhirDate.parse(value)
        elif kind == "time":
            value = FhirTime.parse(value)
        elif kind == "dateTime" or "T" in value:
            value = FhirDateTime.parse(value)
        else:
            value = FhirDate.parse(value) or FhirTime.parse(value)
        if value is None:
            return None
    if type(value) is Quantity:
        b = _decimal(ops.to_decimal(value.value), precision, high)
        return None if b is None else Quantity(b, value.unit)
    if ops.is_number(value):
        return _decimal(ops.to_decimal(value), precision, high)
    if type(value) is FhirDate:
        return _date(value, precision, high)
    if type(value) is FhirDateTime:
        return _datetime(value, precision, high)
    if type(value) is FhirTime:
        return _time(value, precision, high)
    return None


def _decimal(d: Decimal, precision: int | None, high: bool) -> Decimal | None:
    precision = 8 if precision is None else precision
    if precision < 0 or precision > 28:
        return None
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    edge = d + half if high else d - half
    if precision < -exponent:  # fewer digits than the value has: truncate toward the boundary side
        result = edge.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_CEILING if high else ROUND_FLOOR)
        if d.copy_abs() < Decimal(1).scaleb(-precision):  # the value rounds to zero at this precision
            return Decimal(0).quantize(Decimal(1).scaleb(-precision)).copy_sign(d) if not high else abs(
                Decimal(0).quantize(Decimal(1).scaleb(-precision)))
        return result
    return edge.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_CEILING if high else ROUND_FLOOR)


def _fill(parts: tuple[int, ...], high: bool) -> list[int]:
    p = list(parts)
    if len(p) < 2:
        p.append(12 if high else 1)
    if len(p) < 3:
        p.append(calendar.monthrange(p[0], p[1])[1] if high else 1)
    return p


def _date(d: FhirDate, precision: int | None, high: bool) -> FhirDate | None:
    digits = {4: 1, 6: 2, 8: 3}.get(8 if precision is None else precision)
    if digits is None:
        return None
    return FhirDate(*_fill(d.parts, high)[:digits])


def _datetime(dt: FhirDateTime, precision: int | None, high: bool) -> FhirDateTime | FhirDate | None:
    precision = 17 if precision is None else precision
    p = _fill(dt.parts[:3], high) + list(dt.parts[3:])
    defaults = [23, 59, 59] if high else [0, 0, 0]
    while len(p) < 6:
        p.append(defaults[len(p) - 3])
    millis = dt.millis if dt.millis is not None else (999 if high else 0)
    tz = dt.tz if dt.tz is not None else (-720 if high else 840)
    if precision == 17:
        return FhirDateTime(tuple(p), millis, tz)
    levels = {4: 1, 6: 2, 8: 3, 10: 4, 12: 5, 14: 6}
    if precision not in levels:
        return None
    return FhirDateTime(tuple(p[: levels[precision]]), None, tz if levels[precision] > 3 else None)


def _time(t: FhirTime, precision: int | None, high: bool) -> FhirTime | None:
    precision = 9 if precision is None else precision
    p = list(t.parts)
    defaults = [59, 59] if high else [0, 0]
    while len(p) < 3:
        p.append(defaults[len(p) - 1])
    millis = t.millis if t.millis is not None else (999 if high else 0)
    if precision == 9:
        return FhirTime(tuple(p), millis)
    levels = {2: 1, 4: 2, 6: 3}
    if precision not in levels:
        return None
    return FhirTime(tuple(p[: levels[precision]]))
