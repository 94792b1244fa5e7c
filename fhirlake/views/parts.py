"""The files of one part of a materialized view: a Parquet data file and an Arrow key file.

Why this format (measured on the catalog, 2 cores, see bench/bench_view_refresh.py): an incremental
refresh after random changes touches nearly every part, so its cost is the cost of rewriting
parts. Each data file is ONE row group, uncompressed and without statistics. String columns with
repeated values (codes, units, references to patients) are dictionary-encoded, with the dictionary
never falling back to plain. A rewrite then reads those columns *as dictionaries*
(``read_dictionary``), filters only their int32 indices and hands the same dictionaries back to
the writer: no string is decoded or copied row by row (about 0.45 µs per row instead of 1.7 µs for
decode, filter and re-encode). String columns whose values are more than half distinct (the
resource key, most references to single resources) are written plain instead: a dictionary would
hold nearly every value, and the writer hashes every dictionary value again on each rewrite (plain
made such rewrites 25-60% cheaper per part). The choice is made by counting when rows are first
written and kept by every rewrite of them. Readers see ordinary Parquet with the view's plain schema.

A dictionary keeps the values of rows removed by later rewrites; once it holds more than twice as
many values as the part has rows, that column is decoded and its dictionary rebuilt.

The rows' resource keys are the view's own key column when it has one (a top-level column whose path is
``getResourceKey()``: every catalog view's ``id``). Otherwise they are kept beside the data, in key
files (``keys/``, never opened by readers): Arrow IPC files, read by memory mapping.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

KEY_SCHEMA = pa.schema([pa.field("key", pa.string())])
# store_schema is off because the columns handed to the writer may be dictionaries: the schema
# readers get (the view's, plain strings) is written by hand instead, exactly as pyarrow would.
PARQUET_OPTIONS: dict = {
    "compression": "none",
    "write_statistics": False,
    "dictionary_pagesize_limit": 1 << 30,
    "store_schema": False,
}
STALE_DICTIONARY_FACTOR = 2  # rebuild a dictionary holding more than this many values per row
STALE_DICTIONARY_SLACK = 1024


def key_file_name(data_file: str) -> str:
    """The key file beside a data file (same stem, ``.arrow``)."""
    return data_file.removesuffix(".parquet") + ".arrow"


@lru_cache(maxsize=64)
def _file_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """Key-value metadata as pyarrow's ``store_schema`` writes it: the Arrow schema, base64 IPC."""
    metadata = dict(schema.metadata or {})
    metadata[b"ARROW:schema"] = base64.b64encode(schema.serialize().to_pybytes())
    return metadata


def _string_columns(schema: pa.Schema) -> tuple[str, ...]:
    return tuple(f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type))


# A string column is dictionary-encoded when fewer than this share of its values are distinct.
# Counted exactly, not judged on a sample: a sample cannot tell a column whose values each repeat a
# few dozen times (patient references, timestamps) from one whose values are all distinct, yet
# only the second is cheaper plain.
DISTINCT_SHARE_FOR_PLAIN = 0.5


def _dictionary_columns(table: pa.Table) -> list[str]:
    """Columns of new rows to dictionary-encode: string columns whose values repeat."""
    chosen = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_dictionary(field.type):
            chosen.append(field.name)
        elif pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            present = len(column) - column.null_count
            if present == 0 or pc.count_distinct(column).as_py() < DISTINCT_SHARE_FOR_PLAIN * present:
                chosen.append(field.name)
    return chosen


def write_data(table: pa.Table, path: Path, schema: pa.Schema, dictionary: list[str] | None = None) -> None:
    """Write ``table`` (the view's columns, strings plain or as dictionaries) as one row group.

    ``dictionary`` names the columns to dictionary-encode; by default they are chosen by counting
    (new rows). A rewrite passes the choice made when its rows were first written.
    """
    options = {**PARQUET_OPTIONS, "use_dictionary": _dictionary_columns(table) if dictionary is None else dictionary}
    with pq.ParquetWriter(path, table.schema, **options) as writer:
        writer.write_table(table, row_group_size=max(table.num_rows, 1))
        # without store_schema nothing of the schema's metadata is written: add it all here
        writer.add_key_value_metadata(_file_metadata(schema))


def read_data_for_rewrite(path: Path, schema: pa.Schema, skip: str | None = None) -> tuple[pa.Table, list[str]]:
    """A data part with its string columns as dictionaries (indices only are touched by filters),
    without column ``skip``; and the names of all its dictionary-encoded columns."""
    # ParquetFile over a memory map: about half the time of pq.read_table (no dataset layer, no copy
    # of the file into Arrow buffers before decoding); one thread, the caller runs several parts.
    parquet = pq.ParquetFile(path, memory_map=True)
    encoded = _dictionary_encoded(parquet.metadata, _string_columns(schema))
    if encoded:  # the columns written with a dictionary are read as one
        parquet = pq.ParquetFile(path, read_dictionary=encoded, memory_map=True)
    columns = None if skip is None else [name for name in schema.names if name != skip]
    return parquet.read(columns=columns, use_threads=False), encoded


def read_key_column(path: Path, name: str) -> pa.Array:
    """One column of a data part, plain (a view's resource key column)."""
    return pq.ParquetFile(path, memory_map=True).read(columns=[name], use_threads=False).column(0).combine_chunks()


def _dictionary_encoded(metadata: pq.FileMetaData, strings: tuple[str, ...]) -> list[str]:
    if metadata.num_row_groups == 0:
        return list(strings)
    group = metadata.row_group(0)
    names = [group.column(i).path_in_schema for i in range(group.num_columns)]
    return [name for i, name in enumerate(names) if name in strings and group.column(i).has_dictionary_page]


def drop_stale_dictionaries(table: pa.Table) -> pa.Table:
    """Decode dictionary columns that mostly hold values of rows removed earlier."""
    limit = STALE_DICTIONARY_FACTOR * table.num_rows + STALE_DICTIONARY_SLACK
    for index, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type):
            continue
        column = table.column(index)
        if any(len(chunk.dictionary) > limit for chunk in column.chunks):
            plain = pa.chunked_array([chunk.dictionary_decode() for chunk in column.chunks], field.type.value_type)
            table = table.set_column(index, field.with_type(field.type.value_type), plain)
    return table


def write_keys(keys: pa.Array, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, KEY_SCHEMA) as writer:
        writer.write_batch(pa.record_batch([keys], schema=KEY_SCHEMA))


def read_keys(path: Path) -> pa.ChunkedArray:
    """The keys of a part, memory-mapped (no copy)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all().column(0)
