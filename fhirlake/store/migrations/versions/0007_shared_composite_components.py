"""Drop the index rows of composite components that are now shared between composites.

Composites that select the same elements and have a component in common (Observation's
code-value-quantity, -concept, -string and -date all pair ``code`` with a value) now store that
component once, under the first composite's pid (``fhirlake.search.registry``); the copies written
under the other composites' pids are no longer read. About a quarter of an Observation's index
rows were such copies.

Revision ID: 0007
"""

from alembic import op
from sqlalchemy import text

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    from fhirlake.search.planner import TABLE_OF_TYPE
    from fhirlake.search.registry import registry

    by_table: dict[str, list[int]] = {}
    for component_type, pid in registry().shared_component_pids():
        by_table.setdefault(TABLE_OF_TYPE[component_type], []).append(pid)
    for table, pids in sorted(by_table.items()):
        op.get_bind().execute(text(f"DELETE FROM {table} WHERE pid = ANY(:pids)"), {"pids": sorted(pids)})


def downgrade() -> None:
    # The copies are not needed by any code that runs on this schema; `fhirlake db reindex`
    # rebuilds every row if an older version must run again.
    pass
