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


# ------------------------------------------------------------------ $viewdefinition-export (asynchronous)

EXPORT_FORMATS = ("parquet", "ndjson", "csv", "json")


def _owner() -> str | None:
    access = _access()
    return getattr(access, "client_id", None) if access is not None else None


def _export_views(conn, body: dict | None, instance_id: str | None) -> list[dict]:  # noqa: ANN001
    """[{name, definition}] from the instance, ``view`` parameters (name, viewReference/viewResource),
    or top-level viewReference/viewResource parameters."""
    views: list[dict] = []

    def add(name: str | None, reference: str | None, resource: dict | None) -> None:
        if resource is not None:
            definition = resource
        elif reference:
            definition = definitions.read_definition(conn, reference)
        else:
            raise FhirError(400, "Each view needs a viewReference or a viewResource", code="required",
                            expression=["view"])
        definitions.validate_view(definition)
        label = name or definition.get("name") or f"view{len(views) + 1}"
        if not all(ch.isalnum() or ch in "_-" for ch in label):
            raise FhirError(400, f"View name {label!r} may hold letters, digits, '_' and '-' only", code="invalid",
                            expression=["view.name"])
        if any(v["name"] == label for v in views):
            raise FhirError(400, f"Two exported views are named {label!r}", code="invalid", expression=["view.name"])
        views.append({"name": label, "definition": definition})

    if instance_id is not None:
        add(None, f"ViewDefinition/{instance_id}", None)
    for parameter in (body or {}).get("parameter") or []:
        name = parameter.get("name")
        if name == "view":
            parts = {p.get("name"): p for p in parameter.get("part") or []}
            add(_value(parts["name"]) if "name" in parts else None,
                _value(parts["viewReference"]) if "viewReference" in parts else None,
                parts["viewResource"].get("resource") if "viewResource" in parts else None)
        elif name == "viewReference":
            add(None, _value(parameter), None)
        elif name == "viewResource":
            add(None, None, parameter.get("resource"))
    for reference in request.args.getlist("viewReference"):
        add(None, reference, None)
    if not views:
        raise FhirError(400, "$viewdefinition-export needs at least one view", code="required", expression=["view"])
    return views


def _export_kickoff(instance_id: str | None) -> Response:
    from fhirlake.jobs import queue
    from fhirlake.views.jobs import EXPORT_KIND

    body = _json_body() if request.method == "POST" else None
    if body is not None and (not isinstance(body, dict) or body.get("resourceType") != "Parameters"):
        raise FhirError(400, "POST $viewdefinition-export takes a Parameters resource", code="invalid")
    top = {p.get("name"): _value(p) for p in (body or {}).get("parameter") or [] if p.get("name") != "view"}
    fmt = (top.get("_format") or request.args.get("_format") or "parquet").lower()
    fmt = {"application/vnd.apache.parquet": "parquet", "application/x-ndjson": "ndjson", "text/csv": "csv",
           "application/json": "json"}.get(fmt, fmt)
    if fmt not in EXPORT_FORMATS:
        raise FhirError(400, f"_format {fmt!r} is not supported (parquet, ndjson, csv, json)", code="not-supported",
                        expression=["_format"])
    params: dict = {
        "format": fmt,
        "patient": top.get("patient") or request.args.get("patient"),
        "group": top.get("group") or request.args.get("group"),
        "since": top.get("_since") or request.args.get("_since"),
        "header": _as_bool(top.get("header", request.args.get("header", "true"))),
        "client_tracking_id": top.get("clientTrackingId") or request.args.get("clientTrackingId"),
        "request_url": request.url,
    }
    engine = runtime().engine
    with engine.connect() as conn:
        views = _export_views(conn, body, instance_id)
        access = _access()
        for item in views:
            # Everything a run would refuse is refused now, not later in the worker.
            run = RunRequest(view_resource=item["definition"], patient=params["patient"], group=params["group"],
                             since=params["since"], format=fmt)
            prepare_run(conn, run, None, access)
            if access is not None:
                constraint = access.access_constraint(item["definition"]["resource"])
                if constraint is not None:
                    if getattr(constraint, "filters", None) or not getattr(constraint, "patient_id", None):
                        raise FhirError(403, "Query-restricted tokens cannot export views", code="forbidden")
                    if params["patient"] not in (None, constraint.patient_id, f"Patient/{constraint.patient_id}"):
                        raise FhirError(403, "The token's patient context does not cover that patient",
                                        code="forbidden")
                    params["patient"] = f"Patient/{constraint.patient_id}"
    params["views"] = views
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, EXPORT_KIND, params, owner=_owner())
    location = f"{base_url()}/$viewdefinition-export/status/{job_id}"
    return formats.render(info_outcome(f"Export accepted; poll {location}"), request, status=202,
                          headers=[("Content-Location", location)])


