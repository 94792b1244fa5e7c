"""The worker loop: claim a job, run its handler while a side thread heartbeats, record the outcome.

The handler runs on the worker's thread; the heartbeat thread owns its own database connection so
that a long COPY inside the handler's snapshot transaction never delays a heartbeat. The handler
reports progress with ``ctx.progress(...)`` (kept in memory, written by the next heartbeat) and
calls ``ctx.check()`` between units of work: it raises :class:`JobStopped` once the job was
cancelled or taken over by another worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from fhirlake.config import Settings
from fhirlake.jobs import queue
from fhirlake.jobs.registry import handler_for, load_handlers
from fhirlake.jobs.timing import JobTiming

log = logging.getLogger("fhirlake.jobs.worker")


class JobStopped(Exception):
    """The job was cancelled, or this worker lost it to another: stop without publishing."""


class JobFailed(Exception):
    """A handler's clean failure: the message is shown to the client as the job's error."""

    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class JobContext:
    job: queue.Job
    engine: Engine
    settings: Settings
    worker_id: str
    timing: JobTiming
    _progress: dict[str, Any] | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def progress(self, **values: Any) -> None:
        self._progress = {**(self._progress or {}), **values}

    def check(self) -> None:
        if self._stopped.is_set():
            raise JobStopped(self.job.id)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()


def _heartbeat_loop(ctx: JobContext, done: threading.Event) -> None:
    while not done.wait(ctx.timing.heartbeat_seconds):
        try:
            alive = queue.heartbeat(ctx.engine, ctx.job.id, ctx.worker_id, ctx._progress)
        except Exception:  # a database hiccup: try again next beat; staleness decides
            log.warning("heartbeat of job %s failed", ctx.job.id, exc_info=True)
            continue
        if not alive:
            ctx._stopped.set()
            return


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_one(engine: Engine, settings: Settings, worker_id: str, kinds: list[str] | None = None,
            timing: JobTiming | None = None, running: dict[str, str] | None = None) -> queue.Job | None:
    """Claim and run at most one job; return it (None when the queue had nothing claimable).

    ``running`` (worker id -> job id) lets the owner of the loop hand jobs back on shutdown.
    """
    timing = timing or JobTiming.from_env()
    job = queue.claim(engine, worker_id, kinds, timing.stale_seconds, timing.max_attempts)
    if job is None:
        return None
    if running is not None:
        running[worker_id] = job.id
    handler = handler_for(job.kind)
    if handler is None:
        queue.fail(engine, job.id, worker_id, f"no handler for job kind '{job.kind}' on this worker")
        return job
    ctx = JobContext(job, engine, settings, worker_id, timing)
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(ctx, done), name=f"heartbeat-{job.id[:8]}", daemon=True)
    beat.start()
    log.info("job %s (%s) started, attempt %d", job.id, job.kind, job.attempts)
    try:
        result = handler(ctx)
        done.set()
        beat.join()
        # Output (and the job row) is kept for the retention period, then removed by retention.
        expires = datetime.now(UTC) + timedelta(hours=settings.export_retention_hours)
        if not queue.complete(engine, job.id, worker_id, result, expires):
            log.info("job %s finished but was cancelled or taken over meanwhile", job.id)
        else:
            log.info("job %s completed", job.id)
    except JobStopped:
        log.info("job %s stopped (cancelled or taken over)", job.id)
    except JobFailed as exc:
        queue.fail(engine, job.id, worker_id, str(exc), exc.result)
        log.info("job %s failed: %s", job.id, exc)
    except Exception as exc:  # noqa: BLE001 - any bug fails the job, never the worker
        log.error("job %s crashed: %s", job.id, traceback.format_exc(limit=5))
        queue.fail(engine, job.id, worker_id, f"internal error ({type(exc).__name__})")
    finally:
        done.set()
        if running is not None:
            running.pop(worker_id, None)
    return job


class Worker:
    """A long-running process loop; ``stop()`` (or SIGTERM) hands the current job back to the queue."""

    def __init__(self, engine: Engine, settings: Settings, kinds: list[str] | None = None,
                 timing: JobTiming | None = None, extra_modules: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.settings = settings
        self.kinds = kinds
        self.timing = timing or JobTiming.from_env()
        self.worker_id = new_worker_id()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._running: dict[str, str] = {}
        load_handlers(extra_modules)

    def stop(self) -> None:
        self._stop.set()

    def pause(self) -> None:
        """Stop claiming new jobs (running ones finish); ``resume()`` undoes it."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def run_forever(self, threads: int = 1) -> None:
        log.info("worker %s started (%d thread%s)", self.worker_id, threads, "s" if threads > 1 else "")
        loops = [threading.Thread(target=self._loop, args=(f"{self.worker_id}/{n}",), daemon=True)
                 for n in range(threads)]
        for t in loops:
            t.start()
        try:
            while any(t.is_alive() for t in loops):
                for t in loops:
                    t.join(0.5)
        except KeyboardInterrupt:
            self.stop()
        # Jobs still running are handed back so another worker restarts them at once, instead
        # of waiting for their heartbeat to go stale.
        for loop_id, job_id in list(self._running.items()):
            queue.release(self.engine, job_id, loop_id)
            log.info("worker: job %s handed back to the queue", job_id)

    def _loop(self, worker_id: str) -> None:
        while not self._stop.is_set():
            if self._paused.is_set():
                self._stop.wait(self.timing.idle_poll_seconds)
                continue
            try:
                job = run_one(self.engine, self.settings, worker_id, self.kinds, self.timing, self._running)
            except Exception:  # noqa: BLE001 - database unavailable: wait and retry
                log.warning("worker %s: cannot claim jobs", worker_id, exc_info=True)
                self._stop.wait(5)
                continue
            if job is None:
                self._stop.wait(self.timing.idle_poll_seconds)


def install_signal_handlers(worker: Worker) -> None:
    def _graceful(signum: int, _frame: object) -> None:
        log.info("worker: signal %d, stopping after handing back running jobs", signum)
        worker.stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
