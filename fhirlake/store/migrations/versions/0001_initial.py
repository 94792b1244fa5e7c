"""Resources and their versions, jobs, auth clients, audit log, view state.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None

DDL = """
CREATE SEQUENCE change_seq;

CREATE TABLE resource (
    rid          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    res_type     text        NOT NULL,
    res_id       text        NOT NULL,
    version      integer     NOT NULL,
    seq          bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    CONSTRAINT resource_type_id UNIQUE (res_type, res_id)
);
CREATE INDEX resource_type_updated ON resource (res_type, last_updated);

CREATE TABLE resource_version (
    rid          bigint      NOT NULL REFERENCES resource (rid),
    version      integer     NOT NULL,
    res_type     text        NOT NULL,
    res_id       text        NOT NULL,
    seq          bigint      NOT NULL,
    txid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    last_updated timestamptz NOT NULL,
    method       text        NOT NULL CHECK (method IN ('create', 'update', 'delete')),
    content      text,
    PRIMARY KEY (rid, version)
);
CREATE INDEX resource_version_seq ON resource_version (seq);
CREATE INDEX resource_version_txid ON resource_version (txid);
CREATE INDEX resource_version_type_updated ON resource_version (res_type, last_updated);
CREATE INDEX resource_version_updated ON resource_version (last_updated);

CREATE TABLE job (
    id               uuid PRIMARY KEY,
    kind             text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    params           jsonb       NOT NULL,
    progress         jsonb,
    result           jsonb,
    error            text,
    owner            text,
    worker_id        text,
    attempts         integer     NOT NULL DEFAULT 0,
    cancel_requested boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    finished_at      timestamptz,
    expires_at       timestamptz,
    last_polled_at   timestamptz
);
CREATE INDEX job_claimable ON job (created_at) WHERE status IN ('queued', 'running');

CREATE TABLE auth_client (
    client_id  text PRIMARY KEY,
    jwks       jsonb,
    jwks_url   text,
    scope      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth_jti (
    client_id  text        NOT NULL,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);

CREATE TABLE audit_event (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded      timestamptz NOT NULL DEFAULT now(),
    client_id     text,
    user_id       text,
    patient_id    text,
    action        text        NOT NULL,
    interaction   text        NOT NULL,
    resource_type text,
    resource_ids  text,
    query_params  text,
    source_ip     text,
    outcome       integer     NOT NULL,
    outcome_desc  text
);
CREATE INDEX audit_event_recorded ON audit_event (recorded);

CREATE TABLE view_state (
    name            text NOT NULL,
    zone            text NOT NULL,
    definition_hash text NOT NULL,
    watermark       text,
    row_count       bigint,
    refreshed_at    timestamptz,
    PRIMARY KEY (name, zone)
);
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE view_state, audit_event, auth_jti, auth_client, job, resource_version, resource;"
        " DROP SEQUENCE change_seq;"
    )
