"""A fresh PostgreSQL database per test session, migrated to head, dropped at the end."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade

SERVER_URL = os.environ.get("FHIRLAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    name = f"fhirlake_search_{secrets.token_hex(4)}"
    admin = create_engine(SERVER_URL.replace("postgresql://", "postgresql+psycopg://") + "/postgres",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(f"{SERVER_URL}/{name}", pool_size=2)
    try:
        upgrade(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
