"""What the request handlers share: settings and the database engine."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, request
from sqlalchemy import Engine

from fhirlake.config import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine  # transactions (writes, multi-statement work)
    reader: Engine  # autocommit, for reads that are a single statement
    key_reader: Engine  # autocommit, generic plans: lookups by primary key (read, vread)


def runtime() -> Runtime:
    return current_app.extensions["fhirlake"]


def base_url() -> str:
    configured = runtime().settings.base_url
    if configured:
        return configured.rstrip("/")
    return request.url_root.rstrip("/")
