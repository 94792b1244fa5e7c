"""One NDJSON line to one checked write: parse, refuse NUL, check it is a resource with an id,
validate; and the same for a whole chunk of lines in a separate parsing process.

A large import parses in a second process (``ParsePool``): parsing, validation and index
extraction are most of the import's Python work, and in one process they share a single core
(the GIL) with the threads that write. The parsing process sends back, per line, the resource's
type and id and its index rows already in COPY text (``fhirlake.search.rows.CopyText``); the
importer parses the line again (orjson, a few µs) instead of receiving the resource pickled, which
costs more.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import orjson

from fhirlake.fhir import structure
from fhirlake.fhir.outcome import FhirError
from fhirlake.services.resource_body import check_id, check_no_nul, validate_or_raise
from fhirlake.store.resources import WriteOp


class BadLine(Exception):
    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def may_hold_conditional_references(line: bytes) -> bool:
    """False when the line certainly has none (no '?' anywhere, not even escaped as \\u003f)."""
    return b"?" in line or b"\\u" in line


def parse_line(line: bytes) -> WriteOp:
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc}", "structure") from exc
    try:
        check_no_nul(line, resource)
    except FhirError as exc:
        raise BadLine(f"{exc.diagnostics} at {exc.issues[0].expression[0]}", "value") from exc
    return op_for(resource)


def op_for(resource: object) -> WriteOp:
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise BadLine("not a FHIR resource (no resourceType)", "structure")
    res_type = resource["resourceType"]
    if not structure.is_resource_type(res_type):
        raise BadLine(f"unknown resource type '{res_type}'", "not-supported")
    res_id = resource.get("id")
    if not isinstance(res_id, str):
        raise BadLine(f"{res_type} has no id: bulk import keeps the ids of the source", "required")
    try:
        check_id(res_id)
        validate_or_raise(resource, res_type)
    except FhirError as exc:
        raise BadLine(f"{res_type}/{res_id}: {exc.diagnostics}", exc.issues[0].code) from exc
    return WriteOp(res_type, res_id, resource)


def parse_for_writing(line: bytes, extract: bool, prepare: Callable[[str, dict], Any]) -> WriteOp:
    """``parse_line``, with the index rows made by ``prepare`` when ``extract`` is set and the line
    has no conditional reference (its content is then final; a rewritten reference would change
    the rows)."""
    op = parse_line(line)
    if extract and not may_hold_conditional_references(line):
        op.index_rows = prepare(op.res_type, op.resource)  # type: ignore[arg-type]
    return op


def parse_chunk(lines: list[bytes], extract: bool) -> list[tuple]:
    """In the parsing process: per line (type, id, CopyText or None), or (None, message, code)."""
    from fhirlake.gc_pause import gc_paused
    from fhirlake.search.index import prepare_copy_text

    out: list[tuple] = []
    with gc_paused():
        for line in lines:
            try:
                op = parse_for_writing(line, extract, prepare_copy_text)
            except BadLine as exc:
                out.append((None, str(exc), exc.code))
                continue
            out.append((op.res_type, op.res_id, op.index_rows))
    return out


# A forked parsing process starts at once with this process's warm caches; a spawned one (see
# below) first imports fhirlake and compiles its validators, about a second of work, so it pays
# off only on larger inputs.
FORK_MIN_BYTES = 2 << 20
SPAWN_MIN_BYTES = 32 << 20


def start_method() -> str:
    """fork only while this process has a single thread (the CLI): forking a threaded process (a
    server's job worker) can copy a lock some other thread holds; a fresh interpreter is safe."""
    return "fork" if threading.active_count() == 1 else "spawn"


def worth_a_process(ndjson_bytes: int) -> bool:
    if (os.cpu_count() or 1) < 2:
        return False
    return ndjson_bytes >= (FORK_MIN_BYTES if start_method() == "fork" else SPAWN_MIN_BYTES)


class ParsePool:
    """One parsing process for the length of an import."""

    def __init__(self) -> None:
        self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(start_method()))

    def submit(self, lines: list[bytes], extract: bool) -> Future:
        return self._executor.submit(parse_chunk, lines, extract)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
