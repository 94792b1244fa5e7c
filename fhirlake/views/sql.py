"""SQL over the materialized views: a DuckDB connection where each view is a table named after it.

    con = connect_lake(settings.lake_dir)
    con.execute("SELECT p.gender, count(*) FROM patient p JOIN condition c ON c.patient_id = p.id GROUP BY 1")

The tables read the current generation's files (taken when the connection is made), so a query
sees one consistent generation per view even while a refresh publishes the next.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from .lake import ViewLake


class LakeNotMaterialized(LookupError):
    """No view of the zone has been materialized yet."""


def _quote_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def connect_lake(lake_dir: Path, deid_profile: str | None = None) -> duckdb.DuckDBPyConnection:
    lake = ViewLake.for_zone(Path(lake_dir), deid_profile)
    names = lake.names()
    if not names:
        raise LakeNotMaterialized(
            f"no materialized views under {lake.root}; run `fhirlake views refresh"
            f"{' --deid ' + deid_profile if deid_profile else ''}` first"
        )
    con = duckdb.connect()
    for name in names:
        files = lake.data_files(name)
        if not files:
            continue
        file_list = ", ".join(_quote_path(f) for f in files)
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet([{file_list}])')
    return con
