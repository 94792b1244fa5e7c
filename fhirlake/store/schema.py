"""Table definitions used by queries. The DDL of record lives in the Alembic migrations.

Layout (see DESIGN.md, "Storage"):
- ``resource_version``: every version of every resource, its JSON text exactly as served.
- ``resource``: one row per logical resource pointing at its current version; ``rid`` is the
  compact surrogate key that the search index tables use.
- ``txid`` (xid8) lets change readers compute a watermark that never misses a transaction that
  commits late with a smaller sequence number (see ``fhirlake.store.changes``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

resource = Table(
    "resource",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("res_type", Text, nullable=False),
    Column("res_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("res_type", Text, nullable=False),
    Column("res_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", Text, nullable=False),  # 'create' | 'update' | 'delete'
    Column("content", Text),  # NULL for a delete tombstone
)

job = Table(
    "job",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("progress", JSONB),
    Column("result", JSONB),
    Column("error", Text),
    Column("owner", Text),
    Column("worker_id", Text),
    Column("attempts", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_polled_at", DateTime(timezone=True)),
)

auth_client = Table(
    "auth_client",
    metadata,
    Column("client_id", Text, primary_key=True),
    Column("jwks", JSONB),
    Column("jwks_url", Text),
    Column("scope", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

auth_jti = Table(
    "auth_jti",
    metadata,
    Column("client_id", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

audit_event = Table(
    "audit_event",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("client_id", Text),
    Column("user_id", Text),
    Column("patient_id", Text),
    Column("action", Text, nullable=False),  # C R U D E (FHIR AuditEvent.action)
    Column("interaction", Text, nullable=False),  # read, vread, search-type, create, ...
    Column("resource_type", Text),
    Column("resource_ids", Text),  # space-separated ids touched
    Column("query_params", Text),  # parameter NAMES only, never values (no PHI)
    Column("source_ip", Text),
    Column("outcome", Integer, nullable=False),  # HTTP status
    Column("outcome_desc", Text),
)

view_state = Table(
    "view_state",
    metadata,
    Column("name", Text, primary_key=True),
    Column("zone", Text, primary_key=True),  # 'lake' or a de-identification profile
    Column("definition_hash", Text, nullable=False),
    Column("watermark", Text),
    Column("row_count", BigInteger),
    Column("refreshed_at", DateTime(timezone=True)),
)
