"""Content negotiation and (de)serialization of FHIR JSON and XML."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from flask import Request, Response

from fhirlake.fhir.outcome import FhirError
from fhirlake.fhir.subsetting import SUMMARY_MODES, select_elements, summarize
from fhirlake.services.resource_body import check_no_nul

JSON = "application/fhir+json"
XML = "application/fhir+xml"
_JSON_ALIASES = {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
_XML_ALIASES = {"xml", "application/xml", "application/fhir+xml", "application/xml+fhir", "text/xml"}
MAX_JSON_DEPTH = 100


def refuse_nul(req: Request) -> None:
    """NUL never belongs in a FHIR id, parameter or value, and PostgreSQL text cannot hold it
    (bodies are checked when parsed: ``parse_body``)."""
    if "\x00" in req.path or _has_nul(req.args):
        raise FhirError(400, "The URL contains a NUL character", code="invalid")
    if req.mimetype == "application/x-www-form-urlencoded" and _has_nul(req.form):
        raise FhirError(400, "The form body contains a NUL character", code="invalid")


def _has_nul(pairs: Any) -> bool:
    return any("\x00" in k or "\x00" in v for k, v in pairs.items(multi=True))


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def response_format(req: Request) -> str:
    """JSON or XML, from ``_format`` first, then ``Accept``; JSON by default."""
    fmt = req.args.get("_format")
    if fmt:
        media = _media(fmt)
        if media in _XML_ALIASES:
            return XML
        if media in _JSON_ALIASES:
            return JSON
        raise FhirError(415, f"_format '{fmt}' is not supported (use json or xml)", code="not-supported")
    # The first FHIR format the Accept header names wins; anything else (a browser's text/html,
    # */*, nothing) gets JSON rather than a refusal.
    for part in req.headers.get("Accept", "").split(","):
        media = _media(part)
        if media in _XML_ALIASES:
            return XML
        if media in _JSON_ALIASES:
            return JSON
    return JSON


def is_pretty(req: Request) -> bool:
    return req.args.get("_pretty", "false").lower() == "true"


def _check_depth(value: object, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise FhirError(400, f"The document nests deeper than {MAX_JSON_DEPTH} levels", code="structure")
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, (dict, list)):
                _check_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)):
                _check_depth(v, depth + 1)


def parse_body(req: Request, *, allow_json_patch: bool = False) -> object:
    """Parse the request body as FHIR JSON or XML according to Content-Type."""
    raw = req.get_data(cache=True)
    if not raw:
        raise FhirError(400, "The request has no body", code="required")
    media = _media(req.headers.get("Content-Type", "") or JSON)
    if media in _XML_ALIASES:
        from fhirlake.fhir.xml import xml_to_resource

        try:
            return xml_to_resource(raw)
        except Exception as exc:  # the XML module raises a format error with a message
            raise FhirError(400, f"Malformed FHIR XML: {exc}", code="structure") from exc
    if media in _JSON_ALIASES or (allow_json_patch and media == "application/json-patch+json"):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FhirError(400, f"Malformed JSON: {exc}", code="structure") from exc
        except RecursionError as exc:
            raise FhirError(400, "The document nests too deeply", code="structure") from exc
        _check_depth(value)
        check_no_nul(raw, value)
        return value
    raise FhirError(415, f"Content-Type '{media}' is not supported; send application/fhir+json or application/fhir+xml",
                    code="not-supported")


def dump(resource: dict, fmt: str, pretty: bool = False) -> bytes:
    if fmt == XML:
        from fhirlake.fhir.xml import resource_to_xml

        return resource_to_xml(resource, pretty=pretty)
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)


def subset_from_args(req: Request) -> tuple[str | None, list[str] | None]:
    summary = req.args.get("_summary")
    if summary is not None and summary not in SUMMARY_MODES:
        raise FhirError(400, f"_summary must be one of {', '.join(SUMMARY_MODES)}", code="invalid",
                        expression=["_summary"])
    elements = req.args.get("_elements")
    return summary, (elements.split(",") if elements else None)


def render_stored(content: str, req: Request, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """Answer with a stored resource: its exact bytes when nothing asks for a transformation."""
    fmt = response_format(req)
    summary, elements = subset_from_args(req)
    pretty = is_pretty(req)
    if fmt == JSON and not pretty and summary in (None, "false") and not elements:
        body = content.encode()
    else:
        resource = orjson.loads(content)
        if summary and summary not in ("false", "count"):
            resource = summarize(resource, summary)
        elif elements:
            resource = select_elements(resource, elements)
        body = dump(resource, fmt, pretty)
    return Response(body, status=status, headers=list(headers), content_type=f"{fmt}; charset=utf-8")


def render(resource: dict, req: Request, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    fmt = response_format(req)
    return Response(dump(resource, fmt, is_pretty(req)), status=status, headers=list(headers),
                    content_type=f"{fmt}; charset=utf-8")
