"""Baseline for the read benchmark: a bare Flask route doing the same primary-key SELECT as fhirlake."""

from __future__ import annotations

import os

from flask import Flask, Response
from psycopg_pool import ConnectionPool

app = Flask("baseline")
pool = ConnectionPool(os.environ["FHIRLAKE_DATABASE_URL"], min_size=4, max_size=8, open=True)
SQL = (
    "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
    " WHERE r.res_type = %s AND r.res_id = %s"
)


@app.get("/<res_type>/<res_id>")
def read(res_type: str, res_id: str) -> Response:
    with pool.connection() as conn:
        row = conn.execute(SQL, (res_type, res_id)).fetchone()
    if row is None:
        return Response(status=404)
    return Response(row[0], content_type="application/fhir+json")
