"""ViewDefinition search columns: name, status and resource of each stored ViewDefinition.

ViewDefinition is not an R4 resource type, so the R4 search parameters do not index it; this
small table, kept in step by ``fhirlake.views.definitions`` inside the write transaction, answers
``GET /ViewDefinition?name=&status=&resource=`` without scanning JSON.

Revision ID: 0005
"""

from alembic import op

revision = "0005"
down_revision = "0002"

DDL = """
CREATE TABLE view_definition (
    rid      bigint PRIMARY KEY REFERENCES resource (rid),
    res_id   text NOT NULL,
    name     text,
    status   text,
    resource text
);
CREATE INDEX view_definition_name ON view_definition (lower(name) text_pattern_ops);
CREATE INDEX view_definition_status ON view_definition (status);
CREATE INDEX view_definition_resource ON view_definition (resource);
"""


def upgrade() -> None:
    op.execute(DDL)


def downgrade() -> None:
    op.execute("DROP TABLE view_definition")
