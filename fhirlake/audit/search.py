"""``GET /AuditEvent``: search the audit trail (read-only; the API never writes or deletes it).

Parameters: ``date`` (prefixes eq, ge, gt, le, lt; any precision from year to instant), ``agent``
(client id or user), ``entity-type``, ``patient``, ``outcome`` (0, 4, 8), ``action``, ``subtype``
(interaction), ``address``, ``_id``; comma-separated values mean OR, repeated parameters AND.
``_count`` (default 50, at most 1000), ``_sort`` (``date`` or ``-date``), ``_total=accurate``.
Paging is by keyset (``_cursor``, an opaque position written into the ``next`` link), so deep
pages cost the same as the first. Unknown parameters are refused: a filter silently ignored would
mislead an auditor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Connection, and_, false, func, or_, select, true

from fhirlake.audit.render import audit_event_resource
from fhirlake.store.schema import audit_event

DEFAULT_COUNT = 50
MAX_COUNT = 1000
_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
# 0 (success) starts at HTTP 100: a stored outcome of 0 means "outcome unknown" (record.OUTCOME_UNKNOWN)
_OUTCOMES = {"0": (100, 399), "4": (400, 499), "8": (500, 599), "12": (600, 999)}
_CONTROL = {"_count", "_sort", "_total", "_cursor", "_format"}


class AuditSearchError(ValueError):
    """A bad AuditEvent search (answer 400 with an OperationOutcome)."""


def _values(params: Mapping[str, Any], name: str) -> list[str]:
    raw = params.get(name)
    if raw is None:
        return []
    return [raw] if isinstance(raw, str) else [str(v) for v in raw]


def _date_range(text: str) -> tuple[datetime, datetime]:
    """The [start, end) interval a date of any precision stands for."""
    match = _DATE.match(text)
    if match is None:
        raise AuditSearchError("invalid date value for the date parameter")
    year, month, day, hour, minute, second, zone = match.groups()
    if hour and not zone:
        raise AuditSearchError("a date with a time needs a time zone")
    if zone:
        start = datetime.fromisoformat(text.replace("Z", "+00:00"))
        step = timedelta(seconds=1) if second else timedelta(minutes=1)
        return start, start + step
    y = int(year)
    if day:
        start = datetime(y, int(month), int(day), tzinfo=UTC)
        return start, start + timedelta(days=1)
    if month:
        m = int(month)
        start = datetime(y, m, 1, tzinfo=UTC)
        return start, datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)


def _date_condition(value: str) -> ColumnElement[bool]:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    body = value[2:] if value[:2] in _PREFIXES else value
    try:
        start, end = _date_range(body)
    except ValueError as exc:
        raise AuditSearchError("invalid date value for the date parameter") from exc
    column = audit_event.c.recorded
    return {
        "eq": and_(column >= start, column < end),
        "ge": column >= start,
        "gt": column >= end,
        "le": column < end,
        "lt": column < start,
    }[prefix]


def _any_of(values: list[str], make: Any) -> ColumnElement[bool]:
    conditions = [make(v) for v in values if v != ""]
    return or_(*conditions) if conditions else false()


def _filters(params: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    t = audit_event.c
    conditions: list[ColumnElement[bool]] = []
    for name in params:
        if name in _CONTROL:
            continue
        for value in _values(params, name):
            alternatives = value.split(",")
            if name == "date":
                conditions.append(_any_of(alternatives, _date_condition))
            elif name == "agent":
                conditions.append(_any_of(alternatives, lambda v: or_(t.client_id == v, t.user_id == v)))
            elif name == "entity-type":
                conditions.append(_any_of(alternatives, lambda v: t.resource_type == v.rsplit("|", 1)[-1]))
            elif name == "patient":
                conditions.append(_any_of(alternatives, lambda v: t.patient_id == v.removeprefix("Patient/")))
            elif name == "outcome":
                bad = [v for v in alternatives if v.rsplit("|", 1)[-1] not in _OUTCOMES]
                if bad:
                    raise AuditSearchError("outcome must be one of 0, 4, 8, 12")
                conditions.append(
                    _any_of(alternatives, lambda v: t.outcome.between(*_OUTCOMES[v.rsplit("|", 1)[-1]]))
                )
            elif name == "action":
                conditions.append(_any_of(alternatives, lambda v: t.action == v))
            elif name == "subtype":
                conditions.append(_any_of(alternatives, lambda v: t.interaction == v.rsplit("|", 1)[-1]))
            elif name == "address":
                conditions.append(_any_of(alternatives, lambda v: t.source_ip == v))
            elif name == "_id":
                ids = [int(v) for v in alternatives if v.isdigit()]
                conditions.append(t.id.in_(ids) if ids else false())
            else:
                raise AuditSearchError(f"unsupported AuditEvent search parameter: {name}")
    return conditions


def _count(params: Mapping[str, Any]) -> int:
    values = _values(params, "_count")
    if not values:
        return DEFAULT_COUNT
    if not values[-1].isdigit():
        raise AuditSearchError("_count must be a non-negative integer")
    return min(int(values[-1]), MAX_COUNT)


def search_audit(
    conn: Connection, params: Mapping[str, str | Sequence[str]], base_url: str = ""
) -> dict[str, Any]:
    """Run an AuditEvent search; returns a searchset Bundle."""
    base = base_url.rstrip("/")
    conditions = _filters(params)
    count = _count(params)
    sort = (_values(params, "_sort") or ["date"])[-1]
    if sort not in {"date", "-date", "_id", "-_id"}:
        raise AuditSearchError("_sort must be date or -date")
    descending = sort.startswith("-")
    order = audit_event.c.id.desc() if descending else audit_event.c.id.asc()
    page_conditions = list(conditions)
    cursor = (_values(params, "_cursor") or [None])[-1]
    if cursor is not None:
        if not cursor.isdigit():
            raise AuditSearchError("invalid _cursor")
        position = int(cursor)
        page_conditions.append(audit_event.c.id < position if descending else audit_event.c.id > position)
    query = select(audit_event).where(and_(true(), *page_conditions)).order_by(order).limit(count + 1)
    rows = conn.execute(query).all()
    has_more = len(rows) > count
    rows = rows[:count]
    # id order stands in for date order: ids are assigned at insert, records are written as they happen
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if "accurate" in _values(params, "_total"):
        bundle["total"] = conn.execute(
            select(func.count()).select_from(audit_event).where(and_(*conditions))
        ).scalar()
    kept = [(k, v) for k in params if k != "_cursor" for v in _values(params, k)]
    links = [{"relation": "self", "url": f"{base}/AuditEvent?{urlencode(kept)}".rstrip("?")}]
    if has_more and rows:
        links.append(
            {"relation": "next", "url": f"{base}/AuditEvent?{urlencode([*kept, ('_cursor', rows[-1].id)])}"}
        )
    bundle["link"] = links
    bundle["entry"] = [
        {
            "fullUrl": f"{base}/AuditEvent/{row.id}",
            "resource": audit_event_resource(row),
            "search": {"mode": "match"},
        }
        for row in rows
    ]
    return bundle


def read_audit(conn: Connection, audit_id: str) -> dict[str, Any] | None:
    """``GET /AuditEvent/<id>``, or None when there is no such record."""
    if not audit_id.isdigit():
        return None
    row = conn.execute(select(audit_event).where(audit_event.c.id == int(audit_id))).first()
    return audit_event_resource(row) if row else None
