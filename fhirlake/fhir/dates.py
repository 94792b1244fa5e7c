"""FHIR date/dateTime/instant strings as time ranges: the precision of a value is its range.

``2013`` means [2013-01-01T00:00, 2014-01-01T00:00). Values without a zone are taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _add_months(ts: datetime, months: int) -> datetime:
    total = ts.month - 1 + months
    return ts.replace(year=ts.year + total // 12, month=total % 12 + 1)


def parse_date_range(value: str) -> tuple[datetime, datetime]:
    """Return [low, high) for a FHIR date, dateTime or instant. Raises ValueError when malformed."""
    m = _DATE_RE.match(value.strip())
    if not m:
        raise ValueError(f"'{value}' is not a FHIR date/dateTime")
    g = m.groupdict()
    tz = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        from datetime import timezone

        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        year = int(g["y"])
        if g["m"] is None:
            low = datetime(year, 1, 1, tzinfo=tz)
            return low.astimezone(UTC), _add_months(low, 12).astimezone(UTC)
        month = int(g["m"])
        if g["d"] is None:
            low = datetime(year, month, 1, tzinfo=tz)
            return low.astimezone(UTC), _add_months(low, 1).astimezone(UTC)
        day = int(g["d"])
        if g["H"] is None:
            low = datetime(year, month, day, tzinfo=tz)
            return low.astimezone(UTC), (low + timedelta(days=1)).astimezone(UTC)
        hour, minute = int(g["H"]), int(g["M"])
        if g["S"] is None:
            low = datetime(year, month, day, hour, minute, tzinfo=tz)
            return low.astimezone(UTC), (low + timedelta(minutes=1)).astimezone(UTC)
        second = int(g["S"])
        frac = g["f"] or ""
        micro = int((frac + "000000")[:6]) if frac else 0
        low = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        step = timedelta(microseconds=10 ** (6 - min(len(frac), 6))) if frac else timedelta(seconds=1)
        return low.astimezone(UTC), (low + step).astimezone(UTC)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid date: {exc}") from exc
