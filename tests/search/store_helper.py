"""A minimal writer for the search tests: resource + resource_version rows, then index_resources
in the same transaction (what the real store does)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from sqlalchemy import Connection

from fhirlake.search.index import index_resources, remove_index


def put_resources(conn: Connection, resources: Sequence[dict], when: datetime | None = None) -> list[int]:
    """Create or replace resources (by type and id); returns their rids in input order."""
    when = when or datetime.now(UTC)
    rids = []
    for res in resources:
        content = orjson.dumps(res).decode()
        row = conn.exec_driver_sql(
            "INSERT INTO resource (res_type, res_id, version, seq, last_updated, deleted)"
            " VALUES (%s, %s, 1, nextval('change_seq'), %s, false)"
            " ON CONFLICT (res_type, res_id) DO UPDATE SET version = resource.version + 1,"
            " seq = nextval('change_seq'), last_updated = EXCLUDED.last_updated, deleted = false"
            " RETURNING rid, version, seq",
            (res["resourceType"], res["id"], when),
        ).one()
        conn.exec_driver_sql(
            "INSERT INTO resource_version (rid, version, res_type, res_id, seq, last_updated, method, content)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (row[0], row[1], res["resourceType"], res["id"], row[2], when, "create" if row[1] == 1 else "update", content),
        )
        rids.append(row[0])
    index_resources(conn, [(rid, r["resourceType"], r) for rid, r in zip(rids, resources, strict=True)])
    return rids


def bulk_load(conn: Connection, resources: Sequence[dict], when: datetime | None = None) -> list[int]:
    """Fast path for large fixtures: one multi-row insert per table, new resources only."""
    when = when or datetime.now(UTC)
    types = [r["resourceType"] for r in resources]
    ids = [r["id"] for r in resources]
    rows = conn.exec_driver_sql(
        "INSERT INTO resource (res_type, res_id, version, seq, last_updated, deleted)"
        " SELECT t, i, 1, nextval('change_seq'), %(w)s, false FROM unnest(%(t)s::text[], %(i)s::text[]) WITH ORDINALITY AS u(t, i, n)"
        " ORDER BY n RETURNING rid, seq",
        {"t": types, "i": ids, "w": when},
    ).all()
    rids = [r[0] for r in rows]
    conn.exec_driver_sql(
        "INSERT INTO resource_version (rid, version, res_type, res_id, seq, last_updated, method, content)"
        " SELECT r, 1, t, i, s, %(w)s, 'create', c FROM unnest(%(r)s::bigint[], %(t)s::text[], %(i)s::text[],"
        " %(s)s::bigint[], %(c)s::text[]) AS u(r, t, i, s, c)",
        {"r": rids, "t": types, "i": ids, "s": [r[1] for r in rows], "w": when,
         "c": [orjson.dumps(r).decode() for r in resources]},
    )
    index_resources(conn, [(rid, t, r) for rid, t, r in zip(rids, types, resources, strict=True)], replace=False)
    return rids


def delete_resource(conn: Connection, res_type: str, res_id: str) -> None:
    rid = conn.exec_driver_sql(
        "UPDATE resource SET deleted = true, version = version + 1 WHERE res_type = %s AND res_id = %s RETURNING rid",
        (res_type, res_id),
    ).scalar()
    remove_index(conn, [rid])


def clear_all(conn: Connection) -> None:
    """Empty the resource and index tables (each test module starts from its own fixtures)."""
    conn.exec_driver_sql(
        "TRUNCATE sp_token, sp_string, sp_date, sp_number, sp_reference, sp_uri, resource_version, resource CASCADE"
    )
