"""Write path: extract search values from resources into the typed index tables.

Called by the store inside the transaction of the resource write. Per resource type the
parameters' expressions are compiled once into extractors (fhirlake.search.extract).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import orjson
import psycopg
from psycopg.adapt import PyFormat
from sqlalchemy import Connection, Engine, text

from fhirlake.search import rows as R
from fhirlake.search.extract import compile_extractor, compile_items, compile_triples, top_level_keys
from fhirlake.search.registry import RESOURCE_COLUMN_PARAMS, SearchParam, registry

Indexer = Callable[[R.Rows, int, dict], None]

TABLE_COLUMNS = {
    "token": "rid, pid, grp, system, code",
    "string": "rid, pid, grp, norm, exact",
    "date": "rid, pid, grp, lo, hi",
    "number": "rid, pid, grp, system, code, unit, lo, hi",
    "reference": "rid, pid, target_type, target_id, url",
    "uri": "rid, pid, grp, uri",
}


def _value_writer(param_type: str, param: SearchParam, pid: int,
                  side_rows: bool = True) -> Callable[[R.Rows, int, int, Any, str], None] | None:
    """``side_rows``: also write the rows behind ``:text``, ``:of-type`` and ``:identifier``.
    Composite components skip them: no search reads those modifiers through a composite."""
    if side_rows:
        text_pid, of_type_pid, identifier_pid = (param.sub_pid("text"), param.sub_pid("of-type"),
                                                 param.sub_pid("identifier"))
    else:
        text_pid = of_type_pid = identifier_pid = None
    if param_type == "token":
        return lambda rows, rid, grp, v, c: R.token_rows(rows, rid, pid, grp, v, c, text_pid, of_type_pid)
    if param_type == "string":
        return lambda rows, rid, grp, v, c: R.string_rows(rows, rid, pid, grp, v, c)
    if param_type == "date":
        return lambda rows, rid, grp, v, c: R.date_rows(rows, rid, pid, grp, v, c)
    if param_type in ("number", "quantity"):
        return lambda rows, rid, grp, v, c: R.number_rows(rows, rid, pid, grp, v, c)
    if param_type == "reference":
        return lambda rows, rid, grp, v, c: R.reference_rows(rows, rid, pid, v, c, identifier_pid)
    if param_type == "uri":
        return lambda rows, rid, grp, v, c: R.uri_rows(rows, rid, pid, grp, v)
    return None


def _simple_indexer(param: SearchParam) -> Indexer | None:
    assert param.expression is not None
    writer = _value_writer(param.type, param, param.pid)
    if writer is None:
        return None
    triples = compile_triples(param.expression, param.res_type)
    if triples is not None:  # the common case: no repacking of (value, code) pairs
        direct = _direct_indexer(param, triples)
        if direct is not None:
            return direct

        def index_items(rows: R.Rows, rid: int, resource: dict) -> None:
            for value, code, _parent in triples(resource):
                writer(rows, rid, 0, value, code)

        return index_items
    extract = compile_extractor(param.expression, param.res_type)

    def index(rows: R.Rows, rid: int, resource: dict) -> None:
        for value, code in extract(resource):
            writer(rows, rid, 0, value, code)

    return index


def _direct_indexer(param: SearchParam, triples: Callable[[dict], list]) -> Indexer | None:
    """The same rows as ``_value_writer``'s writers, called without the lambda in between:
    token and reference values are the bulk of all index rows."""
    pid = param.pid
    if param.type == "token":
        text_pid, of_type_pid = param.sub_pid("text"), param.sub_pid("of-type")
        token_rows = R.token_rows

        def index_tokens(rows: R.Rows, rid: int, resource: dict) -> None:
            for value, code, _parent in triples(resource):
                token_rows(rows, rid, pid, 0, value, code, text_pid, of_type_pid)

        return index_tokens
    if param.type == "reference":
        identifier_pid = param.sub_pid("identifier")
        reference_rows = R.reference_rows

        def index_references(rows: R.Rows, rid: int, resource: dict) -> None:
            for value, code, _parent in triples(resource):
                reference_rows(rows, rid, pid, value, code, identifier_pid)

        return index_references
    if param.type == "date":
        date_rows = R.date_rows

        def index_dates(rows: R.Rows, rid: int, resource: dict) -> None:
            for value, code, _parent in triples(resource):
                date_rows(rows, rid, pid, 0, value, code)

        return index_dates
    return None


def _composite_indexer(param: SearchParam) -> Indexer | None:
    """Each element selected by the composite's expression gets its own grp number; component i
    is indexed under pid ``code:c<i>`` so a query can join the components on (rid, grp)."""
    assert param.expression is not None
    elements = _node_runner(param.expression, param.res_type)
    parts = []
    for i, component in enumerate(param.components):
        writer = _value_writer(component.type, param, param.component_pid(i), side_rows=False)
        if writer is None:
            return None
        if i in param.owned_components:  # rows shared with another composite are written by it
            parts.append((component.expression, writer))
    if not parts:
        return None
    compiled: dict[str, list] = {}

    def index(rows: R.Rows, rid: int, resource: dict) -> None:
        grp = 0
        for node, _code, parent in elements(resource):
            grp += 1
            runners = compiled.get(parent)
            if runners is None:
                runners = compiled[parent] = [_component_runner(e, parent, param.res_type) for e, _w in parts]
            for (run, from_root), (_e, writer) in zip(runners, parts, strict=True):
                for value, code, _p in run(resource if from_root else node):
                    writer(rows, rid, grp, value, code)

    return index


_RESOURCE_VAR = "%resource."


def _component_runner(expression: str, parent: str, res_type: str) -> tuple:
    """A composite component is relative to the selected element, or to the resource when it
    starts with %resource (MolecularSequence's coordinates)."""
    if expression.startswith(_RESOURCE_VAR):
        return _node_runner(f"{res_type}.{expression[len(_RESOURCE_VAR):]}", res_type), True
    return _node_runner(expression, parent), False


def _node_runner(expression: str, root: str) -> Callable[[Any], list]:
    """The items of ``expression`` evaluated on one node of type ``root``."""
    fast = compile_triples(expression, root)
    if fast is not None:
        return fast
    run = compile_items(expression, root)
    return lambda node: run([(node, root, root)])


@cache
def type_indexer(res_type: str) -> Indexer:
    # (top-level keys, indexer): most parameters of a type read elements a given resource lacks;
    # checking the first key is far cheaper than running the compiled path.
    indexers: list[tuple[tuple[str, ...] | None, Indexer]] = []
    for param in registry().params(res_type).values():
        if param.code in RESOURCE_COLUMN_PARAMS or not param.expression:
            continue
        built = _composite_indexer(param) if param.type == "composite" else _simple_indexer(param)
        if built is not None:
            keys = top_level_keys(param.expression, res_type)
            indexers.append((tuple(sorted(keys)) if keys is not None else None, built))

    # Dispatch on the resource's own keys (a dozen) rather than testing every parameter's keys
    # (dozens); the parameters then run in registry order, as if each had been tested in turn.
    always = [i for i, (keys, _ix) in enumerate(indexers) if keys is None]
    by_key: dict[str, list[int]] = {}
    for i, (keys, _ix) in enumerate(indexers):
        for key in keys or ():
            by_key.setdefault(key, []).append(i)
    run_order = [ix for _keys, ix in indexers]

    def index(rows: R.Rows, rid: int, resource: dict) -> None:
        chosen = set(always)
        for key in resource:
            wanted = by_key.get(key)
            if wanted is not None:
                chosen.update(wanted)
        for i in sorted(chosen):
            run_order[i](rows, rid, resource)

    return index


# The rid in rows prepared before the resource has one; replaced when the rows are written.
PLACEHOLDER_RID = 0


def prepare_rows(res_type: str, resource: dict) -> R.Rows:
    """The index rows of one resource, extracted before its rid is known (see ``index_resources``).

    Lets a loader extract on the thread that parses while another thread writes: extraction is
    the larger part of the Python work of a write."""
    rows = R.Rows()
    type_indexer(res_type)(rows, PLACEHOLDER_RID, resource)
    return _without_duplicates(rows)


def prepare_copy_text(res_type: str, resource: dict) -> R.CopyText:
    """``prepare_rows``, formatted as COPY text (for a parsing process: see ``R.CopyText``)."""
    format_row = _copy_row_formatter()
    rows = prepare_rows(res_type, resource)
    transformer = _transformer()
    blocks = {}
    for table in TABLE_COLUMNS:
        data = getattr(rows, table)
        if data:
            block = bytearray()
            for row in data:
                format_row(row, transformer, block)
            blocks[table] = bytes(block)
    return R.CopyText(blocks)


@cache
def _copy_row_formatter() -> Callable[[Sequence[Any], Any, bytearray], Any]:
    """psycopg's own formatter of COPY text rows (C, what ``cursor.copy`` uses) when this psycopg
    still has it where we look (a private module), else ``format_copy_row`` (same output, slower)."""
    try:
        from psycopg._copy_base import format_row_text
    except ImportError:
        return format_copy_row
    return format_row_text


# COPY text format: these bytes inside a value are written as backslash escapes (PostgreSQL docs, COPY)
_COPY_ESCAPES = {ord("\\"): b"\\\\", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r"}
_COPY_SPECIAL = re.compile(rb"[\\\x08-\x0d]")  # the keys above: one scan in C per value


def format_copy_row(row: Sequence[Any], transformer: Any, out: bytearray) -> bytearray:
    """Append one row in COPY text format to ``out``: values dumped by psycopg's public text
    dumpers, tab-separated, NULL as ``\\N``, special bytes escaped, a newline at the end."""
    for index, value in enumerate(transformer.dump_sequence(row, [PyFormat.TEXT] * len(row))):
        if index:
            out += b"\t"
        if value is None:
            out += b"\\N"
            continue
        out += _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m[0][0]], value)
    out += b"\n"
    return out


