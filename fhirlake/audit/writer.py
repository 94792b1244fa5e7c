"""AuditWriter: durable audit records at little cost per request (group commit, two phases).

A single background thread per process owns two private connections. It takes everything queued
while its previous commit was in flight and writes it at once:

- access records (``submit``): one multi-row INSERT, committed durably (synchronous commit). N
  concurrent requests share one round trip and one WAL flush instead of paying N. A request submits
  its record when it starts and waits for it (``PendingAudit.wait``) only before answering, so the
  flush overlaps the request's own work.
- outcomes (``complete``): the HTTP status of an access already durable, one multi-row UPDATE with
  ``synchronous_commit = off``; nobody waits for it. A crash can lose an outcome (the row then says
  "outcome unknown"), never an access.

``record`` is submit-and-wait of a finished record; ``record_in`` and ``complete_in`` write inside
the caller's transaction (audited writes commit with the change).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, update

from fhirlake.audit.record import AuditRecord, clean_desc
from fhirlake.store.schema import audit_event

log = logging.getLogger(__name__)

_COLUMNS = ("recorded", "client_id", "user_id", "patient_id", "action", "interaction", "resource_type",
            "resource_ids", "query_params", "source_ip", "outcome", "outcome_desc")
_TYPES = {"recorded": "timestamptz", "outcome": "int4"}
# ORDER BY ord makes PostgreSQL draw the identity values in input order, so the returned ids, sorted,
# line up with the records (the sort happens below the projection that calls nextval).
_INSERT = (
    f"INSERT INTO audit_event ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM unnest("
    + ", ".join(f"%s::{_TYPES.get(c, 'text')}[]" for c in _COLUMNS)
    + f") WITH ORDINALITY AS u({', '.join(_COLUMNS)}, ord) ORDER BY ord RETURNING id"
)
_UPDATE = (
    "UPDATE audit_event AS a SET outcome = u.outcome, outcome_desc = u.outcome_desc,"
    " resource_ids = coalesce(u.resource_ids, a.resource_ids)"
    " FROM unnest(%s::int8[], %s::int4[], %s::text[], %s::text[]) AS u(id, outcome, outcome_desc, resource_ids)"
    " WHERE a.id = u.id"
)


class AuditError(RuntimeError):
    """The audit record could not be persisted: the access must not be answered."""


class PendingAudit:
    """A queued record; ``wait`` returns once it is committed (or raises AuditError)."""

    __slots__ = ("record", "audit_id", "completed", "_done", "_error")

    def __init__(self, record: AuditRecord) -> None:
        self.record = record
        self.audit_id: int | None = None  # the row's id, once committed
        self.completed = False  # its outcome was handed over (complete / complete_in)
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, audit_id: int | None, error: BaseException | None = None) -> None:
        self.audit_id = audit_id
        self._error = error
        self._done.set()

    def wait(self, timeout: float | None = 30.0) -> int:
        """The committed row's id; raises AuditError if it is not durable."""
        if not self._done.wait(timeout):
            raise AuditError("audit record not persisted in time")
        if self._error is not None or self.audit_id is None:
            raise AuditError("audit record could not be persisted") from self._error
        return self.audit_id


@dataclass(frozen=True, slots=True)
class _Outcome:
    audit_id: int
    status: int
    desc: str | None
    resource_ids: str | None  # None keeps the ids recorded at the start


def record_in(conn: Connection, record: AuditRecord) -> None:
    """Write ``record`` in the caller's transaction (it commits, or rolls back, with the change)."""
    conn.execute(insert(audit_event), [record.row()])


def complete_in(conn: Connection, pending: PendingAudit, status: int, desc: str | None = None,
                resource_ids: Sequence[str] | None = None, timeout: float | None = 30.0) -> None:
    """Set the outcome of a started access inside the caller's transaction (e.g. with its change)."""
    audit_id = pending.wait(timeout)
    values: dict[str, Any] = {"outcome": int(status), "outcome_desc": clean_desc(desc)}
    if resource_ids is not None:
        values["resource_ids"] = " ".join(resource_ids) or None
    conn.execute(update(audit_event).where(audit_event.c.id == audit_id).values(values))
    pending.completed = True


def _columns(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[row[c] for row in rows] for c in _COLUMNS]


