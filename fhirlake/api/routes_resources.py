"""Instance and type level interactions: read, vread, create, update, patch, delete, validate."""

from __future__ import annotations

from flask import Blueprint, Response, request

from fhirlake.api import formats
from fhirlake.api.guard import access, audit_ids, inline_audit, write_transaction
from fhirlake.api.headers import parse_etag, parse_http_date, prefer, version_headers
from fhirlake.api.runtime import base_url, runtime
from fhirlake.fhir.outcome import FhirError, info_outcome, operation_outcome
from fhirlake.services import crud, patch, validate
from fhirlake.services.crud import WriteResult

bp = Blueprint("resources", __name__)


def _write_response(result: WriteResult, *, status: int | None = None) -> Response:
    if result.version is None:
        return formats.render(info_outcome("Nothing to do"), request, status=status or result.status)
    base = base_url()
    headers = version_headers(result.version, base, location=True)
    pref = prefer(request).get("return", "representation")
    if pref == "minimal" or result.version.content is None:
        return Response(status=status or result.status, headers=headers)
    if pref == "operationoutcome":
        msg = f"{result.version.res_type}/{result.version.res_id} version {result.version.version} stored"
        return formats.render(info_outcome(msg), request, status=status or result.status, headers=headers)
    return formats.render_stored(result.version.content, request, status=status or result.status, headers=headers)


@bp.get("/<res_type>/<res_id>")
def read(res_type: str, res_id: str) -> Response:
    audit, audited = inline_audit()
    with runtime().key_reader.connect() as conn:
        current = crud.read(conn, res_type, res_id, access(), audit=audit, audited=audited)
    headers = version_headers(current, base_url())
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and parse_etag(if_none_match, "If-None-Match") == current.version:
        return Response(status=304, headers=headers)
    since = parse_http_date(request.headers.get("If-Modified-Since"))
    if since is not None and current.last_updated.replace(microsecond=0) <= since:
        return Response(status=304, headers=headers)
    return formats.render_stored(current.content or "", request, headers=headers)


@bp.get("/<res_type>/<res_id>/_history/<version>")
def vread(res_type: str, res_id: str, version: str) -> Response:
    with runtime().key_reader.connect() as conn:
        found = crud.vread(conn, res_type, res_id, version, access())
    return formats.render_stored(found.content or "", request, headers=version_headers(found, base_url()))


@bp.post("/<res_type>")
def create(res_type: str) -> Response:
    body = formats.parse_body(request)
    with write_transaction() as conn:
        result = crud.create(conn, res_type, body, if_none_exist=request.headers.get("If-None-Exist"),
                             access=access())
        if result.version:
            audit_ids(result.version.res_id)
    return _write_response(result)


@bp.put("/<res_type>/<res_id>")
def update(res_type: str, res_id: str) -> Response:
    body = formats.parse_body(request)
    if_match = parse_etag(request.headers.get("If-Match"))
    with write_transaction() as conn:
        result = crud.update(conn, res_type, res_id, body, if_match=if_match, access=access())
    return _write_response(result)


@bp.put("/<res_type>")
def conditional_update(res_type: str) -> Response:
    query = request.query_string.decode()
    body = formats.parse_body(request)
    if_match = parse_etag(request.headers.get("If-Match"))
    with write_transaction() as conn:
        result = crud.conditional_update(conn, res_type, query, body, if_match=if_match, access=access())
        if result.version:
            audit_ids(result.version.res_id)
    return _write_response(result)


@bp.patch("/<res_type>/<res_id>")
def patch_instance(res_type: str, res_id: str) -> Response:
    body = formats.parse_body(request, allow_json_patch=True)
    content_type = request.headers.get("Content-Type", "")
    if_match = parse_etag(request.headers.get("If-Match"))
    with write_transaction() as conn:
        result = patch.patch(conn, res_type, res_id, body, content_type, if_match=if_match, access=access())
    return _write_response(result)


@bp.patch("/<res_type>")
def conditional_patch(res_type: str) -> Response:
    body = formats.parse_body(request, allow_json_patch=True)
    content_type = request.headers.get("Content-Type", "")
    if_match = parse_etag(request.headers.get("If-Match"))
    with write_transaction() as conn:
        matches = crud.find_matches(conn, res_type, request.query_string.decode(), access())
        if len(matches) != 1:
            status = 404 if not matches else 412
            raise FhirError(status, f"The conditional patch matched {len(matches)} resources", code="not-found"
                            if not matches else "multiple-matches")
        result = patch.patch(conn, res_type, matches[0][1], body, content_type, if_match=if_match,
                             access=access())
        audit_ids(matches[0][1])
    return _write_response(result)


@bp.delete("/<res_type>/<res_id>")
def delete(res_type: str, res_id: str) -> Response:
    if_match = parse_etag(request.headers.get("If-Match"))
    with write_transaction() as conn:
        result = crud.delete(conn, res_type, res_id, if_match=if_match, access=access())
    if result.version is None:
        return Response(status=204)
    return formats.render(info_outcome(f"{res_type}/{res_id} deleted"), request, status=200,
                          headers=[("ETag", result.version.etag)])


@bp.delete("/<res_type>")
def conditional_delete(res_type: str) -> Response:
    query = request.query_string.decode()
    allow_multiple = request.args.get("_multiple", "").lower() == "true" or \
        prefer(request).get("handling") == "multiple"
    query = "&".join(p for p in query.split("&") if not p.startswith("_multiple="))
    with write_transaction() as conn:
        count = crud.conditional_delete(conn, res_type, query, allow_multiple=allow_multiple, access=access())
    if count == 0:
        return Response(status=204)
    return formats.render(info_outcome(f"{count} {res_type} resource(s) deleted"), request, status=200)


@bp.route("/<res_type>/$validate", methods=["POST"])
def validate_type(res_type: str) -> Response:
    body = formats.parse_body(request)
    outcome = validate.validate_operation(res_type, None, body)
    return formats.render(outcome, request, status=200)


@bp.route("/<res_type>/<res_id>/$validate", methods=["POST"])
def validate_instance(res_type: str, res_id: str) -> Response:
    body = formats.parse_body(request)
    outcome = validate.validate_operation(res_type, res_id, body)
    return formats.render(outcome, request, status=200)


__all__ = ["bp", "operation_outcome"]
