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


def test_migration_0007_drops_composite_component_copies_only() -> None:
    from fhirlake.search.registry import registry
    from fhirlake.store.db import make_engine
    from fhirlake.store.migrate import upgrade
    from tests.conftest import PG_SERVER, create_database, drop_database

    concept = registry().get("Observation", "code-value-concept")
    quantity = registry().get("Observation", "code-value-quantity")
    assert concept is not None and quantity is not None
    shared, owner = quantity.sub_pid("c0"), concept.sub_pid("c0")
    assert quantity.component_pid(0) == owner != shared
    name = create_database("fhirlake_migration_0007")
    eng = make_engine(f"{PG_SERVER}/{name}", pool_size=1)
    try:
        upgrade(eng, "0006")
        with eng.begin() as conn:  # rows as the index writer made them before 0007
            for pid in (shared, owner, quantity.component_pid(1)):
                conn.execute(text("INSERT INTO sp_token (rid, pid, grp, system, code) VALUES (1, :p, 1, 's', 'c')"),
                             {"p": pid})
        upgrade(eng)
        with eng.connect() as conn:
            left = set(conn.execute(text("SELECT pid FROM sp_token")).scalars())
        assert left == {owner, quantity.component_pid(1)}
    finally:
        eng.dispose()
        drop_database(name)
