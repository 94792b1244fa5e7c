"""A fresh PostgreSQL database per test session, migrated to head, dropped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.conftest import fresh_engine


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with fresh_engine("fhirlake_search", pool_size=2) as eng:
        yield eng