class AuditWriter:
    """Group-commit audit writer (see the module docstring).

    ``synchronous=False`` also commits access records with ``synchronous_commit = off``: ``record``
    then returns once PostgreSQL has the rows in its WAL buffers, without waiting for the disk flush.
    An application crash loses nothing; a PostgreSQL or OS crash may lose the last ~0.6 s of records
    (3 x wal_writer_delay). The default, fully durable, is what the server uses.
    """

    def __init__(self, engine: Engine, max_batch: int = 1000, synchronous: bool = True) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[PendingAudit | _Outcome | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._durable: Any = None  # the writer thread's own autocommit connections (psycopg)
        self._relaxed: Any = None
        # counters for tests and benchmarks
        self.batches = 0  # commits of access records
        self.records = 0  # access records committed
        self.outcome_batches = 0
        self.outcomes = 0

    # -- the request side ------------------------------------------------------------------------
    def submit(self, record: AuditRecord) -> PendingAudit:
        """Queue ``record``; call ``wait()`` on the result before answering the request."""
        pending = PendingAudit(record)
        self._ensure_thread()
        self._queue.put(pending)
        return pending

    def record(self, record: AuditRecord, timeout: float | None = 30.0) -> int:
        """Persist ``record``; returns its id once committed, raises AuditError otherwise."""
        return self.submit(record).wait(timeout)

    def complete(self, pending: PendingAudit, status: int, desc: str | None = None,
                 resource_ids: Sequence[str] | None = None) -> None:
        """Queue the outcome of a durable access (after ``pending.wait()``); returns at once."""
        if pending.completed:
            return
        if pending.audit_id is None:
            raise AuditError("the access record is not durable yet: wait() for it first")
        pending.completed = True
        ids = (" ".join(resource_ids) or None) if resource_ids is not None else None
        self._ensure_thread()
        self._queue.put(_Outcome(pending.audit_id, int(status), clean_desc(desc), ids))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)
        self._thread = None

    # -- the writer thread -----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        # a forked worker (gunicorn) inherits no running thread: start one per process
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._durable = self._relaxed = None  # a parent's connections are not ours
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="fhirlake-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._durable = self._drop(self._durable)
            self._relaxed = self._drop(self._relaxed)

    def _loop(self) -> None:
        work = self._queue
        while True:
            first = work.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            accesses = [p for p in batch if isinstance(p, PendingAudit)]
            outcomes = [o for o in batch if isinstance(o, _Outcome)]
            if accesses:  # first: requests are waiting for these
                self._commit(accesses)
            if outcomes:
                self._commit_outcomes(outcomes)
            if stop:
                return

    def _connect(self, synchronous: bool) -> Any:
        fairy = self.engine.raw_connection()
        conn = fairy.driver_connection
        fairy.detach()  # private to this thread for good: never handed back to the pool
        conn.autocommit = True
        if not synchronous:
            conn.execute("SET synchronous_commit = off")
        return conn

    @staticmethod
    def _drop(conn: Any) -> None:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        return None

    def _insert(self, records: list[AuditRecord]) -> list[int]:
        try:
            if self._durable is None or self._durable.closed:
                self._durable = self._connect(self.synchronous)
            ids = [row[0] for row in self._durable.execute(_INSERT, _columns([r.row() for r in records]))]
        except Exception:
            self._durable = self._drop(self._durable)  # start the next attempt on a fresh connection
            raise
        if len(ids) != len(records):
            raise AuditError(f"{len(ids)} audit ids returned for {len(records)} records")
        return sorted(ids)

    def _commit(self, batch: list[PendingAudit]) -> None:
        try:
            ids = self._insert([p.record for p in batch])
        except Exception:  # noqa: BLE001 - one bad record must not sink the others: retry one by one
            for pending in batch:
                try:
                    (audit_id,) = self._insert([pending.record])
                except Exception as exc:  # noqa: BLE001 - the waiter learns the outcome
                    log.error("audit record (%s) failed: %s", pending.record.interaction, type(exc).__name__)
                    pending._finish(None, exc)
                else:
                    self.batches += 1
                    self.records += 1
                    pending._finish(audit_id)
            return
        self.batches += 1
        self.records += len(batch)
        for pending, audit_id in zip(batch, ids, strict=True):
            pending._finish(audit_id)

    def _commit_outcomes(self, outcomes: Iterable[_Outcome]) -> None:
        items = list(outcomes)
        params = [[o.audit_id for o in items], [o.status for o in items], [o.desc for o in items],
                  [o.resource_ids for o in items]]
        for attempt in (1, 2):
            try:
                if self._relaxed is None or self._relaxed.closed:
                    self._relaxed = self._connect(synchronous=False)
                self._relaxed.execute(_UPDATE, params)
            except Exception as exc:  # noqa: BLE001 - the access is durable; its outcome stays "unknown"
                self._relaxed = self._drop(self._relaxed)
                if attempt == 2:
                    log.error("%d audit outcomes not recorded: %s", len(items), type(exc).__name__)
            else:
                self.outcome_batches += 1
                self.outcomes += len(items)
                return
