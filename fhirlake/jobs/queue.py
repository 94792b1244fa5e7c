"""Job rows: enqueue, claim, heartbeat, finish, cancel. Every state change is one SQL statement.

Ownership rule: a worker may change a running job only while ``worker_id`` is its own id and the
status is still ``running``. When a worker is presumed dead (no heartbeat for ``stale_seconds``)
another worker claims the row, which changes ``worker_id``; the old worker's next heartbeat then
matches no row, it learns it lost the job and stops. So two workers never run one job at once for
longer than one heartbeat interval, and only the current owner can publish a result.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, text

ACTIVE = ("queued", "running")
_COLUMNS = (
    "id, kind, status, params, progress, result, error, owner, worker_id, attempts, cancel_requested,"
    " created_at, started_at, heartbeat_at, finished_at, expires_at, last_polled_at"
)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    status: str
    params: dict
    progress: dict | None
    result: dict | None
    error: str | None
    owner: str | None
    worker_id: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    last_polled_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        values = list(row)
        values[0] = str(values[0])
        return cls(*values)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def enqueue(conn: Connection, kind: str, params: dict, owner: str | None = None, job_id: str | None = None) -> str:
    """Insert a queued job inside the caller's transaction and wake idle workers."""
    job_id = job_id or str(uuid.uuid4())
    conn.execute(
        text("INSERT INTO job (id, kind, status, params, owner) VALUES (:id, :kind, 'queued', CAST(:params AS jsonb), :owner)"),
        {"id": job_id, "kind": kind, "params": _json(params), "owner": owner},
    )
    conn.execute(text("SELECT pg_notify('fhirlake_job', :kind)"), {"kind": kind})
    return job_id


def get(conn: Connection, job_id: str) -> Job | None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        return None
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM job WHERE id = :id"), {"id": job_id}).first()
    return Job.from_row(row) if row else None


def count_active(conn: Connection, kind: str) -> int:
    return conn.execute(
        text("SELECT count(*) FROM job WHERE kind = :k AND status IN ('queued', 'running') AND NOT cancel_requested"),
        {"k": kind},
    ).scalar_one()


def claim(engine: Engine, worker_id: str, kinds: list[str] | None, stale_seconds: float, max_attempts: int) -> Job | None:
    """Take the oldest queued job, or a running one whose worker stopped heartbeating."""
    kind_test = "AND kind = ANY(:kinds)" if kinds else ""
    with engine.begin() as conn:
        # Jobs that keep killing their workers are failed instead of being retried forever.
        conn.execute(
            text(
                "UPDATE job SET status = 'failed', finished_at = now(), worker_id = NULL,"
                " error = 'the job stopped its worker ' || attempts || ' times; given up'"
                " WHERE status = 'running' AND attempts >= :max"
                " AND heartbeat_at < now() - make_interval(secs => :stale)"
            ),
            {"max": max_attempts, "stale": stale_seconds},
        )
        row = conn.execute(
            text(
                f"UPDATE job SET status = 'running', worker_id = :w, attempts = attempts + 1,"
                f" started_at = coalesce(started_at, now()), heartbeat_at = now(), progress = NULL"
                f" WHERE id = (SELECT id FROM job WHERE NOT cancel_requested {kind_test} AND"
                f" (status = 'queued' OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => :stale)))"
                f" ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)"
                f" RETURNING {_COLUMNS}"
            ),
            {"w": worker_id, "kinds": kinds, "stale": stale_seconds},
        ).first()
    return Job.from_row(row) if row else None


def heartbeat(engine: Engine, job_id: str, worker_id: str, progress: dict | None) -> bool:
    """Record liveness (and progress); False when this worker no longer owns a live job."""
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE job SET heartbeat_at = now(), progress = coalesce(CAST(:p AS jsonb), progress)"
                " WHERE id = :id AND worker_id = :w AND status = 'running' AND NOT cancel_requested RETURNING 1"
            ),
            {"id": job_id, "w": worker_id, "p": _json(progress) if progress is not None else None},
        ).first()
    return row is not None


def complete(engine: Engine, job_id: str, worker_id: str, result: dict, expires_at: datetime | None) -> bool:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE job SET status = 'completed', result = CAST(:r AS jsonb), finished_at = now(),"
                " expires_at = :exp, heartbeat_at = now()"
                " WHERE id = :id AND worker_id = :w AND status = 'running' AND NOT cancel_requested RETURNING 1"
            ),
            {"id": job_id, "w": worker_id, "r": _json(result), "exp": expires_at},
        ).first()
    return row is not None


def fail(engine: Engine, job_id: str, worker_id: str, error: str, result: dict | None = None) -> bool:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE job SET status = 'failed', error = :e, result = coalesce(CAST(:r AS jsonb), result),"
                " finished_at = now() WHERE id = :id AND worker_id = :w AND status = 'running' RETURNING 1"
            ),
            {"id": job_id, "w": worker_id, "e": error, "r": _json(result) if result is not None else None},
        ).first()
    return row is not None


def release(engine: Engine, job_id: str, worker_id: str) -> None:
    """Hand a running job back to the queue (graceful worker shutdown): another worker restarts it."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE job SET status = 'queued', worker_id = NULL WHERE id = :id AND worker_id = :w AND status = 'running'"),
            {"id": job_id, "w": worker_id},
        )


def request_cancel(conn: Connection, job_id: str) -> bool:
    """Cancel a job: from now on it is gone for its client; a running worker notices and cleans up."""
    row = conn.execute(
        text(
            "UPDATE job SET cancel_requested = true,"
            " status = CASE WHEN status IN ('queued', 'running') THEN 'cancelled' ELSE status END,"
            " finished_at = coalesce(finished_at, now()) WHERE id = :id AND NOT cancel_requested RETURNING 1"
        ),
        {"id": job_id},
    ).first()
    return row is not None


def touch_poll(conn: Connection, job_id: str) -> datetime | None:
    """Record a status poll and return the previous poll's time (for the too-fast check)."""
    return conn.execute(
        text(
            "UPDATE job j SET last_polled_at = clock_timestamp() FROM (SELECT id, last_polled_at FROM job"
            " WHERE id = :id FOR UPDATE) old WHERE j.id = old.id RETURNING old.last_polled_at"
        ),
        {"id": job_id},
    ).scalar()