@bp.route("/$viewdefinition-export", methods=["GET", "POST"])
def export_system() -> Response:
    return _export_kickoff(None)


@bp.route(f"/{TYPE}/$viewdefinition-export", methods=["GET", "POST"])
def export_type() -> Response:
    return _export_kickoff(None)


@bp.route(f"/{TYPE}/<res_id>/$viewdefinition-export", methods=["GET", "POST"])
def export_instance(res_id: str) -> Response:
    return _export_kickoff(res_id)


def _export_job(job_id: str):  # noqa: ANN202 - queue.Job
    from datetime import UTC, datetime

    from fhirlake.jobs import queue
    from fhirlake.views.jobs import EXPORT_KIND

    with runtime().engine.connect() as conn:
        job = queue.get(conn, job_id)
    gone = job is None or job.kind != EXPORT_KIND or job.cancel_requested or job.status == "cancelled"
    if gone or (job.owner is not None and job.owner != _owner()):
        raise FhirError(404, "No such view export (it may have been cancelled or expired)", code="not-found")
    if job.expires_at is not None and job.expires_at < datetime.now(UTC):
        raise FhirError(404, "The view export's output has expired", code="not-found")
    return job


@bp.get("/$viewdefinition-export/status/<job_id>")
def export_status(job_id: str) -> Response:
    from fhirlake.jobs import queue
    from fhirlake.jobs.timing import JobTiming

    job = _export_job(job_id)
    if job.status in queue.ACTIVE:
        progress = job.progress or {}
        text = "queued" if job.status == "queued" else (
            f"exporting: {progress.get('done', 0)} of {progress.get('total', len(job.params['views']))} views"
            + (f" ({progress['type']})" if progress.get("type") else ""))
        retry = str(JobTiming.from_env().status_retry_after)
        return Response(status=202, headers={"X-Progress": text, "Retry-After": retry})
    if job.status == "failed":
        raise FhirError(500, f"The view export failed: {job.error or 'unknown error'}", code="exception")
    result = job.result or {}
    base = base_url()
    parameters: list[dict] = [
        {"name": "exportId", "valueString": job.id},
        {"name": "status", "valueCode": "completed"},
        {"name": "location", "valueUri": f"{base}/$viewdefinition-export/status/{job.id}"},
        {"name": "_format", "valueCode": result.get("format")},
        {"name": "exportStartTime", "valueInstant": result.get("started")},
        {"name": "exportEndTime", "valueInstant": result.get("finished")},
    ]
    if job.params.get("client_tracking_id"):
        parameters.append({"name": "clientTrackingId", "valueString": job.params["client_tracking_id"]})
    for item in result.get("output", []):
        url = f"{base}/$viewdefinition-export/files/{job.id}/{result['folder']}/{item['file']}"
        parameters.append({"name": "output", "part": [
            {"name": "name", "valueString": item["name"]},
            {"name": "location", "valueUri": url},
            {"name": "count", "valueInteger": item["rows"]},
        ]})
    return Response(orjson.dumps({"resourceType": "Parameters", "parameter": parameters}),
                    content_type="application/fhir+json; charset=utf-8")


@bp.delete("/$viewdefinition-export/status/<job_id>")
def export_cancel(job_id: str) -> Response:
    import shutil

    from fhirlake.jobs import queue
    from fhirlake.views.jobs import export_root

    job = _export_job(job_id)
    with runtime().engine.begin() as conn:
        queue.request_cancel(conn, job.id)
    if job.status == "completed":
        shutil.rmtree(export_root(runtime().settings) / job.id, ignore_errors=True)
    return formats.render(info_outcome("The view export was cancelled and its files will be removed"), request,
                          status=202)


@bp.get("/$viewdefinition-export/files/<job_id>/<folder>/<name>")
def export_file(job_id: str, folder: str, name: str) -> Response:
    from flask import send_file

    from fhirlake.views.jobs import export_root
    from fhirlake.views.stream import MEDIA_TYPES

    job = _export_job(job_id)
    result = job.result or {}
    listed = {item["file"] for item in result.get("output", [])}
    if job.status != "completed" or folder != result.get("folder") or name not in listed:
        raise FhirError(404, "No such export file", code="not-found")
    path = export_root(runtime().settings) / job.id / folder / name
    if not path.is_file():
        raise FhirError(404, "The export file is no longer available", code="not-found")
    return send_file(path, mimetype=MEDIA_TYPES[result["format"]].split(";")[0], conditional=True)
