"""evaluate_ndjson(): raw NDJSON lines in, Arrow record batches out.

The vectorized back end (``fast.py``) runs when the view is inside its subset; otherwise each line is
parsed with decimals kept exact (``decimal.Decimal``) and rows come from the closures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from .compiler import CompiledView

class ExactDecimal(Decimal):
    """A Decimal that prints as the text it was parsed from ("1e2" stays "1e2", not "1E+2")."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> ExactDecimal:
        value = super().__new__(cls, text)
        value.text = text
        return value

    def __str__(self) -> str:
        return self.text


_decoder = json.JSONDecoder(parse_float=ExactDecimal)


def parse_line(line: bytes | str) -> dict:
    """One NDJSON line -> dict, decimals as exact Decimals (their text is what the view writes)."""
    text = line.decode("utf-8-sig") if isinstance(line, (bytes, bytearray, memoryview)) else line
    return _decoder.decode(text)


def _resources(lines: Iterable[bytes]) -> Iterator[dict]:
    for line in lines:
        if line.strip():
            yield parse_line(line)


def evaluate_lines_with_closures(view: CompiledView, lines: Iterable[bytes], batch_size: int) -> Iterator[pa.RecordBatch]:
    return view.to_arrow(_resources(lines), batch_size=batch_size)


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        if line.strip():
            chunk.append(line)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def evaluate_lines(view: CompiledView, lines: Iterable[bytes], batch_size: int) -> Iterator[pa.RecordBatch]:
    from .fast import Fallback, evaluate_batch

    fast = view.fast_plan()
    if fast is None:
        yield from evaluate_lines_with_closures(view, lines, batch_size)
        return
    for chunk in _chunks(lines, batch_size):
        try:
            batch = evaluate_batch(fast, b"\n".join(chunk))
        except Fallback:
            yield from evaluate_lines_with_closures(view, chunk, batch_size)
            continue
        if batch.num_rows:
            yield batch