_local = threading.local()


def _transformer():  # noqa: ANN202 - psycopg.adapt.Transformer: default adapters, one per thread
    transformer = getattr(_local, "transformer", None)
    if transformer is None:
        from psycopg.adapt import Transformer

        transformer = _local.transformer = Transformer()
    return transformer


def extract_rows(items: Sequence[tuple[int, str, dict]]) -> R.Rows:
    rows = R.Rows()
    for rid, res_type, resource in items:
        type_indexer(res_type)(rows, rid, resource)
    return _without_duplicates(rows)


def _without_duplicates(rows: R.Rows) -> R.Rows:
    # A CodeableConcept's text often repeats its codings' display: drop exact duplicates.
    rows.string = list(dict.fromkeys(rows.string))
    rows.token = list(dict.fromkeys(rows.token))
    return rows


_DELETE_ALL = (
    "WITH a AS (DELETE FROM sp_token WHERE rid = ANY(%(r)s)),"
    " b AS (DELETE FROM sp_string WHERE rid = ANY(%(r)s)),"
    " c AS (DELETE FROM sp_date WHERE rid = ANY(%(r)s)),"
    " d AS (DELETE FROM sp_number WHERE rid = ANY(%(r)s)),"
    " e AS (DELETE FROM sp_reference WHERE rid = ANY(%(r)s))"
    " DELETE FROM sp_uri WHERE rid = ANY(%(r)s)"
)


