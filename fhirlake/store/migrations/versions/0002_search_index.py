"""Search index tables: typed rows extracted at write time (see fhirlake.search.index).

Every row carries the resource's ``rid`` and a parameter id ``pid`` (fhirlake.search.registry
.param_id). ``grp`` numbers the repeating element a value came from, so the components of a
composite parameter can be matched within one element. Indexes start with pid so that one
B-tree range scan answers a parameter test; ``(rid, pid)`` serves replacement, _include and sort.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"

DDL = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE sp_token (
    rid bigint NOT NULL, pid integer NOT NULL, grp smallint NOT NULL DEFAULT 0,
    system text, code text
);
CREATE INDEX sp_token_value ON sp_token (pid, code, system, rid);
CREATE INDEX sp_token_rid ON sp_token (rid, pid);

CREATE TABLE sp_string (
    rid bigint NOT NULL, pid integer NOT NULL, grp smallint NOT NULL DEFAULT 0,
    norm text NOT NULL, exact text NOT NULL
);
CREATE INDEX sp_string_value ON sp_string (pid, norm text_pattern_ops, rid);
CREATE INDEX sp_string_rid ON sp_string (rid, pid);
CREATE INDEX sp_string_trgm ON sp_string USING gin (norm gin_trgm_ops);

CREATE TABLE sp_date (
    rid bigint NOT NULL, pid integer NOT NULL, grp smallint NOT NULL DEFAULT 0,
    lo timestamptz NOT NULL, hi timestamptz NOT NULL
);
CREATE INDEX sp_date_lo ON sp_date (pid, lo, hi, rid);
CREATE INDEX sp_date_hi ON sp_date (pid, hi, rid);
CREATE INDEX sp_date_rid ON sp_date (rid, pid);

CREATE TABLE sp_number (
    rid bigint NOT NULL, pid integer NOT NULL, grp smallint NOT NULL DEFAULT 0,
    system text, code text, unit text, lo numeric NOT NULL, hi numeric NOT NULL
);
CREATE INDEX sp_number_lo ON sp_number (pid, lo, rid);
CREATE INDEX sp_number_hi ON sp_number (pid, hi, rid);
CREATE INDEX sp_number_rid ON sp_number (rid, pid);

CREATE TABLE sp_reference (
    rid bigint NOT NULL, pid integer NOT NULL,
    target_type text, target_id text, url text
);
CREATE INDEX sp_reference_target ON sp_reference (pid, target_id, target_type, rid);
CREATE INDEX sp_reference_url ON sp_reference (pid, url) WHERE url IS NOT NULL;
CREATE INDEX sp_reference_rid ON sp_reference (rid, pid);

CREATE TABLE sp_uri (
    rid bigint NOT NULL, pid integer NOT NULL, grp smallint NOT NULL DEFAULT 0,
    uri text NOT NULL
);
CREATE INDEX sp_uri_value ON sp_uri (pid, uri text_pattern_ops, rid);
CREATE INDEX sp_uri_rid ON sp_uri (rid, pid);

-- `fhirlake db reindex` remembers how far it got, so an interrupted run resumes.
CREATE TABLE search_reindex_state (
    name       text PRIMARY KEY,
    last_rid   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX resource_type_rid_live ON resource (res_type, rid) WHERE NOT deleted;
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute(
        "DROP INDEX resource_type_rid_live;"
        " DROP TABLE search_reindex_state, sp_uri, sp_reference, sp_number, sp_date, sp_string, sp_token;"
    )
