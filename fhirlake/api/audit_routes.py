"""AuditEvent: readable with an audit scope, never writable or deletable through the API."""

from __future__ import annotations

from flask import Blueprint, Response, request

from fhirlake.api import formats
from fhirlake.api.guard import access
from fhirlake.api.runtime import base_url, runtime
from fhirlake.fhir.outcome import FhirError
from fhirlake.services import authz

bp = Blueprint("audit", __name__)


def _require_audit_scope() -> None:
    ctx = access()
    if authz.is_restricted(ctx):
        authz.require(ctx, "audit-read", "AuditEvent")


@bp.get("/AuditEvent")
def search() -> Response:
    from fhirlake.audit import AuditSearchError, search_audit

    _require_audit_scope()
    with runtime().reader.connect() as conn:
        try:
            bundle = search_audit(conn, request.args.to_dict(flat=False), base_url())
        except AuditSearchError as exc:
            raise FhirError(400, str(exc), code="invalid") from exc
    return formats.render(bundle, request)


@bp.get("/AuditEvent/<audit_id>")
def read(audit_id: str) -> Response:
    from fhirlake.audit import read_audit

    _require_audit_scope()
    with runtime().reader.connect() as conn:
        found = read_audit(conn, audit_id)
    if found is None:
        raise FhirError(404, f"AuditEvent/{audit_id} is not known", code="not-found")
    return formats.render(found, request)


@bp.route("/AuditEvent", methods=["POST", "PUT", "PATCH", "DELETE"])
@bp.route("/AuditEvent/<audit_id>", methods=["PUT", "PATCH", "DELETE"])
def refuse_write(audit_id: str | None = None) -> Response:
    raise FhirError(405, "AuditEvent records are written by the server only; they cannot be changed or deleted",
                    code="not-supported")
