"""Authentication, coarse authorization and audit for every request.

Every request is authenticated here (when auth is on) and leaves an audit record, in two phases:

1. When the request starts (right after authentication, refused requests included), its access
   record (who, what, when, from where) is submitted to the group-commit writer without waiting:
   the request's own work runs while the record commits.
2. Before the response is sent, the request waits for that record to be durable (normally it
   already is) and hands over its outcome (HTTP status) as an asynchronous update. A crash between
   the two leaves the row saying "outcome unknown", never an access without a record.

Writes record theirs inside their own database transaction instead (``write_transaction``): their
endpoints skip phase 1, so a write leaves one row, committed (or rolled back) with the change.
Fine-grained decisions (compartments, query-restricted scopes) happen in the services and the
search planner, which receive ``g.access``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy import Connection

from fhirlake.api.auth_routes import install_auth
from fhirlake.api.errors import outcome_response
from fhirlake.api.runtime import runtime
from fhirlake.audit import OUTCOME_UNKNOWN, AuditRecord, complete_in, record_in
from fhirlake.audit.record import access_columns
from fhirlake.auth import AccessContext, AuthError
from fhirlake.fhir.outcome import FhirError, Issue, operation_outcome
from fhirlake.services.authz import require

# Endpoints anyone may call: discovery and the token endpoint itself.
PUBLIC_ENDPOINTS = {"system.metadata", "fhirlake_auth.token", "fhirlake_auth.jwks", "fhirlake_auth.smart_config"}

# endpoint -> (audit interaction, scope interaction or None when the service decides)
INTERACTIONS: dict[str, tuple[str, str | None]] = {
    "resources.read": ("read", "read"),
    "resources.vread": ("vread", "vread"),
    "resources.create": ("create", "create"),
    "resources.update": ("update", None),
    "resources.conditional_update": ("update", None),
    "resources.patch_instance": ("patch", "patch"),
    "resources.conditional_patch": ("patch", "patch"),
    "resources.delete": ("delete", "delete"),
    "resources.conditional_delete": ("delete", "delete"),
    "resources.validate_type": ("operation", None),
    "resources.validate_instance": ("operation", None),
    "system.bundle": ("transaction", None),
    "system.system_history": ("history-system", "history-system"),
    "system.type_history": ("history-type", "history-type"),
    "system.instance_history": ("history-instance", "history-instance"),
    "system.system_search": ("search-system", None),
    "system.type_search": ("search-type", "search-type"),
    "system.type_search_post": ("search-type", "search-type"),
    "system.patient_everything": ("operation", "everything"),
    "system.patients_everything": ("operation", "everything"),
    "system.compartment_search": ("search-compartment", "search-compartment"),
    "audit.search": ("search-type", None),
    "audit.read": ("read", None),
}


# Endpoints whose record is written in the change's transaction (``write_transaction``).
IN_TRANSACTION_ENDPOINTS = frozenset(
    e for e, (interaction, _) in INTERACTIONS.items() if interaction in ("create", "update", "patch", "delete")
) | {"system.bundle"}
# Endpoints whose handler records the access in the same statement as its read (one round trip,
# PostgreSQL's group commit shares the WAL flushes): see ``inline_audit``.
IN_STATEMENT_ENDPOINTS = frozenset({"resources.read"})
# Endpoints never audited by the guard: discovery, and the token endpoint (audited by its own route).
UNAUDITED_ENDPOINTS = PUBLIC_ENDPOINTS | {"static"}


def access() -> Any:
    """The request's AccessContext, or None when authorization is off."""
    return getattr(g, "access", None)


def audit_ids(*ids: str) -> None:
    g.audit_ids = [*getattr(g, "audit_ids", []), *ids]


def _resource_ids() -> tuple[str, ...]:
    """The ids the request names in its URL, then those its handler reported (``audit_ids``)."""
    ids = list(getattr(g, "audit_ids", ()))
    res_id = request.view_args.get("res_id") if request.view_args else None
    if res_id and res_id not in ids:
        ids.insert(0, res_id)
    return tuple(ids)


