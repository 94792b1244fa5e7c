"""Typed conversions shared by indexing and query planning: dates as ranges, normalized
strings, decimals with their implicit precision."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

DT_MIN = datetime(1, 1, 1, tzinfo=UTC)
DT_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
NUM_MIN = Decimal("-Infinity")
NUM_MAX = Decimal("Infinity")

_DATE = re.compile(
    r"^(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?(Z|[+-]\d\d:?\d\d)?)?)?)?$"
)


def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form used by string search (NFKD, combining marks removed)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _add_months(dt: datetime, months: int) -> datetime:
    month = dt.month - 1 + months
    year = dt.year + month // 12
    if year > 9999:
        return DT_MAX
    return dt.replace(year=year, month=month % 12 + 1)


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """[low, high) of a FHIR date/dateTime/instant at its precision; None if malformed.
    Values without a time zone are taken as UTC."""
    m = _DATE.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        tz = UTC
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        if month is None:
            low = datetime(int(year), 1, 1, tzinfo=tz)
            return low, _add_months(low, 12)
        if day is None:
            low = datetime(int(year), int(month), 1, tzinfo=tz)
            return low, _add_months(low, 1)
        if hour is None:
            low = datetime(int(year), int(month), int(day), tzinfo=tz)
            return low, low + timedelta(days=1)
        if minute is None:
            low = datetime(int(year), int(month), int(day), int(hour), tzinfo=tz)
            return low, low + timedelta(hours=1)
        if second is None:
            low = datetime(int(year), int(month), int(day), int(hour), int(minute), tzinfo=tz)
            return low, low + timedelta(minutes=1)
        micro = int((fraction or "")[:6].ljust(6, "0")) if fraction else 0
        low = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
        step = timedelta(microseconds=10 ** (6 - min(len(fraction), 6))) if fraction else timedelta(seconds=1)
        return low, low + step
    except (ValueError, OverflowError):
        return None


def to_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def decimal_precision_range(text: str) -> tuple[Decimal, Decimal, Decimal] | None:
    """(value, low, high) where [low, high) is the range implied by the number's significant
    digits, as the spec defines for number/quantity eq: 100 -> [99.5, 100.5)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return value, value - half, value + half
