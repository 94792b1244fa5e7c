"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask, request
from sqlalchemy import Engine

from fhirlake.api import (
    audit_routes,
    auth_routes,
    bulk_routes,
    formats,
    routes_resources,
    routes_system,
    view_routes,
)
from fhirlake.api.errors import install_error_handlers
from fhirlake.api.guard import install_guard
from fhirlake.api.runtime import Runtime
from fhirlake.config import Settings
from fhirlake.store.db import make_read_engine

log = logging.getLogger("fhirlake")


def create_app(settings: Settings, engine: Engine) -> Flask:
    app = Flask("fhirlake")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    url, pool_size = engine.url.render_as_string(hide_password=False), engine.pool.size()
    app.extensions["fhirlake"] = Runtime(settings=settings, engine=engine,
                                         reader=make_read_engine(url, pool_size=pool_size),
                                         key_reader=make_read_engine(url, pool_size=pool_size, key_lookups=True))
    install_error_handlers(app)
    app.before_request(lambda: formats.refuse_nul(request))  # before authentication: nothing reads it yet
    install_guard(app, settings, engine)

    # Specific routes first; the generic /<type>/<id> routes of FHIR REST come last.
    for blueprint in (audit_routes.bp, auth_routes.bp, bulk_routes.bp, view_routes.bp, routes_system.bp,
                      routes_resources.bp):
        app.register_blueprint(blueprint)
    return app
