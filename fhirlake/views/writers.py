"""Write a view's record batches as CSV, NDJSON, JSON or Parquet.

Decimal columns (Arrow strings tagged ``fhir_type=decimal``) are written to JSON as numbers with
their exact text; list columns go to CSV as JSON arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .types import META_FHIR_TYPE

FORMATS = ("csv", "ndjson", "json", "parquet")


def write_rows(batches: Iterable[pa.RecordBatch], fmt: str, out: BinaryIO, schema: pa.Schema | None = None) -> int:
    """Write every batch to `out` in `fmt`; returns the number of rows written.

    `schema` is needed only when `batches` may be empty (Parquet and CSV still write a header).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None and schema is None:
        if fmt == "json":
            out.write(b"[]")
        return 0
    schema = first.schema if first is not None else schema
    assert schema is not None
    chain = _chain(first, iterator)
    if fmt == "parquet":
        return _write_parquet(chain, schema, out)
    if fmt == "csv":
        return _write_csv(chain, schema, out)
    return _write_json(chain, schema, out, as_array=(fmt == "json"))


def _chain(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if first is not None:
        yield first
    yield from rest


def _write_parquet(batches: Iterable[pa.RecordBatch], schema: pa.Schema, out: BinaryIO) -> int:
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            count += batch.num_rows
    return count


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_list(f.type) else f for f in schema])


def _csv_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(field.type):
            texts = [None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()]
            column = pa.array(texts, pa.string())
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write_csv(batches: Iterable[pa.RecordBatch], schema: pa.Schema, out: BinaryIO) -> int:
    csv_schema = _csv_schema(schema)
    count = 0
    with pacsv.CSVWriter(out, csv_schema) as writer:
        for batch in batches:
            writer.write_batch(_csv_batch(batch, csv_schema))
            count += batch.num_rows
    return count


def _json_cell_converters(schema: pa.Schema) -> list:
    converters = []
    for field in schema:
        is_decimal = (field.metadata or {}).get(META_FHIR_TYPE) == b"decimal"
        if not is_decimal:
            converters.append(None)
        elif pa.types.is_list(field.type):
            converters.append(lambda v: None if v is None else [orjson.Fragment(x) if x is not None else None for x in v])
        else:
            converters.append(lambda v: None if v is None else orjson.Fragment(v))
    return converters


def _write_json(batches: Iterable[pa.RecordBatch], schema: pa.Schema, out: BinaryIO, as_array: bool) -> int:
    converters = _json_cell_converters(schema)
    names = schema.names
    count = 0
    if as_array:
        out.write(b"[")
    for batch in batches:
        columns = [c.to_pylist() for c in batch.columns]
        for conv_index, conv in enumerate(converters):
            if conv is not None:
                columns[conv_index] = [conv(v) for v in columns[conv_index]]
        for row in zip(*columns, strict=True):
            data = orjson.dumps(dict(zip(names, row, strict=True)))
            if as_array:
                out.write(b"," + data if count else data)
            else:
                out.write(data + b"\n")
            count += 1
    if as_array:
        out.write(b"]")
    return count
