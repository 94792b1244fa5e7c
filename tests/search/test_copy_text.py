"""Index rows as COPY text: our formatter (used when psycopg's private one is gone) writes exactly
what psycopg's does, for every index row of the Synthea sample and for values with special bytes."""

from __future__ import annotations

import gzip
import sys
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from fhirlake.search import index
from fhirlake.search.index import (
    TABLE_COLUMNS,
    _transformer,
    format_copy_row,
    prepare_copy_text,
    prepare_rows,
)
from tests.conftest import SHARED

SYNTHEA = SHARED / "synthea" / "smart-generated-sample-data-r4-100"


def _both(row: tuple) -> tuple[bytes, bytes]:
    format_row_text = pytest.importorskip("psycopg._copy_base").format_row_text  # what we stand in for
    transformer = _transformer()
    ours, theirs = bytearray(), bytearray()
    format_copy_row(row, transformer, ours)  # both append to the buffer they are given
    format_row_text(row, transformer, theirs)
    return bytes(ours), bytes(theirs)


def test_values_with_special_bytes_are_escaped_like_psycopg() -> None:
    rows = [
        (1, 2, "tab\there", "new\nline", "back\\slash", "cr\rbs\bff\fvt\v", None, "ünïcødé ✓"),
        (0, 7, "", None, Decimal("-12.50"), 3.25, True, datetime(2020, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)),
        (5, None, "\\N", "\\\\t", "ends with backslash\\"),
    ]
    for row in rows:
        ours, theirs = _both(row)
        assert ours == theirs, row
    assert _both(rows[0])[0] == b"1\t2\ttab\\there\tnew\\nline\tback\\\\slash\tcr\\rbs\\bff\\fvt\\v\t\\N\t" + \
        "ünïcødé ✓".encode() + b"\n"


def test_every_index_row_of_the_sample_formats_like_psycopg() -> None:
    checked = 0
    for path in sorted(SYNTHEA.glob("*.ndjson.gz")):
        with gzip.open(path) as fh:
            for line in list(fh)[:300]:
                resource = orjson.loads(line)
                rows = prepare_rows(resource["resourceType"], resource)
                for table in TABLE_COLUMNS:
                    for row in getattr(rows, table):
                        ours, theirs = _both(row)
                        assert ours == theirs, (table, row)
                        checked += 1
    assert checked > 10_000


def test_without_psycopgs_private_formatter_ours_is_used(monkeypatch) -> None:  # noqa: ANN001
    resource = orjson.loads(next(iter(gzip.open(SYNTHEA / "Observation.ndjson.gz"))))
    expected = prepare_copy_text("Observation", resource)
    index._copy_row_formatter.cache_clear()
    monkeypatch.setitem(sys.modules, "psycopg._copy_base", None)  # its import now fails
    try:
        assert index._copy_row_formatter() is format_copy_row
        assert prepare_copy_text("Observation", resource).blocks == expected.blocks
    finally:
        index._copy_row_formatter.cache_clear()
