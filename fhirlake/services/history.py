"""History at instance, type and system level, newest first, with keyset paging on the change sequence."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy import Connection, text

from fhirlake.fhir.bundle_json import bundle_bytes
from fhirlake.fhir.dates import parse_date_range
from fhirlake.fhir.outcome import FhirError, not_found
from fhirlake.services.resource_body import check_type
from fhirlake.store.resources import format_instant

_KNOWN = {"_count", "_since", "_at", "_before_seq", "_format", "_pretty", "_summary", "_elements"}


def _int_param(params: dict[str, str], name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise FhirError(400, f"{name} must be a non-negative integer", code="invalid", expression=[name])
    return min(int(raw), maximum)


def history(conn: Connection, base: str, res_type: str | None, res_id: str | None, params: dict[str, str], *,
            page_default: int = 50, page_max: int = 1000, lenient: bool = False) -> bytes:
    unknown = [p for p in params if p not in _KNOWN]
    if unknown and not lenient:
        raise FhirError(400, f"Unknown history parameter '{unknown[0]}'", code="invalid", expression=[unknown[0]])
    if res_type is not None:
        check_type(res_type)
    where = ["TRUE"]
    args: dict[str, object] = {}
    if res_type is not None:
        where.append("v.res_type = :t")
        args["t"] = res_type
    if res_id is not None:
        rid = conn.execute(text("SELECT rid FROM resource WHERE res_type = :t AND res_id = :i"),
                           {"t": res_type, "i": res_id}).scalar()
        if rid is None:
            raise not_found(res_type or "", res_id)
        where.append("v.rid = :rid")
        args["rid"] = rid
    # Filters on the page (time, position) apply after the window: "the next version" must be
    # found among all versions of a resource, not only those on this page.
    page = ["TRUE"]
    if "_since" in params:
        args["since"] = _instant(params["_since"], "_since")
        page.append("w.last_updated >= :since")
    if "_at" in params:
        try:
            low, high = parse_date_range(params["_at"])
        except ValueError as exc:
            raise FhirError(400, f"_at: {exc}", code="invalid", expression=["_at"]) from exc
        # a version counts if it was current at some moment of the _at range
        page.append("w.last_updated <= :at_high AND (w.next_updated IS NULL OR w.next_updated > :at_low)")
        args["at_low"], args["at_high"] = low, high
    count = _int_param(params, "_count", page_default, page_max)
    before = params.get("_before_seq")
    if before is not None:
        if not before.isdigit():
            raise FhirError(400, "_before_seq must be an integer", code="invalid")
        page.append("w.seq < :before")
        args["before"] = int(before)
    args["limit"] = count + 1
    window = (", lead(v.last_updated) OVER (PARTITION BY v.rid ORDER BY v.version) AS next_updated"
              if "_at" in params else "")
    sql = (
        "SELECT * FROM (SELECT v.res_type, v.res_id, v.version, v.seq, v.last_updated, v.method, v.content"
        f"{window} FROM resource_version v WHERE {' AND '.join(where)}) w"
        f" WHERE {' AND '.join(page)} ORDER BY w.seq DESC LIMIT :limit"
    )
    rows = conn.execute(text(sql), args).all()
    has_more = len(rows) > count
    rows = rows[:count]

    path = "/".join(p for p in (res_type, res_id) if p) + "/_history"
    url = f"{base}/{path}"
    kept = {k: v for k, v in params.items() if k in _KNOWN and k != "_before_seq"}
    links = [{"relation": "self", "url": url + ("?" + urlencode({**kept, **({'_before_seq': before} if before else {})}) if kept or before else "")}]
    if has_more and rows:
        links.append({"relation": "next", "url": url + "?" + urlencode({**kept, "_before_seq": rows[-1][3]})})
    head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history", "link": links}
    if res_id is not None and "_since" not in params and "_at" not in params and before is None:
        head["total"] = conn.execute(text("SELECT count(*) FROM resource_version WHERE rid = :rid"),
                                     {"rid": args["rid"]}).scalar()
    entries = []
    for r_type, r_id, version, _seq, updated, method, content, *_ in rows:
        full = f"{base}/{r_type}/{r_id}"
        request = {"method": {"create": "POST", "update": "PUT", "delete": "DELETE"}[method],
                   "url": r_type if method == "create" else f"{r_type}/{r_id}"}
        status = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}[method]
        fields = {"fullUrl": full, "request": request,
                  "response": {"status": status, "etag": f'W/"{version}"', "lastModified": format_instant(updated)}}
        entries.append((fields, content))
    return bundle_bytes(head, entries)


def _instant(value: str, name: str) -> datetime:
    try:
        low, _high = parse_date_range(value)
    except ValueError as exc:
        raise FhirError(400, f"{name}: {exc}", code="invalid", expression=[name]) from exc
    return low
