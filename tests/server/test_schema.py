"""The migrated schema as PostgreSQL sees it."""

from __future__ import annotations

import httpx
from sqlalchemy import text

_LZ4_AVAILABLE = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


def test_resource_content_is_lz4_compressed_where_the_server_supports_it(engine, client: httpx.Client) -> None:  # noqa: ANN001
    note = "lorem ipsum dolor sit amet " * 400  # well above the 2 kB TOAST threshold
    created = client.post("/Patient", json={"resourceType": "Patient", "text": {"status": "generated",
                          "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">{note}</div>"}},
                          headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    with engine.connect() as conn:
        available = conn.execute(text(_LZ4_AVAILABLE)).scalar()
        method = conn.execute(text(
            "SELECT pg_column_compression(v.content) FROM resource_version v JOIN resource r ON r.rid = v.rid"
            " WHERE r.res_type = 'Patient' AND r.res_id = :i"), {"i": created.json()["id"]}).scalar()
    assert method == ("lz4" if available else "pglz")
    assert client.get(f"/Patient/{created.json()['id']}").json()["text"]["div"].count("lorem") == 400