def remove_index(conn: Connection, rids: Sequence[int]) -> None:
    """Drop the index rows of these resources (on delete)."""
    if rids:
        conn.exec_driver_sql(_DELETE_ALL, {"r": list(rids)})


def write_rows(conn: Connection, rows: R.Rows, cursor: psycopg.Cursor | None = None,
               prepared: Sequence[tuple[int, R.Rows | R.CopyText]] = ()) -> None:
    """COPY ``rows``, and the ``prepared`` rows of each (rid, rows) with that rid filled in."""
    if cursor is None:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            _copy_rows(cur, rows, prepared)
    else:
        _copy_rows(cursor, rows, prepared)


def _copy_rows(cur: psycopg.Cursor, rows: R.Rows, prepared: Sequence[tuple[int, R.Rows | R.CopyText]]) -> None:
    for table, columns in TABLE_COLUMNS.items():
        data = getattr(rows, table)
        if not data and not any(_has_rows(more, table) for _rid, more in prepared):
            continue
        with cur.copy(f"COPY sp_{table} ({columns}) FROM STDIN") as copy:
            write_row = copy.write_row
            for row in data:
                write_row(row)
            for rid, more in prepared:
                if isinstance(more, R.CopyText):
                    block = more.with_rid(table, str(rid).encode())
                    if block:
                        copy.write(block)
                else:
                    for row in getattr(more, table):
                        write_row((rid, *row[1:]))


