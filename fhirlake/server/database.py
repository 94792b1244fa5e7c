"""Choose the database: FHIRLAKE_DATABASE_URL, or the private embedded cluster."""

from __future__ import annotations

import atexit
import logging

from sqlalchemy import Engine

from fhirlake.config import Settings
from fhirlake.server.embedded_pg import EmbeddedPostgres
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

log = logging.getLogger("fhirlake")


def database_url(settings: Settings, *, manage_embedded: bool = True) -> tuple[str, EmbeddedPostgres | None]:
    if settings.database_url:
        return settings.database_url, None
    import os

    pg = EmbeddedPostgres(settings.pg_dir, binaries=os.environ.get("FHIRLAKE_PG_BINARIES", "auto"))
    url = pg.start()
    if manage_embedded:
        atexit.register(pg.stop)
    return url, pg


def open_database(settings: Settings, *, migrate: bool = True, pool_size: int = 10) -> tuple[Engine, str]:
    url, _pg = database_url(settings)
    engine = make_engine(url, pool_size=pool_size)
    if migrate:
        upgrade(engine)
    return engine, url
