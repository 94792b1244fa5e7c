"""Stream a view's record batches as bytes, chunk by chunk (HTTP responses, export files).

``write_rows`` writes a whole result to one file object; here each batch becomes a chunk as soon
as it is evaluated, so a large result never sits in memory. The bytes are the same as
``write_rows`` produces (a test compares them).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .writers import write_rows

MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_ALIASES = {
    "json": "json", "application/json": "json", "application/fhir+json": "json", "fhir+json": "json",
    "ndjson": "ndjson", "application/x-ndjson": "ndjson", "application/ndjson": "ndjson",
    "application/fhir+ndjson": "ndjson",
    "csv": "csv", "text/csv": "csv",
    "parquet": "parquet", "application/vnd.apache.parquet": "parquet", "application/parquet": "parquet",
}


def output_format(value: str | None) -> str | None:
    """json | ndjson | csv | parquet for a format name or media type; None when unknown."""
    if value is None or not value.strip():
        return "json"
    return _ALIASES.get(value.split(";", 1)[0].strip().lower())


class _Sink(io.RawIOBase):
    """A write-only file that hands its bytes over on ``drain()`` (Parquet writes into it)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def limit_rows(batches: Iterable[pa.RecordBatch], limit: int | None) -> Iterator[pa.RecordBatch]:
    if limit is None:
        yield from batches
        return
    left = limit
    for batch in batches:
        if left <= 0:
            return
        if batch.num_rows > left:
            batch = batch.slice(0, left)
        left -= batch.num_rows
        yield batch


def stream_rows(batches: Iterable[pa.RecordBatch], fmt: str, schema: pa.Schema, header: bool = True) -> Iterator[bytes]:
    if fmt == "parquet":
        sink = _Sink()
        with pq.ParquetWriter(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                chunk = sink.drain()
                if chunk:
                    yield chunk
        yield sink.drain()
        return
    if fmt == "json":
        yield b"["
    first = True
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buffer = io.BytesIO()
        if fmt == "csv":
            write_rows([batch], "csv", buffer, schema=schema)
            chunk = buffer.getvalue()
            if not first or not header:
                chunk = chunk.split(b"\n", 1)[1]  # pyarrow writes the header with every call
        else:
            write_rows([batch], "ndjson", buffer, schema=schema)
            chunk = buffer.getvalue()
            if fmt == "json":
                chunk = (b"" if first else b",") + chunk.rstrip(b"\n").replace(b"\n", b",")
        first = False
        yield chunk
    if fmt == "csv" and first and header:
        buffer = io.BytesIO()
        write_rows([], "csv", buffer, schema=schema)
        yield buffer.getvalue()
    if fmt == "json":
        yield b"]"