def _has_rows(rows: R.Rows | R.CopyText, table: str) -> bool:
    return rows.has(table) if isinstance(rows, R.CopyText) else bool(getattr(rows, table))


def index_resources(conn: Connection, items: Sequence[tuple[int, str, dict]], replace: bool = True,
                    cursor: psycopg.Cursor | None = None,
                    prepared: Sequence[tuple[int, R.Rows | R.CopyText]] = ()) -> None:
    """(Re)index resources: replaces all index rows of these rids. ``replace=False`` skips the
    delete for rids known to be new (bulk create). ``cursor``: the caller's cursor, reused.
    ``prepared``: (rid, rows from ``prepare_rows``) of more resources, indexed alike."""
    if not items and not prepared:
        return
    rows = extract_rows(items)
    if replace:
        remove_index(conn, [rid for rid, _t, _r in items] + [rid for rid, _rows in prepared])
    write_rows(conn, rows, cursor, prepared)


REINDEX_STATE = "all"


def reindex(engine: Engine, progress_callback: Callable[[int, int], None] | None = None, batch_size: int = 1000,
            restart: bool = False) -> int:
    """Rebuild the index rows of every live resource, batch by batch, one transaction per batch.
    Resumable: the last rid done is remembered in search_reindex_state. Returns rows reindexed."""
    with engine.begin() as conn:
        if restart:
            conn.execute(text("DELETE FROM search_reindex_state WHERE name = :n"), {"n": REINDEX_STATE})
        last = conn.execute(text("SELECT last_rid FROM search_reindex_state WHERE name = :n"), {"n": REINDEX_STATE}).scalar()
        total = conn.execute(text("SELECT count(*) FROM resource WHERE NOT deleted")).scalar() or 0
    last = last or 0
    done = 0
    while True:
        with engine.begin() as conn:
            batch = conn.exec_driver_sql(
                "SELECT r.rid, r.res_type, v.content FROM resource r"
                " JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
                " WHERE r.rid > %s AND NOT r.deleted ORDER BY r.rid LIMIT %s",
                (last, batch_size),
            ).all()
            if not batch:
                conn.execute(text("DELETE FROM search_reindex_state WHERE name = :n"), {"n": REINDEX_STATE})
                break
            index_resources(conn, [(rid, t, orjson.loads(c)) for rid, t, c in batch])
            last = batch[-1][0]
            conn.exec_driver_sql(
                "INSERT INTO search_reindex_state (name, last_rid) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET last_rid = EXCLUDED.last_rid, updated_at = now()",
                (REINDEX_STATE, last),
            )
        done += len(batch)
        if progress_callback:
            progress_callback(done, total)
    return done
