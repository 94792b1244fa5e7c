"""FHIRPath value objects that JSON has no type for: Quantity and partial dates/times.

Dates and times keep their precision; comparing two values of different precision can give
"unknown" (None), as the specification requires.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

# Calendar duration keywords -> UCUM code (definite-duration units they may equal).
CALENDAR_UNITS = {
    "year": "a", "years": "a", "month": "mo", "months": "mo", "week": "wk", "weeks": "wk",
    "day": "d", "days": "d", "hour": "h", "hours": "h", "minute": "min", "minutes": "min",
    "second": "s", "seconds": "s", "millisecond": "ms", "milliseconds": "ms",
}

# A small UCUM table: unit -> (dimension, factor to the dimension's base unit).
_UCUM: dict[str, tuple[str, Decimal]] = {
    "ms": ("time", Decimal("0.001")), "s": ("time", Decimal(1)), "min": ("time", Decimal(60)),
    "h": ("time", Decimal(3600)), "d": ("time", Decimal(86400)), "wk": ("time", Decimal(604800)),
    "ug": ("mass", Decimal("0.000001")), "mg": ("mass", Decimal("0.001")), "g": ("mass", Decimal(1)),
    "kg": ("mass", Decimal(1000)), "[lb_av]": ("mass", Decimal("453.59237")),
    "mm": ("length", Decimal("0.001")), "cm": ("length", Decimal("0.01")), "m": ("length", Decimal(1)),
    "km": ("length", Decimal(1000)), "[in_i]": ("length", Decimal("0.0254")),
    "[ft_i]": ("length", Decimal("0.3048")),
    "mL": ("volume", Decimal("0.001")), "dL": ("volume", Decimal("0.1")), "L": ("volume", Decimal(1)),
    "l": ("volume", Decimal(1)), "ml": ("volume", Decimal("0.001")),
}


@dataclass(frozen=True, slots=True)
class Quantity:
    value: Decimal | int
    unit: str = "1"

    def __str__(self) -> str:
        unit = self.unit
        if unit in CALENDAR_UNITS:
            return f"{self.value} {unit}"
        return f"{self.value} '{unit}'"

    def canonical(self, for_equality: bool) -> tuple[str, Decimal] | None:
        """(dimension-or-unit, value in base units); calendar years/months only match themselves."""
        unit = self.unit
        if unit in CALENDAR_UNITS:
            code = CALENDAR_UNITS[unit]
            if code in ("a", "mo"):
                return ("cal-" + code, Decimal(self.value))
            unit = code
        elif for_equality and unit in ("a", "mo"):
            return ("ucum-" + unit, Decimal(self.value))
        hit = _UCUM.get(unit)
        if hit is None:
            return (unit, Decimal(self.value))
        return (hit[0], Decimal(self.value) * hit[1])


_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_TIME_RE = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
_TZ_RE = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def _parse_tz(text: str) -> tuple[str, int | None]:
    m = _TZ_RE.search(text)
    if not m:
        return text, None
    tz = m.group(1)
    body = text[: m.start()]
    if tz == "Z":
        return body, 0
    sign = -1 if tz[0] == "-" else 1
    return body, sign * (int(tz[1:3]) * 60 + int(tz[4:6]))


def _format_tz(offset: int | None) -> str:
    if offset is None:
        return ""
    if offset == 0:
        return "Z"
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    return f"{sign}{offset // 60:02d}:{offset % 60:02d}"


class _Temporal:
    """Shared comparison logic: `parts` are the components up to the value's precision."""

    __slots__ = ()
    parts: tuple[int, ...]

    def _comparable(self, other: _Temporal) -> tuple[tuple, tuple] | None:
        return self._key(), other._key()

    def _key(self) -> tuple:
        return self.parts

    def compare(self, other: _Temporal) -> int | None:
        """-1/0/1, or None when the answer depends on the missing precision."""
        a, b = self._key(), other._key()
        for x, y in zip(a, b, strict=False):
            if x != y:
                return -1 if x < y else 1
        return 0 if len(a) == len(b) else None

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class FhirDate(_Temporal):
    __slots__ = ("parts",)

    def __init__(self, *parts: int) -> None:
        self.parts = tuple(parts)

    @property
    def precision(self) -> int:
        """1 = year, 2 = month, 3 = day"""
        return len(self.parts)

    @classmethod
    def parse(cls, text: str) -> FhirDate | None:
        m = _DATE_RE.match(text)
        if not m:
            return None
        return cls(*(int(g) for g in m.groups() if g is not None))

    def __str__(self) -> str:
        p = self.parts
        return "-".join([f"{p[0]:04d}"] + [f"{x:02d}" for x in p[1:]])

    def to_datetime(self) -> FhirDateTime:
        return FhirDateTime(self.parts, None, None)


