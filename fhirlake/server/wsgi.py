"""WSGI entry point for gunicorn: ``gunicorn 'fhirlake.server.wsgi:app'`` (needs FHIRLAKE_DATABASE_URL)."""

from __future__ import annotations

from fhirlake.api.app import create_app
from fhirlake.config import load_settings
from fhirlake.store.db import make_engine

_settings = load_settings()
if not _settings.database_url:
    raise SystemExit("FHIRLAKE_DATABASE_URL must be set for the WSGI entry point")
app = create_app(_settings, make_engine(_settings.database_url))
