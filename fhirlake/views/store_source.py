"""Read resources for view refreshes from the store, inside one consistent snapshot.

Watermark (DESIGN.md: sequence order is not commit order): a refresh opens a REPEATABLE READ
snapshot and records it whole, ``pg_current_snapshot()`` (``xmin:xmax:in-progress-txids``), as its
watermark. The next refresh re-evaluates exactly the resources whose versions it can see but the
previous snapshot could not: ``txid >= pg_snapshot_xmin(previous) AND NOT
pg_visible_in_snapshot(txid, previous)``. Every transaction below ``xmin`` had finished when the
previous snapshot was taken, so it was seen then; one still running then (however late it commits,
whatever its sequence numbers) is invisible to that snapshot and is read by the first refresh that
sees it. This is the ``txid >= previous_xmin AND txid < current_xmin`` window made exact: committed
transactions above ``xmin`` are not read twice, which matters when other sessions of the cluster
hold ``xmin`` back. Re-evaluation is an upsert, so reading a change twice would be harmless anyway.

Content is streamed through a server-side cursor in large batches, as raw bytes per line.
"""

from __future__ import annotations

import queue
import threading
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from sqlalchemy import Engine

FETCH_ROWS = 10_000

_CURRENT_OF_TYPE = (
    "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
    " WHERE r.res_type = %s AND NOT r.deleted"
)
# The keys of every resource of the given types that a transaction invisible to the previous
# snapshot changed (small rows, fast: part rewrites start before the contents arrive).
# Everything about a changed resource is read from its versions written since the watermark, not
# from the ``resource`` table: those rows were just written (their pages are in memory), while
# looking each rid up in ``resource`` cost a random read of a large table per change (1M resources,
# 10,000 changes: 88 ms of execution before, 23-28 ms for the whole call after). The newest of them
# is the current version as of this snapshot: the query runs in it.
_CHANGED_KEYS_OF_TYPES = (
    "SELECT DISTINCT ON (c.rid) c.res_type, c.res_id, c.rid, c.version, c.method = 'delete'"
    " FROM resource_version c WHERE c.res_type = ANY(%s)"
    " AND c.txid >= pg_snapshot_xmin(%s::pg_snapshot) AND NOT pg_visible_in_snapshot(c.txid, %s::pg_snapshot)"
    " ORDER BY c.rid, c.version DESC"
)
_CONTENT_OF_VERSIONS = (
    "SELECT v.res_type, v.content FROM resource_version v"
    " JOIN unnest(%s::bigint[], %s::int[]) AS u(rid, version) ON v.rid = u.rid AND v.version = u.version"
)


def lock_key(zone: str, name: str) -> int:
    """Advisory-lock key of one materialized view (one refresh of a view at a time)."""
    value = zlib.crc32(f"fhirlake-view:{zone}:{name}".encode())
    return value - (1 << 32) if value >= (1 << 31) else value


class Snapshot:
    """One read-only REPEATABLE READ transaction and the watermark it stands for."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        # The first statement fixes the transaction's snapshot; this is that snapshot.
        self.watermark: str = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]

    def count_live(self, res_type: str) -> int:
        row = self.conn.execute("SELECT count(*) FROM resource WHERE res_type = %s AND NOT deleted", (res_type,)).fetchone()
        return int(row[0])

    def stream_current(self, res_type: str, fetch_rows: int = FETCH_ROWS) -> Iterator[list[bytes]]:
        """Batches of the current content (one NDJSON line each) of every live resource of a type.

        A helper thread fetches the next batch while the caller evaluates this one (psycopg waits
        on the socket without the GIL), so PostgreSQL and the evaluation overlap on two cores.
        Nothing else may use this snapshot's connection until the iterator is exhausted or closed.
        """
        return _prefetched(self._fetch_current(res_type, fetch_rows))

    def _fetch_current(self, res_type: str, fetch_rows: int) -> Iterator[list[bytes]]:
        with self.conn.cursor(name=f"fl_view_{uuid.uuid4().hex[:8]}") as cursor:
            cursor.itersize = fetch_rows
            cursor.execute(_CURRENT_OF_TYPE, (res_type,))
            while True:
                rows = cursor.fetchmany(fetch_rows)
                if not rows:
                    return
                yield [row[0].encode() for row in rows]

    def changed_keys(self, res_types: list[str], since: str) -> ChangedKeys:
        """The keys of what changed between watermark ``since`` (a snapshot) and this snapshot."""
        found = ChangedKeys({t: [] for t in res_types}, [])
        with self.conn.cursor() as cursor:
            rows = cursor.execute(_CHANGED_KEYS_OF_TYPES, (list(res_types), since, since))
            for res_type, res_id, rid, version, deleted in rows:
                found.removed[res_type].append(res_id)
                if not deleted:
                    found.live.append((rid, version))
        return found

    def live_contents(self, keys: ChangedKeys) -> dict[str, list[bytes]]:
        """The current content of the changed resources that still exist, by type."""
        lines: dict[str, list[bytes]] = {t: [] for t in keys.removed}
        if not keys.live:
            return lines
        with self.conn.cursor(name=f"fl_chg_{uuid.uuid4().hex[:8]}") as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute(_CONTENT_OF_VERSIONS, ([rid for rid, _ in keys.live], [v for _, v in keys.live]))
            for res_type, content in cursor:
                lines[res_type].append(content.encode())
        return lines


@dataclass
class ChangedKeys:
    removed: dict[str, list[str]]  # by type: keys of every changed resource (their old rows go)
    live: list[tuple[int, int]]  # (rid, current version) of the changed resources that still exist


_DONE = object()


def _prefetched(batches: Iterator[list[bytes]], depth: int = 2) -> Iterator[list[bytes]]:
    """Run ``batches`` on a helper thread, ``depth`` batches ahead of the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            slots.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            slots.put(exc)
        finally:
            batches.close()  # type: ignore[attr-defined]

    worker = threading.Thread(target=produce, name="view-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue, then wait for it
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            worker.join(0.05)


@contextmanager
def view_locks(engine: Engine, keys: list[int]) -> Iterator[psycopg.Connection]:
    """A dedicated connection holding the advisory locks of the views being refreshed."""
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection = raw.driver_connection  # type: ignore[assignment]
        conn.rollback()
        conn.autocommit = True
        ordered = sorted(set(keys))  # a fixed order: two refreshes never deadlock
        # One statement (not a round trip per view); unnest yields the keys in array order.
        conn.execute("SELECT count(pg_advisory_lock(k)) FROM unnest(%s::bigint[]) AS t(k)", (ordered,))
        try:
            yield conn
        finally:
            conn.execute("SELECT count(pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS t(k)", (ordered,))
            conn.autocommit = False
    finally:
        raw.close()


@contextmanager
def snapshot(engine: Engine) -> Iterator[Snapshot]:
    """A read-only REPEATABLE READ snapshot (its first statement fixes what it sees)."""
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection = raw.driver_connection  # type: ignore[assignment]
        conn.rollback()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            with conn.transaction():
                yield Snapshot(conn)
        finally:
            conn.isolation_level = None
            conn.read_only = None
    finally:
        raw.close()