def _audit_record(status: int, outcome_desc: str | None = None) -> Any:
    interaction = getattr(g, "audit_interaction", None) or (request.endpoint or "unknown")
    res_type = request.view_args.get("res_type") if request.view_args else None
    # parameter NAMES only: values may be PHI
    names = sorted(request.args.keys())
    return AuditRecord.for_request(access(), interaction, status, res_type, _resource_ids(), names,
                                   request.remote_addr, outcome_desc)


def inline_audit() -> tuple[Any, Any]:
    """For IN_STATEMENT_ENDPOINTS: (build the audit row, receive its id), or (None, None)."""
    if not getattr(g, "audit_inline", False):
        return None, None

    def build() -> dict:
        return access_columns(access(), request.args.keys(), request.remote_addr)

    def written(audit_id: int, outcome: int) -> None:
        g.audit_inline_id = audit_id
        g.audit_inline_outcome = outcome

    return build, written


@contextmanager
def write_transaction() -> Iterator[Connection]:
    """A database transaction whose audit record commits (or rolls back) with the change."""
    with runtime().engine.begin() as conn:
        yield conn
        if _auth_installed():
            pending = getattr(g, "audit_pending", None)
            if pending is not None:  # an access already on record: complete that row, add none
                complete_in(conn, pending, 200, resource_ids=_resource_ids())
            else:
                record_in(conn, _audit_record(200))
            g.audited = True


def _auth_installed() -> bool:
    return "fhirlake.auth" in current_app.extensions


def install_guard(app: Flask, settings: Any, engine: Any) -> None:
    services = install_auth(app, settings, engine)
    enabled = settings.auth_enabled
    writer = services.audit

    def start_audit(endpoint: str) -> None:
        """Phase 1: submit the access record now; the request works while it commits."""
        if endpoint in UNAUDITED_ENDPOINTS or endpoint in IN_TRANSACTION_ENDPOINTS:
            return
        if endpoint in IN_STATEMENT_ENDPOINTS:
            g.audit_inline = True  # the handler's read statement inserts the record
            return

        g.audit_pending = writer.submit(_audit_record(OUTCOME_UNKNOWN))

    @app.before_request
    def _authenticate() -> Response | None:
        endpoint = request.endpoint or ""
        audit_interaction, scope_interaction = INTERACTIONS.get(endpoint, (endpoint, None))
        g.audit_interaction = audit_interaction
        if not enabled:
            g.access = AccessContext.unrestricted()
            start_audit(endpoint)
            return None
        if endpoint in PUBLIC_ENDPOINTS:
            g.access = None
            return None
        try:
            g.access = services.authenticator.authenticate(request.headers.get("Authorization"))
        except AuthError as exc:
            g.access = None
            start_audit(endpoint)
            body = operation_outcome([Issue("error", "login", exc.description)])
            return outcome_response(401, body, {"WWW-Authenticate": exc.www_authenticate()})
        start_audit(endpoint)
        res_type = (request.view_args or {}).get("res_type")
        if scope_interaction and res_type:
            require(g.access, scope_interaction, res_type)
        if endpoint == "system.patient_everything" or endpoint == "system.patients_everything":
            require(g.access, "everything", "Patient")
        return None

    @app.after_request
    def _audit(response: Response) -> Response:
        if getattr(g, "audited", False) or request.endpoint in UNAUDITED_ENDPOINTS:
            return response
        pending = getattr(g, "audit_pending", None)
        status = response.status_code
        desc = None if status < 400 else _reason(response)
        inline_id = getattr(g, "audit_inline_id", None)
        if inline_id is not None:  # durable already: its statement committed with the read
            if status != getattr(g, "audit_inline_outcome", None):  # e.g. 304, or a rendering error
                writer.complete_row(inline_id, status, desc)
            return response
        try:
            if pending is None:  # a write refused before its transaction, or no phase 1
                writer.record(_audit_record(status, desc))
            else:  # phase 2: the access must be durable before it is answered; the outcome need not
                ids = _resource_ids()
                writer.finish(pending, status, desc, ids if ids != pending.record.resource_ids else None)
        except Exception:  # noqa: BLE001 - an access that cannot be audited must not be answered
            err = FhirError(503, "The access could not be audited; try again", code="transient")
            return outcome_response(503, err.outcome(), {"Retry-After": "1"})
        return response


def _reason(response: Response) -> str:
    """The HTTP reason phrase ("Not Found"): says what happened without echoing any content."""
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return response.status.partition(" ")[2]
