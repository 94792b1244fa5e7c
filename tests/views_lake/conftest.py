"""Fixtures of the lake tests: databases of their own (other tests write into the shared one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirlake.services.loader import load_folder
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade
from tests.conftest import PG_SERVER, create_database, drop_database, start_server

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SYNTHEA_100 = SHARED / "synthea" / "smart-generated-sample-data-r4-100"


def fresh_engine(prefix: str):  # noqa: ANN201
    name = create_database(prefix)
    engine = make_engine(f"{PG_SERVER}/{name}", pool_size=8)
    upgrade(engine)
    return name, engine


@pytest.fixture(scope="session")
def synthea_engine() -> Iterator:
    """A database holding the 100-patient Synthea set, loaded once per run."""
    name, engine = fresh_engine("fl_views_synthea")
    try:
        load_folder(engine, SYNTHEA_100)
        yield engine
    finally:
        engine.dispose()
        drop_database(name)


@pytest.fixture(scope="session")
def synthea_lake(synthea_engine, tmp_path_factory) -> Path:  # noqa: ANN001
    """A lake with every catalog view materialized from the Synthea database."""
    from fhirlake.views.refresh import refresh_views

    lake = tmp_path_factory.mktemp("synthea-lake")
    refresh_views(synthea_engine, lake)
    return lake


@pytest.fixture(scope="session")
def synthea_server(synthea_engine, tmp_path_factory) -> Iterator:  # noqa: ANN001
    live = start_server(synthea_engine, tmp_path_factory.mktemp("views-server"))
    yield live
    live.stop()


@pytest.fixture()
def empty_engine() -> Iterator:
    """A fresh, empty database for one test."""
    name, engine = fresh_engine("fl_views_lake")
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(name)
