"""AuditWriter: durable audit records at little cost per request (group commit).

``record`` returns only once the row is committed. A single background thread takes every record
queued while the previous commit was in flight and writes them with one INSERT and one COMMIT, so
N concurrent requests share one round trip and one WAL flush instead of paying N.
``record_in`` writes inside the caller's transaction (audited writes commit with the change).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, insert, text

from fhirlake.audit.record import AuditRecord
from fhirlake.store.schema import audit_event

log = logging.getLogger(__name__)


class AuditError(RuntimeError):
    """The audit record could not be persisted: the access must not be answered."""


class PendingAudit:
    """A queued record; ``wait`` returns once it is committed (or raises AuditError)."""

    __slots__ = ("record", "_done", "_error")

    def __init__(self, record: AuditRecord) -> None:
        self.record = record
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    def wait(self, timeout: float | None = 30.0) -> None:
        if not self._done.wait(timeout):
            raise AuditError("audit record not persisted in time")
        if self._error is not None:
            raise AuditError("audit record could not be persisted") from self._error


def record_in(conn: Connection, record: AuditRecord) -> None:
    """Write ``record`` in the caller's transaction (it commits, or rolls back, with the change)."""
    conn.execute(insert(audit_event), [record.row()])


def write_batch(conn: Connection, records: Iterable[AuditRecord]) -> None:
    """One multi-row INSERT: on an autocommit connection, one round trip and one commit."""
    rows = [r.row() for r in records]
    if rows:
        conn.execute(insert(audit_event).values(rows))


class AuditWriter:
    """Group-commit audit writer.

    ``synchronous=False`` commits with ``synchronous_commit = off``: ``record`` then returns once
    PostgreSQL has the rows in its WAL buffers, without waiting for the disk flush. An application
    crash loses nothing; a PostgreSQL or OS crash may lose the last ~0.6 s of audit records
    (3 x wal_writer_delay). The default is fully durable.
    """

    def __init__(self, engine: Engine, max_batch: int = 1000, synchronous: bool = True) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[PendingAudit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._conn: Connection | None = None  # the writer thread's own autocommit connection
        self.batches = 0  # commits made (for tests and benchmarks)
        self.records = 0

    def _ensure_thread(self) -> None:
        # a forked worker (gunicorn) inherits no running thread: start one per process
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="fhirlake-audit", daemon=True)
                self._thread.start()

    def submit(self, record: AuditRecord) -> PendingAudit:
        """Queue ``record``; call ``wait()`` on the result before answering the request."""
        pending = PendingAudit(record)
        self._ensure_thread()
        self._queue.put(pending)
        return pending

    def record(self, record: AuditRecord, timeout: float | None = 30.0) -> None:
        """Persist ``record``; returns once it is committed, raises AuditError otherwise."""
        self.submit(record).wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
            self._commit(batch)
            if stop:
                return

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if not self.synchronous:
                conn.execute(text("SET synchronous_commit = off"))
            self._conn = conn
        return self._conn

    def _write(self, records: list[AuditRecord]) -> None:
        try:
            write_batch(self._connection(), records)
        except Exception:
            if self._conn is not None:  # start the next attempt on a fresh connection
                self._conn.close()
                self._conn = None
            raise

    def _commit(self, batch: list[PendingAudit]) -> None:
        try:
            self._write([p.record for p in batch])
        except Exception:  # noqa: BLE001 - one bad record must not sink the others: retry one by one
            for pending in batch:
                try:
                    self._write([pending.record])
                except Exception as exc:  # noqa: BLE001 - the waiter learns the outcome
                    log.error("audit record (%s) failed: %s", pending.record.interaction, type(exc).__name__)
                    pending._finish(exc)
                else:
                    self.records += 1
                    pending._finish()
            return
        self.batches += 1
        self.records += len(batch)
        for pending in batch:
            pending._finish()
