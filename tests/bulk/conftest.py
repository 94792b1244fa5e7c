"""Fixtures for bulk tests: a server and an in-process worker sharing one data folder, Synthea data."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirlake.config import Settings
from fhirlake.jobs.timing import JobTiming
from fhirlake.jobs.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SYNTHEA = SHARED / "synthea"
MSFT = SYNTHEA / "msft-anonymization-samples-r4"
SMART_BULK = SYNTHEA / "smart-bulk-10-patients"
SMART_100 = SYNTHEA / "smart-generated-sample-data-r4-100"
FAST = JobTiming(heartbeat_seconds=0.3, stale_seconds=3.0, idle_poll_seconds=0.05, status_retry_after=1,
                 min_poll_interval=0.2, max_attempts=5)


@pytest.fixture(scope="session")
def bulk_data_dir(tmp_path_factory) -> Path:  # noqa: ANN001
    return tmp_path_factory.mktemp("bulk-data")


@pytest.fixture(scope="session")
def loaded(engine) -> int:  # noqa: ANN001
    """The msft Synthea set, loaded once through the importer."""
    from fhirlake.jobs.imports.loader import ImportRun, expand_paths

    run = ImportRun(engine, None)
    summary = run.load(expand_paths([MSFT]))
    assert summary.errors == 0
    return summary.loaded + summary.unchanged


@pytest.fixture(scope="session")
def bulk_server(engine, bulk_data_dir, loaded):  # noqa: ANN001
    from tests.conftest import start_server

    live = start_server(engine, bulk_data_dir, export_file_max_resources=400, import_dir=SYNTHEA)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def worker(engine, bulk_server) -> Iterator[Worker]:  # noqa: ANN001
    w = Worker(engine, bulk_server.settings, timing=FAST)
    thread = threading.Thread(target=w.run_forever, args=(2,), daemon=True)
    thread.start()
    yield w
    w.stop()
    thread.join(10)


@pytest.fixture()
def bulk(bulk_server, worker) -> Iterator[httpx.Client]:  # noqa: ANN001
    with httpx.Client(base_url=bulk_server.url, timeout=60,
                      headers={"Accept": "application/fhir+json", "Prefer": "respond-async"}) as c:
        yield c


def settings_of(server) -> Settings:  # noqa: ANN001
    return server.settings


def wait_for(client: httpx.Client, status_url: str, timeout: float = 120) -> httpx.Response:
    """Poll like a well-behaved client: honour Retry-After, stop at the first non-202 answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url)
        if response.status_code != 202:
            return response
        assert "X-Progress" in response.headers
        assert time.monotonic() < deadline, "bulk job did not finish in time"
        time.sleep(float(response.headers.get("Retry-After", "1")))
