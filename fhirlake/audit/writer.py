"""AuditWriter: durable audit records at little cost per request (group commit, two phases).

A single background thread per process owns two private connections. It takes everything queued
while its previous commit was in flight and writes it at once:

- access records (``submit``): one multi-row INSERT, committed durably (synchronous commit). N
  concurrent requests share one round trip and one WAL flush instead of paying N. A request submits
  its record when it starts and waits for it (``PendingAudit.wait``) only before answering, so the
  flush overlaps the request's own work.
- outcomes (``finish``): when the request ends while its record still waits in the queue (the
  writer was busy committing earlier ones), the outcome is simply written into that record: one
  INSERT, no update. Otherwise the request waits for its record and the outcome follows as an
  UPDATE that nobody waits for: it rides along with the next INSERT (same statement, same commit),
  or, when no access comes within ``OUTCOME_DELAY`` seconds, goes alone with
  ``synchronous_commit = off``. A crash can lose an outcome (the row then says "outcome unknown"),
  never an access.

``record`` is submit-and-wait of a finished record; ``record_in`` and ``complete_in`` write inside
the caller's transaction (audited writes commit with the change).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Engine, insert, update

from fhirlake.audit.record import AuditRecord, clean_desc
from fhirlake.store.schema import audit_event

log = logging.getLogger(__name__)

_COLUMNS = ("recorded", "client_id", "user_id", "patient_id", "action", "interaction", "resource_type",
            "resource_ids", "query_params", "source_ip", "outcome", "outcome_desc")
_TYPES = {"recorded": "timestamptz", "outcome": "int4"}
# Small batches (the common case) as multi-row VALUES, one statement text per size (prepared once
# by psycopg); large ones as arrays, whose per-row cost is lower but whose fixed cost is not.
# Either way PostgreSQL draws the identity values in input order (VALUES rows in list order; the
# arrays sorted by ORDER BY ord below the projection that calls nextval), so the returned ids,
# sorted, line up with the records.
_SMALL_BATCH = 8
_VALUES_ROW = "(" + ", ".join(f"%s::{_TYPES.get(c, 'text')}" for c in _COLUMNS) + ")"
_INSERT_VALUES = {
    n: f"INSERT INTO audit_event ({', '.join(_COLUMNS)}) VALUES {', '.join([_VALUES_ROW] * n)} RETURNING id"
    for n in range(1, _SMALL_BATCH + 1)
}
_INSERT_ARRAYS = (
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
# Least time between the starts of two commits of access records. Every commit costs a WAL flush
# (CPU in PostgreSQL and the kernel, not only waiting): spacing them lets records gather into larger
# batches. Requests do not feel it: they submit their record when they start and wait for it only
# when they are done, by which time the commit has usually happened.
COMMIT_INTERVAL = 0.002
# How long an outcome may wait for an INSERT to ride along with before it is written alone.
OUTCOME_DELAY = 0.1


class AuditError(RuntimeError):
    """The audit record could not be persisted: the access must not be answered."""


class PendingAudit:
    """A queued record; ``wait`` returns once it is committed (or raises AuditError)."""

    __slots__ = ("record", "audit_id", "completed", "taken", "_done", "_error")

    def __init__(self, record: AuditRecord) -> None:
        self.record = record
        self.audit_id: int | None = None  # the row's id, once committed
        self.completed = False  # its outcome was handed over (finish / complete / complete_in)
        self.taken = False  # the writer has taken the record into a batch: it can no longer change
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


def _outcome_params(items: list[_Outcome]) -> list[list[Any]]:
    return [[o.audit_id for o in items], [o.status for o in items], [o.desc for o in items],
            [o.resource_ids for o in items]]


class AuditWriter:
    """Group-commit audit writer (see the module docstring).

    ``synchronous=False`` also commits access records with ``synchronous_commit = off``: ``record``
    then returns once PostgreSQL has the rows in its WAL buffers, without waiting for the disk flush.
    An application crash loses nothing; a PostgreSQL or OS crash may lose the last ~0.6 s of records
    (3 x wal_writer_delay). The default, fully durable, is what the server uses.
    """

    def __init__(self, engine: Engine, max_batch: int = 1000, synchronous: bool = True,
                 commit_interval: float = COMMIT_INTERVAL) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.synchronous = synchronous
        self.commit_interval = commit_interval
        self._lock = threading.Lock()
        self._claim = threading.Lock()  # between the writer taking records and ``finish`` amending them
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

    def finish(self, pending: PendingAudit, status: int, desc: str | None = None,
               resource_ids: Sequence[str] | None = None, timeout: float | None = 30.0) -> int:
        """Phase 2: returns the row's id once the access is durable (AuditError otherwise).

        The outcome goes into the record itself when the writer has not taken it yet (it then
        commits with the access), else into an asynchronous update queued after the wait.
        """
        with self._claim:
            if not pending.taken and not pending.completed:
                changes: dict[str, object] = {"outcome": int(status), "outcome_desc": desc}
                if resource_ids is not None:
                    changes["resource_ids"] = tuple(resource_ids)
                pending.record = replace(pending.record, **changes)
                pending.completed = True
        audit_id = pending.wait(timeout)
        self.complete(pending, status, desc, resource_ids)
        return audit_id

    def complete(self, pending: PendingAudit, status: int, desc: str | None = None,
                 resource_ids: Sequence[str] | None = None) -> None:
        """Queue the outcome of a durable access (after ``pending.wait()``); returns at once."""
        if pending.completed:
            return
        if pending.audit_id is None:
            raise AuditError("the access record is not durable yet: wait() for it first")
        pending.completed = True
        ids = (" ".join(resource_ids) or None) if resource_ids is not None else None
        self._queue_outcome(_Outcome(pending.audit_id, int(status), clean_desc(desc), ids))

    def complete_row(self, audit_id: int, status: int, desc: str | None = None) -> None:
        """Queue the outcome of an access whose row is already committed (a read's own statement
        wrote it); returns at once."""
        self._queue_outcome(_Outcome(audit_id, int(status), clean_desc(desc), None))

    def _queue_outcome(self, outcome: _Outcome) -> None:
        self._ensure_thread()
        self._queue.put(outcome)

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
        outcomes: list[_Outcome] = []  # waiting to ride along with the next INSERT
        deadline = last_commit = 0.0
        while True:
            try:
                first = work.get(timeout=max(0.0, deadline - time.monotonic()) if outcomes else None)
            except queue.Empty:  # no access came in time: write the outcomes alone
                self._commit_outcomes(outcomes)
                outcomes = []
                continue
            pause = last_commit + self.commit_interval - time.monotonic()
            if pause > 0 and first is not None:  # let more records join this commit
                time.sleep(pause)
            batch = [first]
            while first is not None and len(batch) < self.max_batch:
                try:
                    batch.append(work.get_nowait())
                except queue.Empty:
                    break
                if batch[-1] is None:
                    break
            stop = batch[-1] is None
            accesses = [p for p in batch if isinstance(p, PendingAudit)]
            if not outcomes:
                deadline = time.monotonic() + OUTCOME_DELAY
            outcomes += [o for o in batch if isinstance(o, _Outcome)]
            if accesses:  # requests are waiting for these
                with self._claim:  # from here on ``finish`` leaves the records alone
                    for pending in accesses:
                        pending.taken = True
                last_commit = time.monotonic()
                if self._commit(accesses, outcomes):
                    outcomes = []
            if outcomes and (stop or len(outcomes) >= self.max_batch):
                self._commit_outcomes(outcomes)
                outcomes = []
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

    def _insert(self, records: list[AuditRecord], outcomes: list[_Outcome] | None = None) -> list[int]:
        rows = [r.row() for r in records]
        if len(rows) <= _SMALL_BATCH:
            sql, params = _INSERT_VALUES[len(rows)], [row[c] for row in rows for c in _COLUMNS]
        else:
            sql, params = _INSERT_ARRAYS, _columns(rows)
        if outcomes:  # the pending outcomes ride along: one round trip, one commit
            sql, params = f"WITH outcome AS ({_UPDATE}) {sql}", _outcome_params(outcomes) + params
        try:
            if self._durable is None or self._durable.closed:
                self._durable = self._connect(self.synchronous)
            ids = [row[0] for row in self._durable.execute(sql, params)]
        except Exception:
            self._durable = self._drop(self._durable)  # start the next attempt on a fresh connection
            raise
        if len(ids) != len(records):
            raise AuditError(f"{len(ids)} audit ids returned for {len(records)} records")
        return sorted(ids)

    def _commit(self, batch: list[PendingAudit], outcomes: list[_Outcome]) -> bool:
        """Insert the batch's records, with ``outcomes`` when there are some; True if those went too."""
        try:
            ids = self._insert([p.record for p in batch], outcomes)
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
            return False
        self.batches += 1
        self.records += len(batch)
        if outcomes:
            self.outcome_batches += 1
            self.outcomes += len(outcomes)
        for pending, audit_id in zip(batch, ids, strict=True):
            pending._finish(audit_id)
        return True

    def _commit_outcomes(self, outcomes: Iterable[_Outcome]) -> None:
        items = list(outcomes)
        params = _outcome_params(items)
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
