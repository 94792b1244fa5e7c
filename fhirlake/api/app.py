"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import Engine

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
    reader = make_read_engine(engine.url.render_as_string(hide_password=False), pool_size=engine.pool.size())
    app.extensions["fhirlake"] = Runtime(settings=settings, engine=engine, reader=reader)
    install_error_handlers(app)
    install_guard(app, settings, engine)

    from fhirlake.api.audit_routes import bp as audit_bp
    from fhirlake.api.routes_resources import bp as resources_bp
    from fhirlake.api.routes_system import bp as system_bp

    app.register_blueprint(audit_bp)
    for optional in ("fhirlake.api.auth_routes", "fhirlake.api.bulk_routes", "fhirlake.api.view_routes"):
        try:
            module = __import__(optional, fromlist=["bp"])
        except ImportError:
            continue
        app.register_blueprint(module.bp)
    app.register_blueprint(system_bp)
    app.register_blueprint(resources_bp)
    return app
