"""Bulk Data HTTP endpoints: $export kick-off (system, Patient, Group), $import, status, files.

Jobs do the work (fhirlake.jobs); these handlers only validate, enqueue, report and send files.
Status URL: ``/bulk-status/<job id>``; files: ``/bulk-files/<job id>/<attempt>/<name>``.

De-identified export (``_deidentify`` / ``_anonymizationConfig``): the client needs the scope
``fhirlake/deid-export`` (when authorization is on), and the server must hold a de-identification
key; both are checked before a job is queued. The manifest names the profile in its ``extension``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
from flask import Blueprint, Response, g, request, send_file
from sqlalchemy import text

from fhirlake.api.formats import parse_body
from fhirlake.api.headers import lenient, prefer
from fhirlake.api.runtime import base_url, runtime
from fhirlake.fhir.outcome import FhirError, info_outcome
from fhirlake.jobs import queue
from fhirlake.jobs.export.deid import MANIFEST_EXTENSION_URL, export_deidentifier
from fhirlake.jobs.export.params import ExportRequest, parameters_from_body, parse_export
from fhirlake.jobs.export.selection import candidate_types
from fhirlake.jobs.timing import JobTiming

bp = Blueprint("bulk", __name__)

JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
_KICKOFF_LOCK = 7_246_004  # serializes the concurrency check of simultaneous kick-offs
_TIMING = JobTiming.from_env()


def _timing() -> JobTiming:
    return _TIMING


def _json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers or {}, content_type=f"{JSON}; charset=utf-8")


def _access():  # noqa: ANN202 - AccessContext of the auth package, or None when auth is off
    return getattr(g, "access", None)


def _owner() -> str | None:
    ctx = _access()
    return getattr(ctx, "client_id", None) if ctx is not None else None


def _check_accept() -> None:
    accept = request.headers.get("Accept", "")
    medias = {part.split(";", 1)[0].strip().lower() for part in accept.split(",") if part.strip()}
    if medias and not medias & {"application/fhir+json", "application/json", "*/*", "application/*"}:
        raise FhirError(400, "A Bulk Data kick-off answers application/fhir+json: send that Accept header",
                        code="not-supported")
    wanted = prefer(request)
    if wanted and "respond-async" not in wanted and "handling" not in wanted:
        raise FhirError(400, "A Bulk Data kick-off needs 'Prefer: respond-async'", code="not-supported")


def _kickoff_params() -> list[tuple[str, str]]:
    params = parse_qsl(request.query_string.decode(), keep_blank_values=True)
    if request.method == "POST":
        params += parameters_from_body(parse_body(request))
    return [(n, v) for n, v in params if n not in ("_format", "_pretty")]


def _authorize_export(req: ExportRequest) -> None:
    """Scopes decide which types may be exported; query-restricted scopes become filters."""
    ctx = _access()
    if ctx is None:
        return
    if req.types:
        for res_type in req.types:
            ctx.require("export", res_type)
    else:
        req.types = ctx.permitted_types("export", candidate_types(req))
        if not req.types:
            ctx.require("export", "Patient")  # raises the proper 403
    for res_type in req.types:
        constraint = ctx.access_constraint(res_type, "export") if hasattr(ctx, "access_constraint") else None
        alternatives = getattr(constraint, "filters", {}).get(res_type) if constraint is not None else None
        if alternatives:
            from urllib.parse import urlencode

            req.access_filters[res_type] = [urlencode(alt) for alt in alternatives]


def _check_deidentification(req: ExportRequest) -> None:
    """Only authorized clients, and only when the profile can run here (it needs a key)."""
    if not req.deidentify:
        return
    ctx = _access()
    if ctx is not None:
        ctx.require("deid-export", "*")
    from fhirlake.deid import DeidConfigError

    try:
        export_deidentifier(req.deidentify)
    except DeidConfigError as exc:
        # A server without a key must not start a job that would label identifiable data as
        # de-identified; the message names the settings, never a key.
        raise FhirError(400, f"De-identified export is not available on this server: {exc}",
                        code="not-supported", expression=["_deidentify"]) from None


def _enqueue_limited(kind: str, params: dict, limit: int | None) -> str:
    with runtime().engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KICKOFF_LOCK})
        if limit is not None and queue.count_active(conn, kind) >= limit:
            raise FhirError(429, f"Too many {kind} jobs are running; retry later", code="throttled",
                            headers={"Retry-After": "30"})
        return queue.enqueue(conn, kind, params, owner=_owner())


def _accepted(job_id: str, what: str) -> Response:
    location = f"{base_url()}/bulk-status/{job_id}"
    return _json(info_outcome(f"{what} accepted; poll {location}"), 202, {"Content-Location": location})


def _export(level: str, group_id: str | None = None) -> Response:
    _check_accept()
    req = parse_export(_kickoff_params(), level=level, request_url=request.url, base_url=base_url(),
                       group_id=group_id, lenient=lenient(request))
    if group_id is not None:
        from fhirlake.jobs.export.selection import group_patients

        with runtime().engine.connect() as conn:
            if group_patients(conn, group_id) is None:
                raise FhirError(404, f"Group/{group_id} is not known", code="not-found")
    _authorize_export(req)
    _check_deidentification(req)
    job_id = _enqueue_limited("export", req.to_json(), runtime().settings.export_max_concurrent)
    return _accepted(job_id, "Export")


@bp.route("/$export", methods=["GET", "POST"])
def export_system() -> Response:
    return _export("system")


@bp.route("/Patient/$export", methods=["GET", "POST"])
def export_patient() -> Response:
    return _export("patient")


@bp.route("/Group/<group_id>/$export", methods=["GET", "POST"])
def export_group(group_id: str) -> Response:
    return _export("group", group_id)


@bp.route("/$import", methods=["POST"])
def import_kickoff() -> Response:
    from fhirlake.jobs.imports.request import parse_import

    _check_accept()
    params = parse_import(parse_body(request), runtime().settings, lenient=lenient(request))
    params["request_url"] = request.url
    job_id = _enqueue_limited("import", params, None)
    return _accepted(job_id, "Import")


# ---------------------------------------------------------------- status


def _visible_job(job_id: str) -> queue.Job:
    with runtime().engine.connect() as conn:
        job = queue.get(conn, job_id)
    if job is None or job.kind not in ("export", "import") or job.cancel_requested or job.status == "cancelled":
        raise FhirError(404, "No such bulk job (it may have been cancelled or expired)", code="not-found")
    owner = _owner()
    if job.owner is not None and owner != job.owner:
        raise FhirError(404, "No such bulk job (it may have been cancelled or expired)", code="not-found")
    if job.expires_at is not None and job.expires_at < datetime.now(UTC):
        raise FhirError(404, "The bulk job's output has expired", code="not-found")
    return job


def _progress_text(job: queue.Job) -> str:
    p = job.progress or {}
    if job.status == "queued":
        return "queued"
    done, total = p.get("done"), p.get("total")
    if isinstance(done, int) and isinstance(total, int) and total:
        where = f" ({p['type']})" if p.get("type") else ""
        return f"{p.get('phase', 'running')}: {done} of {total} resources{where}, {100 * done // total}%"
    return str(p.get("phase", "running"))


@bp.get("/bulk-status/<job_id>")
def status(job_id: str) -> Response:
    job = _visible_job(job_id)
    timing = _timing()
    if job.status in queue.ACTIVE:
        with runtime().engine.begin() as conn:
            previous = queue.touch_poll(conn, job.id)
        retry = str(timing.status_retry_after)
        if previous is not None and (datetime.now(UTC) - previous).total_seconds() < timing.min_poll_interval:
            raise FhirError(429, "Polling too fast: wait Retry-After seconds between status requests",
                            code="throttled", headers={"Retry-After": retry})
        return Response(status=202, headers={"X-Progress": _progress_text(job), "Retry-After": retry})
    if job.status == "failed":
        raise FhirError(500, f"The bulk job failed: {job.error or 'unknown error'}", code="exception")
    headers = {}
    if job.expires_at is not None:
        headers["Expires"] = format_datetime(job.expires_at.astimezone(UTC), usegmt=True)
    return _json(_manifest(job), 200, headers)


def _file_url(job: queue.Job, name: str) -> str:
    return f"{base_url()}/bulk-files/{job.id}/{job.result['folder']}/{name}"


def _manifest(job: queue.Job) -> dict:
    result = job.result or {}

    def items(key: str) -> list[dict]:
        return [{"type": f["type"], **({"url": _file_url(job, f["name"])} if f.get("name") else {}), "count": f["count"]}
                for f in result.get(key, [])]

    manifest = {
        "transactionTime": result.get("transaction_time"),
        "request": job.params.get("request_url"),
        "requiresAccessToken": bool(runtime().settings.auth_enabled),
        "output": items("output"),
        "error": items("error"),
    }
    if job.kind == "export":
        manifest["deleted"] = items("deleted")
        if result.get("deidentify"):
            # The Bulk Data IG reserves "extension" for a server's own JSON object.
            manifest["extension"] = {MANIFEST_EXTENSION_URL: result["deidentify"]}
    else:
        manifest["extension"] = {"inputs": result.get("inputs", [])}
    return manifest


@bp.delete("/bulk-status/<job_id>")
def cancel(job_id: str) -> Response:
    job = _visible_job(job_id)
    with runtime().engine.begin() as conn:
        queue.request_cancel(conn, job.id)
    if job.status == "completed":
        from fhirlake.jobs.export.runner import job_folder
        from fhirlake.lake.fs import delete_tree

        delete_tree(job_folder(runtime().settings, job.id))
    return _json(info_outcome("The bulk job was cancelled and its files will be removed"), 202)


# ---------------------------------------------------------------- files


@bp.get("/bulk-files/<job_id>/<folder>/<name>")
def download(job_id: str, folder: str, name: str) -> Response:
    job = _visible_job(job_id)
    result = job.result or {}
    listed = {f["name"] for key in ("output", "deleted", "error") for f in result.get(key, [])}
    if job.status != "completed" or folder != result.get("folder") or name not in listed:
        raise FhirError(404, "No such bulk file", code="not-found")
    from fhirlake.jobs.export.runner import attempt_folder

    path = Path(attempt_folder(runtime().settings, job.id, int(folder[1:]))) / name
    if not path.is_file():
        raise FhirError(404, "The bulk file is no longer available", code="not-found")
    if name.endswith(".parquet"):
        return send_file(path, mimetype="application/vnd.apache.parquet", conditional=True)
    if name.endswith(".gz"):
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response = send_file(path, mimetype=NDJSON, conditional=False)
            response.headers["Content-Encoding"] = "gzip"
            return response
        return Response(_gunzip_stream(path), mimetype=NDJSON)
    return send_file(path, mimetype=NDJSON, conditional=True)


def _gunzip_stream(path: Path):  # noqa: ANN202 - generator of bytes
    import gzip

    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk
