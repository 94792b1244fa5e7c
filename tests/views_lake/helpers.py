"""Shared helpers of the lake tests: read a view back from the lake, compute what it should hold."""

from __future__ import annotations

import gzip
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, text

from fhirlake.store.resources import WriteOp, write_resources
from fhirlake.views import compile_view
from fhirlake.views.catalog import load_catalog
from fhirlake.views.lake import ViewLake
from fhirlake.views.ndjson import parse_line

from .conftest import SYNTHEA_100

CATALOG = load_catalog()


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: json.dumps({k: _canonical(v) for k, v in r.items()}, sort_keys=True, default=str))


def lake_table(lake_dir: Path, name: str, zone: str | None = None) -> pa.Table:
    lake = ViewLake.for_zone(lake_dir, zone)
    files = lake.data_files(name)
    assert files, f"view {name} is not materialized"
    return pa.concat_tables([pq.read_table(f) for f in files])


def lake_rows(lake_dir: Path, name: str, zone: str | None = None) -> list[dict]:
    return sort_rows(lake_table(lake_dir, name, zone).to_pylist())


def store_rows(engine: Engine, view_of: str | dict) -> list[dict]:
    """The view (a catalog name, or a ViewDefinition) evaluated row by row (closures back end) over
    the store's current resources."""
    view = compile_view(CATALOG[view_of] if isinstance(view_of, str) else view_of)
    with engine.connect() as conn:
        contents = conn.execute(
            text(
                "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
                " WHERE r.res_type = :t AND NOT r.deleted"
            ),
            {"t": view.resource_type},
        ).scalars().all()
    rows = list(view.rows(parse_line(c) for c in contents))
    return sort_rows(rows)


def synthea_resources(resource_type: str, limit: int | None = None) -> list[dict]:
    out = []
    with gzip.open(SYNTHEA_100 / f"{resource_type}.ndjson.gz", "rb") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


def write(engine: Engine, resources: list[dict], deletes: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
    ops = [WriteOp(r["resourceType"], r["id"], r) for r in resources]
    ops += [WriteOp(t, i, None) for t, i in deletes]
    with engine.begin() as conn:
        write_resources(conn, ops, index=False)


def new_id() -> str:
    return str(uuid.uuid4())
