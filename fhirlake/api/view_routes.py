"""SQL-on-FHIR v2 over HTTP: ViewDefinition resources and the $viewdefinition-run/-export operations.

- ``/ViewDefinition``: create (POST), read, update (PUT), delete, search by name, status, resource.
- ``$viewdefinition-run`` at system, type and instance level, GET (query parameters) and POST
  (a Parameters resource): the rows in json, ndjson, csv or parquet, streamed while they are read.
- ``$viewdefinition-export``: asynchronous, on the bulk job machinery (see fhirlake.views.jobs).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from flask import Blueprint, Response, g, request, stream_with_context

from fhirlake.api import formats
from fhirlake.api.headers import parse_etag, version_headers
from fhirlake.api.runtime import base_url, runtime
from fhirlake.fhir.outcome import FhirError, info_outcome
from fhirlake.views import definitions
from fhirlake.views.run import RunRequest, prepare_run

bp = Blueprint("views", __name__)
TYPE = definitions.RESOURCE_TYPE


def _access() -> Any:
    return getattr(g, "access", None)


def _require(interaction: str) -> None:
    access = _access()
    if access is not None:
        access.require(interaction, TYPE)


def _json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        raise FhirError(400, "The request has no body", code="required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FhirError(400, f"The body is not valid JSON: {exc}", code="structure") from None


def _headers(version, location: bool = False) -> list[tuple[str, str]]:  # noqa: ANN001
    return version_headers(version, base_url(), location=location)


# ------------------------------------------------------------------ the resource


@bp.post(f"/{TYPE}")
def create() -> Response:
    _require("create")
    body = _json_body()
    with runtime().engine.begin() as conn:
        written = definitions.create(conn, body)
    return formats.render_stored(written.version.content or "", request, status=201,
                                 headers=_headers(written.version, location=True))


@bp.get(f"/{TYPE}/<res_id>")
def read(res_id: str) -> Response:
    _require("read")
    with runtime().engine.connect() as conn:
        current = definitions.read(conn, res_id)
    return formats.render_stored(current.content or "", request, headers=_headers(current))


@bp.put(f"/{TYPE}/<res_id>")
def update(res_id: str) -> Response:
    _require("update")
    body = _json_body()
    if_match = parse_etag(request.headers.get("If-Match"))
    with runtime().engine.begin() as conn:
        written = definitions.update(conn, res_id, body, if_match)
    return formats.render_stored(written.version.content or "", request, status=201 if written.created else 200,
                                 headers=_headers(written.version, location=True))


@bp.delete(f"/{TYPE}/<res_id>")
def delete(res_id: str) -> Response:
    _require("delete")
    with runtime().engine.begin() as conn:
        version = definitions.delete(conn, res_id)
    if version is None:
        return Response(status=204)
    return formats.render(info_outcome(f"{TYPE}/{res_id} deleted"), request, headers=[("ETag", version.etag)])


@bp.get(f"/{TYPE}")
def search() -> Response:
    _require("search")
    params = parse_qsl(request.query_string.decode(), keep_blank_values=True)
    with runtime().engine.connect() as conn:
        contents, total = definitions.search(conn, params)
    base = base_url()
    entries = b",".join(
        b'{"fullUrl":' + orjson.dumps(f"{base}/{TYPE}/{orjson.loads(c)['id']}") + b',"resource":' + c.encode()
        + b',"search":{"mode":"match"}}'
        for c in contents
    )
    self_link = orjson.dumps(request.url)
    body = (b'{"resourceType":"Bundle","type":"searchset","total":' + str(total).encode()
            + b',"link":[{"relation":"self","url":' + self_link + b'}],"entry":[' + entries + b"]}")
    return Response(body, content_type="application/fhir+json; charset=utf-8")


# ------------------------------------------------------------------ $viewdefinition-run

_VALUE_KEYS = ("valueReference", "valueString", "valueUri", "valueCanonical", "valueCode", "valueInstant",
               "valueDateTime", "valueInteger", "valuePositiveInt", "valueBoolean")


def _value(parameter: dict) -> Any:
    for key in _VALUE_KEYS:
        if key in parameter:
            value = parameter[key]
            return value.get("reference") if key == "valueReference" and isinstance(value, dict) else value
    return None


def _as_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FhirError(400, f"{name} must be an integer, got {value!r}", code="invalid", expression=[name]) from None


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() != "false"


def _run_request_from_query() -> RunRequest:
    args = request.args
    unknown = [k for k in args if k not in ("viewReference", "patient", "group", "_since", "_limit", "_format",
                                              "header", "source", "_pretty")]
    if unknown:
        raise FhirError(400, f"Unknown parameter(s) for $viewdefinition-run: {', '.join(unknown)}", code="invalid",
                        expression=unknown)
    return RunRequest(
        view_reference=args.get("viewReference"), patient=args.get("patient"), group=args.get("group"),
        since=args.get("_since"), limit=_as_int(args.get("_limit"), "_limit"),
        format=args.get("_format") or _accept_format(), header=_as_bool(args.get("header", "true")),
    )


def _accept_format() -> str | None:
    accept = request.headers.get("Accept", "")
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("text/csv", "application/x-ndjson", "application/ndjson", "application/vnd.apache.parquet"):
            return media
    return None


def _run_request_from_body() -> RunRequest:
    body = _json_body()
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "POST $viewdefinition-run takes a Parameters resource", code="invalid")
    run = RunRequest(format=request.args.get("_format"))
    for i, parameter in enumerate(body.get("parameter") or []):
        if not isinstance(parameter, dict):
            raise FhirError(400, f"parameter[{i}] is not an object", code="structure")
        name = parameter.get("name")
        value = _value(parameter)
        if name == "viewReference":
            run.view_reference = value
        elif name == "viewResource":
            run.view_resource = parameter.get("resource")
        elif name == "resource":
            run.resources.append(parameter.get("resource"))
        elif name == "patient":
            run.patient = value
        elif name == "group":
            run.group = value
        elif name == "_since":
            run.since = value
        elif name == "_limit":
            run.limit = _as_int(value, "_limit")
        elif name == "_format":
            run.format = value
        elif name == "header":
            run.header = _as_bool(value)
        elif name == "source":
            pass  # one store only: the source parameter names no other
        else:
            raise FhirError(400, f"Unknown parameter {name!r} for $viewdefinition-run", code="invalid",
                            expression=[f"parameter[{i}]"])
    if run.format is None:
        run.format = _accept_format()
    return run


def _run(instance_id: str | None) -> Response:
    run = _run_request_from_body() if request.method == "POST" else _run_request_from_query()
    engine = runtime().engine
    with engine.connect() as conn:
        plan = prepare_run(conn, run, instance_id, _access())
    return Response(stream_with_context(plan.stream(engine)), content_type=plan.media_type)


@bp.route("/$viewdefinition-run", methods=["GET", "POST"])
def run_system() -> Response:
    return _run(None)


@bp.route(f"/{TYPE}/$viewdefinition-run", methods=["GET", "POST"])
def run_type() -> Response:
    return _run(None)


@bp.route(f"/{TYPE}/<res_id>/$viewdefinition-run", methods=["GET", "POST"])
def run_instance(res_id: str) -> Response:
    return _run(res_id)
