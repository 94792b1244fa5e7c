"""HTTP for the security endpoints: ``POST /auth/token`` (SMART Backend Services),
``GET /auth/jwks`` (the server's public keys) and ``GET /.well-known/smart-configuration``.

The handlers use the app's ``AuthServices`` (``app.extensions["fhirlake.auth"]``); call
``install_auth(app, settings, engine)`` once in the app factory so that the request guard and these
endpoints share one Authenticator and one AuditWriter (they are created on first use otherwise,
from ``app.extensions["fhirlake"]``'s settings and engine).

Every token request is audited, refused ones included (failed logins); neither the assertion nor
the issued token is ever logged or audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import Engine

from fhirlake.audit import AuditRecord, AuditWriter
from fhirlake.auth.authenticator import Authenticator
from fhirlake.auth.backend_services import OAuthError, TokenService
from fhirlake.auth.capability import smart_configuration
from fhirlake.auth.config import AuthConfig

EXTENSION = "fhirlake.auth"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

bp = Blueprint("fhirlake_auth", __name__)


@dataclass
class AuthServices:
    settings: Any
    authenticator: Authenticator
    token_service: TokenService
    audit: AuditWriter


def install_auth(app: Flask, settings: Any, engine: Engine) -> AuthServices:
    """Create the process's Authenticator, TokenService and AuditWriter and attach them to ``app``."""
    authenticator = Authenticator(AuthConfig.from_settings(settings), engine)
    writer = AuditWriter(engine, synchronous=settings.audit_durability == "sync")
    services = AuthServices(settings, authenticator, TokenService(authenticator, engine), writer)
    app.extensions[EXTENSION] = services
    return services


def auth_services() -> AuthServices:
    services = current_app.extensions.get(EXTENSION)
    if services is None:
        runtime = current_app.extensions["fhirlake"]
        services = install_auth(current_app, runtime.settings, runtime.engine)  # type: ignore[arg-type]
    return services


def _request_base() -> str:
    return request.url_root.rstrip("/")


def _audit_login(
    services: AuthServices, client_id: str | None, status: int, description: str, scope: bool
) -> None:
    record = AuditRecord(
        interaction="login",
        outcome=status,
        client_id=client_id,
        source_ip=request.remote_addr,
        outcome_desc=description,
        query_params=("scope",) if scope else (),
    )
    services.audit.record(record)


@bp.post("/auth/token")
def token() -> Response:
    services = auth_services()
    service = services.token_service
    if request.mimetype != "application/x-www-form-urlencoded":
        error = OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    else:
        form = dict(request.form.items())
        try:
            grant = service.issue(form, service.config.token_url(_request_base()))
        except OAuthError as exc:
            error = exc
        else:
            _audit_login(services, grant.client_id, 200, f"granted {grant.scope}", True)
            response = jsonify(grant.body)
            response.headers.update(_NO_STORE)
            return response
    _audit_login(services, error.client_id, error.status, f"{error.error}: {error.description}", False)
    response = jsonify(error.body())
    response.status_code = error.status
    response.headers.update(_NO_STORE)
    return response


@bp.get("/auth/jwks")
def jwks() -> Response:
    response = jsonify({"keys": [auth_services().authenticator.server_key.public_jwk()]})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/smart-configuration")
def smart_config() -> Response:
    return jsonify(smart_configuration(auth_services().settings, _request_base()))
