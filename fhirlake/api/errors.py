"""Every error leaves the server as an OperationOutcome with the right status."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fhirlake.api.formats import JSON, XML, dump, response_format
from fhirlake.fhir.outcome import FhirError, Issue, operation_outcome

log = logging.getLogger("fhirlake.api")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


def outcome_response(status: int, outcome: dict, headers: dict[str, str] | None = None) -> Response:
    try:
        fmt = response_format(request)
    except FhirError:
        fmt = JSON
    body = dump(outcome, fmt if fmt in (JSON, XML) else JSON)
    return Response(body, status=status, headers=headers or {}, content_type=f"{fmt}; charset=utf-8")


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError) -> Response:
        return outcome_response(exc.status, exc.outcome(), exc.headers)

    from fhirlake.auth import AuthError, ForbiddenError

    @app.errorhandler(ForbiddenError)
    def _forbidden(exc: ForbiddenError) -> Response:
        return outcome_response(403, operation_outcome([Issue("error", "forbidden", exc.description)]))

    @app.errorhandler(AuthError)
    def _unauthenticated(exc: AuthError) -> Response:
        return outcome_response(401, operation_outcome([Issue("error", "login", exc.description)]),
                                {"WWW-Authenticate": exc.www_authenticate()})

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = "The request body is larger than this server accepts"
        code = _HTTP_CODES.get(status, "processing")
        return outcome_response(status, operation_outcome([Issue("error", code, message)]))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Log the type and traceback only: messages may quote resource content (PHI).
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path, exc_info=False)
        return outcome_response(500, operation_outcome([Issue("fatal", "exception", "Internal server error")]))
