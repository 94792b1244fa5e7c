"""Engine construction. One engine per process; psycopg 3 underneath."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and select the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        future=True,
    )


def make_read_engine(url: str, pool_size: int = 10) -> Engine:
    """An autocommit engine for single-statement reads: no BEGIN/ROLLBACK round trips per request."""
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
