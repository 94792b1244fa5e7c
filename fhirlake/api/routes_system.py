"""Base-level and type-level endpoints: metadata, bundles, history, search, compartments, $everything."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import orjson
from flask import Blueprint, Response, request
from sqlalchemy import Connection

from fhirlake.api import formats
from fhirlake.api.guard import access, write_transaction
from fhirlake.api.headers import lenient, prefer
from fhirlake.api.runtime import base_url, runtime
from fhirlake.fhir.outcome import FhirError
from fhirlake.services import authz, crud, history
from fhirlake.services import bundle as bundle_service
from fhirlake.services.capability import capability_statement
from fhirlake.services.resource_body import check_type

bp = Blueprint("system", __name__)


def _render_bytes(body: bytes) -> Response:
    """Render an already-serialized JSON Bundle, converting only when XML or pretty output is asked."""
    fmt = formats.response_format(request)
    if fmt == formats.JSON and not formats.is_pretty(request):
        return Response(body, status=200, content_type=f"{fmt}; charset=utf-8")
    return formats.render(orjson.loads(body), request)


def _security() -> dict | None:
    try:
        from fhirlake.auth.capability import capability_security
    except ImportError:
        return None
    return capability_security(runtime().settings)


SYSTEM_OPERATIONS = [
    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
    {"name": "import", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/import"},
    {"name": "viewdefinition-run", "definition": "http://sql-on-fhir.org/OperationDefinition/$run"},
    {"name": "viewdefinition-export", "definition": "http://sql-on-fhir.org/OperationDefinition/$export"},
]


@bp.get("/metadata")
def metadata() -> Response:
    statement = capability_statement(base_url(), extra_operations=SYSTEM_OPERATIONS, security=_security())
    return formats.render(statement, request)


@bp.route("/metadata", methods=["POST", "PUT", "PATCH", "DELETE"])
def metadata_write() -> Response:
    raise FhirError(405, "The CapabilityStatement is read-only", code="not-supported")


def dispatch_read(conn: Connection, method: str, url: str) -> tuple[int, dict | None]:
    """Answer a GET found inside a bundle exactly as the equivalent HTTP request would."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    params = parse_qsl(parts.query, keep_blank_values=True)
    if len(segments) == 2:
        found = crud.read(conn, segments[0], segments[1], access())
        return 200, orjson.loads(found.content or "{}")
    if len(segments) == 4 and segments[2] == "_history":
        found = crud.vread(conn, segments[0], segments[1], segments[3], access())
        return 200, orjson.loads(found.content or "{}")
    if len(segments) == 1:
        authz.require(access(), "search-type", segments[0])
        result = _search(conn, segments[0], params, None)
        return 200, orjson.loads(result) if isinstance(result, bytes) else result
    raise FhirError(400, f"Cannot process GET {url} inside a bundle", code="not-supported")


@bp.post("/")
def bundle() -> Response:
    body = formats.parse_body(request)
    return_resources = prefer(request).get("return") == "representation"
    with write_transaction() as conn:
        result = bundle_service.process_bundle(conn, body, base_url(), dispatch_read, return_resources,
                                               access=access())
    return formats.render(result, request)


def _history(res_type: str | None, res_id: str | None) -> Response:
    settings = runtime().settings
    params = dict(request.args.items())
    ctx = access()
    with runtime().reader.connect() as conn:
        if res_id is not None and res_type is not None:
            authz.check_read(conn, ctx, res_type, res_id, "history-instance")
        elif authz.is_restricted(ctx):
            constraint = ctx.access_constraint(res_type or "Patient", "search")
            if constraint is not None and (constraint.patient_id or constraint.filters):
                raise authz.forbidden("Type and system history are not available to a token restricted to a "
                                      "patient compartment or to query-restricted scopes; use search or instance history")
        body = history.history(conn, base_url(), res_type, res_id, params, page_default=settings.default_page_size,
                               page_max=settings.max_page_size, lenient=lenient(request))
    return _render_bytes(body)


@bp.get("/_history")
def system_history() -> Response:
    return _history(None, None)


@bp.get("/<res_type>/_history")
def type_history(res_type: str) -> Response:
    return _history(res_type, None)


@bp.get("/<res_type>/<res_id>/_history")
def instance_history(res_type: str, res_id: str) -> Response:
    return _history(res_type, res_id)


def _search(conn: Connection, res_type: str | None, params: list[tuple[str, str]],
            compartment: tuple[str, str] | None) -> bytes | dict:
    from fhirlake.search.service import SearchError, SearchRequest, search

    if res_type is not None:
        check_type(res_type)
    req = SearchRequest(resource_type=res_type, params=params, base_url=base_url(), lenient=lenient(request),
                        compartment=compartment, access=_access(res_type, params))
    try:
        return search(conn, req)
    except SearchError as exc:
        raise FhirError(exc.status, exc.message, code="invalid" if exc.status == 400 else "processing",
                        expression=[exc.param] if exc.param else None) from exc


def _access(res_type: str | None, params: list[tuple[str, str]] | None = None):  # noqa: ANN202
    """The search AccessConstraint of this request (None when unrestricted)."""
    ctx = access()
    if not authz.is_restricted(ctx):
        return None
    if res_type is None:  # system search: the first requested type decides which scopes apply
        types = [v for k, v in (params or []) if k == "_type"]
        res_type = types[0].split(",")[0] if types else "Patient"
        authz.require(ctx, "search-system", res_type)
    from fhirlake.auth import ForbiddenError

    try:
        return ctx.access_constraint(res_type, "search")
    except ForbiddenError as exc:
        raise authz.forbidden(exc.description) from exc


def _search_response(res_type: str | None, params: list[tuple[str, str]],
                     compartment: tuple[str, str] | None = None) -> Response:
    with runtime().reader.connect() as conn:
        result = _search(conn, res_type, params, compartment)
    if isinstance(result, bytes):
        return _render_bytes(result)
    return formats.render(result, request)


def _query_params() -> list[tuple[str, str]]:
    return parse_qsl(request.query_string.decode(), keep_blank_values=True)


@bp.get("/")
def system_search() -> Response:
    return _search_response(None, _query_params())


@bp.get("/<res_type>")
def type_search(res_type: str) -> Response:
    return _search_response(res_type, _query_params())


@bp.post("/<res_type>/_search")
def type_search_post(res_type: str) -> Response:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise FhirError(415, "POST _search takes application/x-www-form-urlencoded parameters", code="not-supported")
    params = _query_params() + parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
    return _search_response(res_type, params)


@bp.get("/Patient/<patient_id>/$everything")
def patient_everything(patient_id: str) -> Response:
    return _everything(patient_id)


@bp.get("/Patient/$everything")
def patients_everything() -> Response:
    return _everything(None)


def _everything(patient_id: str | None) -> Response:
    from fhirlake.search.service import SearchError, everything

    with runtime().reader.connect() as conn:
        if patient_id is not None:
            crud.read(conn, "Patient", patient_id, access())
        try:
            result = everything(conn, patient_id, _query_params(), base_url(), _access("Patient"))
        except SearchError as exc:
            raise FhirError(exc.status, exc.message, code="invalid",
                            expression=[exc.param] if exc.param else None) from exc
    if isinstance(result, bytes):
        return _render_bytes(result)
    return formats.render(result, request)


@bp.get("/<comp_type>/<comp_id>/<res_type>")
def compartment_search(comp_type: str, comp_id: str, res_type: str) -> Response:
    check_type(comp_type)
    return _search_response(res_type if res_type != "*" else None, _query_params(), (comp_type, comp_id))
