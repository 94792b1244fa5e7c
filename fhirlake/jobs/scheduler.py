"""The scheduler: APScheduler 3.11 triggers periodic jobs; workers run them.

Exactly one scheduler is active per database: it holds a session-level PostgreSQL advisory lock
on a dedicated connection (released by the server if the process dies). Others wait and retry.
A tick only enqueues a job row (skipped when one of that kind is still queued or running), so
periodic work gets the job machinery's durability, heartbeats and retries.

Schedule: built-in defaults, replaced by a YAML file (``--schedule``, ``FHIRLAKE_SCHEDULE``, or
``jobs/schedule.yaml`` in the working directory) of the form::

    handler_modules: [fhirlake.views.jobs]     # imported by workers (optional)
    tasks:
      - kind: retention
        every_minutes: 10
      - kind: view-refresh
        every_minutes: 15
        params: {}
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import Engine, text

from fhirlake.config import Settings
from fhirlake.jobs import queue

log = logging.getLogger("fhirlake.jobs.scheduler")
LEADER_LOCK = 7_246_005


@dataclass(frozen=True)
class Task:
    kind: str
    every_minutes: float
    params: dict = field(default_factory=dict)


def default_tasks(settings: Settings) -> list[Task]:
    return [Task("retention", 10), Task("view-refresh", float(settings.view_refresh_minutes))]


def schedule_file(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get("FHIRLAKE_SCHEDULE")
    if env:
        return Path(env)
    local = Path("jobs/schedule.yaml")
    return local if local.is_file() else None


def load_schedule(path: Path | None, settings: Settings) -> tuple[list[Task], list[str]]:
    if path is None:
        return default_tasks(settings), []
    data = yaml.safe_load(path.read_text()) or {}
    tasks = [Task(t["kind"], float(t["every_minutes"]), dict(t.get("params") or {})) for t in data.get("tasks", [])]
    return tasks, list(data.get("handler_modules") or [])


def trigger(engine: Engine, task: Task) -> str | None:
    """Enqueue one run of a periodic task unless one is already waiting or running."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, hashtext(:kind))"), {"k": LEADER_LOCK, "kind": task.kind})
        if queue.count_active(conn, task.kind):
            return None
        return queue.enqueue(conn, task.kind, task.params)


def try_lead(engine: Engine):  # noqa: ANN201 - a held connection, or None
    conn = engine.connect()
    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}).scalar()
    conn.commit()
    if got:
        return conn
    conn.close()
    return None


def release_lead(conn) -> None:  # noqa: ANN001
    """End the leader's session (never return it to the pool: the session holds the lock)."""
    conn.invalidate()
    conn.close()


def run_scheduler(engine: Engine, settings: Settings, schedule_path: Path | None = None,
                  stop: threading.Event | None = None) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from fhirlake.jobs.registry import load_handlers

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tasks, modules = load_schedule(schedule_file(schedule_path), settings)
    kinds = set(load_handlers(modules))
    for task in tasks:
        if task.kind not in kinds:
            log.warning("no handler for periodic task %s here; it is skipped", task.kind)
    tasks = [t for t in tasks if t.kind in kinds]
    leader = None
    while not stop.is_set() and leader is None:
        leader = try_lead(engine)
        if leader is None:
            stop.wait(10)  # another scheduler leads; take over if it goes away
    if leader is None:
        return
    log.info("scheduler: leading; %s", ", ".join(f"{t.kind} every {t.every_minutes} min" for t in tasks))
    scheduler = BackgroundScheduler(timezone="UTC")
    for task in tasks:
        scheduler.add_job(trigger, "interval", args=(engine, task), minutes=task.every_minutes, id=task.kind,
                          max_instances=1, coalesce=True)
    scheduler.start()
    try:
        while not stop.wait(5):
            leader.execute(text("SELECT 1"))  # keep the lock's session alive and notice a lost database
    finally:
        scheduler.shutdown(wait=False)
        release_lead(leader)
