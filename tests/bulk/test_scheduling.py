"""Retention deletes expired output; one scheduler leads; a tick enqueues at most one job per kind."""

from __future__ import annotations

from sqlalchemy import text

from fhirlake.jobs import queue
from fhirlake.jobs.retention import apply_retention
from fhirlake.jobs.scheduler import Task, release_lead, trigger, try_lead
from tests.bulk.test_export_http import run_export


def test_retention_removes_expired_exports(bulk, engine, bulk_server) -> None:  # noqa: ANN001
    manifest = run_export(bulk, "/$export", {"_type": "Patient"})
    url = manifest["output"][0]["url"]
    job_id = url.split("/bulk-files/")[1].split("/")[0]
    folder = bulk_server.settings.data_dir / "bulk" / job_id
    assert folder.is_dir() and bulk.get(url).status_code == 200
    apply_retention(engine, bulk_server.settings)
    assert folder.is_dir()  # not expired yet: kept
    with engine.begin() as conn:
        conn.execute(text("UPDATE job SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": job_id})
    done = apply_retention(engine, bulk_server.settings)
    assert done["expired_jobs"] >= 1 and not folder.exists()
    assert bulk.get(url).status_code == 404
    assert bulk.get(f"/bulk-status/{job_id}").status_code == 404


def test_one_scheduler_leads_and_ticks_do_not_pile_up(engine, worker) -> None:  # noqa: ANN001
    first = try_lead(engine)
    assert first is not None
    try:
        assert try_lead(engine) is None  # a second scheduler waits
    finally:
        release_lead(first)
    second = try_lead(engine)  # the lock went with the leader's session
    assert second is not None
    release_lead(second)
    worker.pause()
    try:
        task = Task("test-tick", 1)
        job_id = trigger(engine, task)
        assert job_id is not None and trigger(engine, task) is None
        with engine.begin() as conn:
            assert queue.request_cancel(conn, job_id)
        assert trigger(engine, task) is not None
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM job WHERE kind = 'test-tick'"))
        worker.resume()
