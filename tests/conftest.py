"""Shared fixtures: a fresh PostgreSQL database per test run and a real HTTP server on it.

The database server is the one at FHIRLAKE_TEST_PG (default postgresql://postgres@127.0.0.1:5432);
each run creates its own database with a random name and drops it at the end.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine
from werkzeug.serving import make_server

from fhirlake.config import Settings
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

logging.getLogger("werkzeug").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PG_SERVER = os.environ.get("FHIRLAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def _reachable(url: str) -> bool:
    try:
        psycopg.connect(f"{url}/postgres", connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


if "FHIRLAKE_TEST_PG" not in os.environ and not _reachable(PG_SERVER):
    # A machine without a PostgreSQL service: run the tests on a private embedded cluster instead.
    import atexit
    import tempfile

    from fhirlake.server.embedded_pg import EmbeddedPostgres

    _pg_dir = Path(tempfile.mkdtemp(prefix="fhirlake-test-pg-", dir="/tmp"))
    _pg_dir.chmod(0o755)
    _embedded = EmbeddedPostgres(_pg_dir / "pg")
    PG_SERVER = _embedded.start().rsplit("/", 1)[0]
    os.environ["FHIRLAKE_TEST_PG"] = PG_SERVER
    atexit.register(_embedded.stop)


def _admin() -> psycopg.Connection:
    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True)


def create_database(prefix: str = "fhirlake_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_engine(prefix: str = "fhirlake_test", pool_size: int = 8) -> Iterator[Engine]:
    """A new, migrated database for one test session (or module); dropped afterwards."""
    name = create_database(prefix)
    eng = make_engine(f"{PG_SERVER}/{name}", pool_size=pool_size)
    try:
        upgrade(eng)
        yield eng
    finally:
        eng.dispose()
        drop_database(name)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = create_database()
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def engine(database_url: str):  # noqa: ANN201
    eng = make_engine(database_url, pool_size=8)
    upgrade(eng)
    yield eng
    eng.dispose()


class LiveServer:
    def __init__(self, app, settings: Settings) -> None:  # noqa: ANN001
        self.settings = settings
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()


def start_server(engine, tmp_path: Path, **overrides) -> LiveServer:  # noqa: ANN001
    from fhirlake.api.app import create_app

    settings = Settings(database_url=str(engine.url), data_dir=tmp_path, **overrides)
    return LiveServer(create_app(settings, engine), settings).start()


@pytest.fixture(scope="session")
def server(engine, tmp_path_factory) -> Iterator[LiveServer]:  # noqa: ANN001
    live = start_server(engine, tmp_path_factory.mktemp("fhirlake-data"))
    yield live
    live.stop()


@pytest.fixture()
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"Accept": "application/fhir+json"}) as c:
        yield c
