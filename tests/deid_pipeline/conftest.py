"""Fixtures: a private database with the msft Synthea set, a server and an in-process export worker.

The database is private to these tests (not the session's ``engine``) because a bulk worker
started by another test package would claim our jobs and write them under its own data folder.
The worker runs in this process, so ``monkeypatch.setenv("FHIRLAKE_DEID_KEY", ...)`` reaches it:
the export handler reads the key from the environment when each job starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirlake.jobs.timing import JobTiming
from fhirlake.jobs.worker import Worker
from fhirlake.services.loader import load_folder
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade
from tests.conftest import LiveServer, create_database, drop_database, start_server

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SYNTHEA = SHARED / "synthea"
MSFT = SYNTHEA / "msft-anonymization-samples-r4"
SMART_BULK = SYNTHEA / "smart-bulk-10-patients"
TEST_KEY = "pipeline-test-secret-0123456789"
FAST = JobTiming(heartbeat_seconds=0.3, stale_seconds=3.0, idle_poll_seconds=0.05, status_retry_after=1,
                 min_poll_interval=0.0, max_attempts=2)


@pytest.fixture(scope="session")
def deid_engine():  # noqa: ANN201
    from tests import conftest

    name = create_database("fhirlake_deidpipe")
    eng = make_engine(f"{conftest.PG_SERVER}/{name}", pool_size=8)
    try:
        upgrade(eng)
        load_folder(eng, MSFT)
        yield eng
    finally:
        eng.dispose()
        drop_database(name)


@pytest.fixture(scope="session")
def deid_data_dir(tmp_path_factory) -> Path:  # noqa: ANN001
    return tmp_path_factory.mktemp("deid-pipeline")


@pytest.fixture(scope="session")
def deid_server(deid_engine, deid_data_dir) -> Iterator[LiveServer]:  # noqa: ANN001
    live = start_server(deid_engine, deid_data_dir, export_file_max_resources=1000)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def deid_worker(deid_engine, deid_server) -> Iterator[Worker]:  # noqa: ANN001
    w = Worker(deid_engine, deid_server.settings, kinds=["export"], timing=FAST)
    thread = threading.Thread(target=w.run_forever, args=(1,), daemon=True)
    thread.start()
    yield w
    w.stop()
    thread.join(10)


@pytest.fixture()
def with_key(monkeypatch) -> str:  # noqa: ANN001
    monkeypatch.delenv("FHIRLAKE_DEID_KEY_FILE", raising=False)
    monkeypatch.setenv("FHIRLAKE_DEID_KEY", TEST_KEY)
    return TEST_KEY


@pytest.fixture()
def without_key(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("FHIRLAKE_DEID_KEY", raising=False)
    monkeypatch.delenv("FHIRLAKE_DEID_KEY_FILE", raising=False)


@pytest.fixture()
def bulk(deid_server, deid_worker) -> Iterator[httpx.Client]:  # noqa: ANN001
    with httpx.Client(base_url=deid_server.url, timeout=60,
                      headers={"Accept": "application/fhir+json", "Prefer": "respond-async"}) as c:
        yield c


def wait_for(client: httpx.Client, status_url: str, timeout: float = 120, **kwargs) -> httpx.Response:  # noqa: ANN003
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url, **kwargs)
        if response.status_code != 202:
            return response
        assert time.monotonic() < deadline, "bulk job did not finish in time"
        time.sleep(0.3)  # the status endpoint answers 429 to polls closer than 0.2 s
