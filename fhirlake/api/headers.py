"""Parsing of FHIR-relevant request headers (If-Match, Prefer, ...) and response headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from flask import Request

from fhirlake.fhir.outcome import FhirError
from fhirlake.store.resources import StoredVersion

_ETAG_RE = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_etag(value: str | None, header: str = "If-Match") -> int | None:
    if value is None or value.strip() == "":
        return None
    m = _ETAG_RE.match(value)
    if not m:
        raise FhirError(400, f'{header} must be a version ETag like W/"3"', code="invalid")
    return int(m.group(1))


def parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def prefer(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in req.headers.getlist("Prefer"):
        for part in header.split(","):
            part = part.strip()
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip().lower()] = v.strip().strip('"').lower()
            elif part:
                out[part.lower()] = ""
    return out


def lenient(req: Request) -> bool:
    return prefer(req).get("handling") == "lenient"


def version_headers(v: StoredVersion, base: str, *, location: bool = False) -> list[tuple[str, str]]:
    headers = [("ETag", v.etag), ("Last-Modified", format_datetime(v.last_updated.astimezone(UTC), usegmt=True))]
    if location:
        headers.append(("Location", f"{base}/{v.res_type}/{v.res_id}/_history/{v.version}"))
        headers.append(("Content-Location", f"{base}/{v.res_type}/{v.res_id}/_history/{v.version}"))
    return headers