class FhirTime(_Temporal):
    """hour, minute, second; `millis` is kept when given (seconds and millis are one precision)."""

    __slots__ = ("parts", "millis")

    def __init__(self, parts: tuple[int, ...], millis: int | None = None) -> None:
        self.parts = tuple(parts)
        self.millis = millis

    @property
    def precision(self) -> int:
        return len(self.parts) + (1 if self.millis is not None else 0)

    def _key(self) -> tuple:
        if len(self.parts) == 3:
            return self.parts[:2] + (self.parts[2] * 1000 + (self.millis or 0),)
        return self.parts

    @classmethod
    def parse(cls, text: str) -> FhirTime | None:
        m = _TIME_RE.match(text)
        if not m:
            return None
        h, mi, s, frac = m.groups()
        parts = tuple(int(g) for g in (h, mi, s) if g is not None)
        millis = int((frac + "00")[:3]) if frac else None
        if parts[0] > 23 or (len(parts) > 1 and parts[1] > 59) or (len(parts) > 2 and parts[2] > 59):
            return None
        return cls(parts, millis)

    def __str__(self) -> str:
        text = ":".join(f"{x:02d}" for x in self.parts)
        if self.millis is not None:
            text += f".{self.millis:03d}"
        return text


class FhirDateTime(_Temporal):
    """year..second (+ millis) with an optional time-zone offset in minutes."""

    __slots__ = ("parts", "millis", "tz")

    def __init__(self, parts: tuple[int, ...], millis: int | None = None, tz: int | None = None) -> None:
        self.parts = tuple(parts)
        self.millis = millis
        self.tz = tz

    @property
    def precision(self) -> int:
        """1 year .. 6 second, 7 millisecond"""
        return len(self.parts) + (1 if self.millis is not None else 0)

    @classmethod
    def parse(cls, text: str) -> FhirDateTime | None:
        if "T" not in text:
            d = FhirDate.parse(text)
            return None if d is None else cls(d.parts)
        date_part, time_part = text.split("T", 1)
        d = FhirDate.parse(date_part)
        if d is None:
            return None
        if not time_part:
            return cls(d.parts)
        body, tz = _parse_tz(time_part)
        if not body:
            return cls(d.parts, None, tz)
        t = FhirTime.parse(body)
        if t is None or d.precision < 3:
            return None
        return cls(d.parts + t.parts, t.millis, tz)

    def __str__(self) -> str:
        p = self.parts
        text = str(FhirDate(*p[:3]))
        if len(p) > 3:
            text += "T" + str(FhirTime(p[3:], self.millis))
        return text + _format_tz(self.tz)

    def _key(self) -> tuple:
        parts = self.parts
        if self.tz and len(parts) >= 5:  # normalize to UTC when there is a time to shift
            dt = datetime(*parts[:5]) - timedelta(minutes=self.tz)
            parts = (dt.year, dt.month, dt.day, dt.hour, dt.minute) + parts[5:]
        if len(parts) == 6:
            return parts[:5] + (parts[5] * 1000 + (self.millis or 0),)
        return parts

    def compare(self, other: _Temporal) -> int | None:
        if (
            isinstance(other, FhirDateTime) and (self.tz is None) != (other.tz is None)
            and len(self.parts) > 3 and len(other.parts) > 3
        ):
            return None  # one has a time zone, the other has not
        return super().compare(other)

    def date(self) -> FhirDate:
        return FhirDate(*self.parts[:3])


