"""Job machinery: exclusive claims, takeover of a dead worker's job, a real kill -9, snapshot isolation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from sqlalchemy import text

from fhirlake.jobs import queue
from fhirlake.jobs.export.params import parse_export
from fhirlake.jobs.export.runner import run_export
from fhirlake.store.resources import WriteOp, write_resources
from tests.bulk.conftest import REPO, wait_for
from tests.bulk.test_export_http import as_ids, db_ids, download


def test_claim_is_exclusive_and_stale_jobs_move(engine, worker) -> None:  # noqa: ANN001
    worker.pause()
    try:
        time.sleep(0.3)
        with engine.begin() as conn:
            job_id = queue.enqueue(conn, "test-kind", {"n": 1})
        a = queue.claim(engine, "worker-a", ["test-kind"], stale_seconds=60, max_attempts=5)
        assert a is not None and a.id == job_id and a.attempts == 1
        assert queue.claim(engine, "worker-b", ["test-kind"], stale_seconds=60, max_attempts=5) is None
        assert queue.heartbeat(engine, job_id, "worker-a", {"done": 1})
        # worker-a goes silent: its job is taken over, and worker-a can no longer touch it
        with engine.begin() as conn:
            conn.execute(text("UPDATE job SET heartbeat_at = now() - interval '1 hour' WHERE id = :id"), {"id": job_id})
        b = queue.claim(engine, "worker-b", ["test-kind"], stale_seconds=60, max_attempts=5)
        assert b is not None and b.id == job_id and b.attempts == 2
        assert not queue.heartbeat(engine, job_id, "worker-a", None)
        assert not queue.complete(engine, job_id, "worker-a", {}, None)
        assert queue.complete(engine, job_id, "worker-b", {"ok": True}, None)
        with engine.connect() as conn:
            final = queue.get(conn, job_id)
        assert final.status == "completed" and final.result == {"ok": True} and final.worker_id == "worker-b"
    finally:
        worker.resume()


def test_cancel_stops_a_running_handler(engine, worker) -> None:  # noqa: ANN001
    worker.pause()
    try:
        time.sleep(0.3)
        with engine.begin() as conn:
            job_id = queue.enqueue(conn, "test-kind", {})
        job = queue.claim(engine, "worker-c", ["test-kind"], 60, 5)
        assert job is not None
        with engine.begin() as conn:
            assert queue.request_cancel(conn, job_id)
        assert not queue.heartbeat(engine, job_id, "worker-c", None)  # the handler learns it must stop
        with engine.connect() as conn:
            assert queue.get(conn, job_id).status == "cancelled"
    finally:
        worker.resume()


def _worker_process(database_url: str, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "FHIRLAKE_DATABASE_URL": database_url, "FHIRLAKE_DATA_DIR": str(data_dir),
           "FHIRLAKE_EXPORT_FILE_MAX_RESOURCES": "3", "FHIRLAKE_JOB_HEARTBEAT_SECONDS": "0.3",
           "FHIRLAKE_JOB_STALE_SECONDS": "3", "FHIRLAKE_JOB_IDLE_POLL_SECONDS": "0.1",
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "fhirlake.cli.main", "worker", "--kind", "export"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_of_a_worker_mid_export(engine, database_url, bulk, bulk_server, worker) -> None:  # noqa: ANN001
    worker.pause()  # only the two real worker processes below may run this export
    procs = [_worker_process(database_url, bulk_server.settings.data_dir) for _ in range(2)]
    try:
        time.sleep(0.5)
        response = bulk.get("/$export")
        assert response.status_code == 202
        status_url = response.headers["Content-Location"]
        job_id = status_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 60
        victim = None
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                job = queue.get(conn, job_id)
            if job.status == "running" and (job.progress or {}).get("done", 0) > 0:
                pid = int(job.worker_id.split(":")[1])
                victim = next(p for p in procs if p.pid == pid)
                break
            time.sleep(0.05)
        assert victim is not None, "the export never started"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        response = wait_for(bulk, status_url, timeout=180)
        assert response.status_code == 200, response.text
        with engine.connect() as conn:
            job = queue.get(conn, job_id)
        assert job.attempts >= 2 and job.worker_id != f"{victim.pid}"
        assert str(victim.pid) not in job.worker_id
        manifest = response.json()
        assert as_ids(download(bulk, manifest)) == db_ids(engine)
        # the dead attempt left no files behind
        job_dir = bulk_server.settings.data_dir / "bulk" / job_id
        assert [p.name for p in job_dir.iterdir()] == [job.result["folder"]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
        worker.resume()


def test_snapshot_is_consistent_under_concurrent_writes(engine, bulk, tmp_path) -> None:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT r.res_id, v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE r.res_type = 'Patient' AND NOT r.deleted ORDER BY r.rid")).all()
    before = {rid: orjson.loads(content) for rid, content in rows}
    last_id = rows[-1][0]  # lives in the last file, written after the concurrent commit below
    wrote = []

    def write_during_export() -> None:
        if wrote:
            return
        with engine.begin() as conn:
            changed = dict(before[last_id])
            changed["gender"] = "other" if changed.get("gender") != "other" else "unknown"
            write_resources(conn, [WriteOp("Patient", last_id, changed),
                                   WriteOp("Patient", "snapshot-newcomer", {"resourceType": "Patient", "id": "snapshot-newcomer"})])
        wrote.append(True)

    req = parse_export([("_type", "Patient")], level="system", request_url="x", base_url="")
    outcome = run_export(engine, req, tmp_path, file_max_resources=2, check=write_during_export)
    assert wrote and len(outcome.output) > 2
    exported = {}
    for item in outcome.output:
        for line in (tmp_path / item.name).read_bytes().splitlines():
            r = orjson.loads(line)
            exported[r["id"]] = r
    assert set(exported) == set(before)  # the newcomer committed after the snapshot: absent
    assert exported == before  # every resource exactly as it was at the snapshot, incl. the last one
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written remains
    with engine.begin() as conn:  # leave the shared data as other tests expect it
        write_resources(conn, [WriteOp("Patient", last_id, before[last_id]), WriteOp("Patient", "snapshot-newcomer", None)])