def add_duration(value: _Temporal, quantity: Quantity, sign: int) -> _Temporal:
    """date/dateTime/time + or - a time-valued quantity, keeping the value's precision."""
    from fhirlake.fhir.fhirpath.errors import FhirPathError

    if quantity.unit in ("a", "mo"):
        raise FhirPathError("UCUM 'a' and 'mo' are not calendar durations: use year/month")
    unit = CALENDAR_UNITS.get(quantity.unit, quantity.unit)
    amount = Decimal(quantity.value) * sign
    if unit != "ms":
        amount = Decimal(int(amount))  # calendar durations count whole units
    if unit in ("a", "mo"):
        if isinstance(value, FhirTime):
            raise FhirPathError("cannot add years or months to a time")
        months = int(amount) * (12 if unit == "a" else 1)
        parts = list(value.parts)
        if len(parts) == 1:
            parts[0] += months // 12 if unit == "a" or months % 12 == 0 else int(months / 12)
        else:
            total = parts[0] * 12 + (parts[1] - 1) + months
            parts[0], parts[1] = divmod(total, 12)
            parts[1] += 1
            if len(parts) > 2:
                parts[2] = min(parts[2], calendar.monthrange(parts[0], parts[1])[1])
        return _rebuild(value, tuple(parts))
    seconds_per = {"wk": 604800, "d": 86400, "h": 3600, "min": 60, "s": 1, "ms": Decimal("0.001")}
    if unit not in seconds_per:
        raise FhirPathError(f"cannot add a quantity in '{quantity.unit}' to a date/time")
    seconds = amount * seconds_per[unit]
    if isinstance(value, FhirTime):
        p = list(value.parts) + [0] * (3 - len(value.parts))
        base = datetime(2000, 1, 1, p[0], p[1], p[2], (value.millis or 0) * 1000)
        dt = base + timedelta(seconds=float(_truncate_to(seconds, len(value.parts) + 3, value)))
        new = (dt.hour, dt.minute, dt.second)[: len(value.parts)]
        millis = dt.microsecond // 1000 if value.millis is not None else None
        return FhirTime(new, millis)
    parts = value.parts
    precision = len(parts)
    p = list(parts) + [1] * (3 - min(precision, 3)) + [0] * (6 - max(precision, 3))
    millis = getattr(value, "millis", None)
    base = datetime(p[0], p[1], p[2], p[3], p[4], p[5], (millis or 0) * 1000)
    dt = base + timedelta(seconds=float(_truncate_to(seconds, precision, value)))
    full = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    if isinstance(value, FhirDate):
        return FhirDate(*full[:precision])
    return FhirDateTime(full[:precision], dt.microsecond // 1000 if millis is not None else None, value.tz)


def _truncate_to(seconds: Decimal, precision: int, value: _Temporal) -> Decimal:
    """Drop the part of a duration finer than the value's precision (e.g. hours added to a date)."""
    unit = {1: None, 2: None, 3: 86400, 4: 3600, 5: 60}.get(precision)
    if precision <= 2:
        return Decimal(0)
    if unit is None:
        return seconds
    return Decimal(int(seconds / unit)) * unit


def _rebuild(value: _Temporal, parts: tuple[int, ...]) -> _Temporal:
    if isinstance(value, FhirDate):
        return FhirDate(*parts)
    assert isinstance(value, FhirDateTime)
    return FhirDateTime(parts, value.millis, value.tz)


def now_datetime() -> FhirDateTime:
    now = datetime.now(UTC).astimezone()
    offset = now.utcoffset()
    tz = int(offset.total_seconds() // 60) if offset is not None else 0
    return FhirDateTime(
        (now.year, now.month, now.day, now.hour, now.minute, now.second), now.microsecond // 1000, tz
    )
