"""The views' job handlers: scheduled refresh and $viewdefinition-export (202, polling, files, cancel)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from fhirlake.jobs import queue
from fhirlake.jobs.registry import handler_for, load_handlers
from fhirlake.jobs.scheduler import default_tasks, load_schedule
from fhirlake.jobs.worker import new_worker_id, run_one

from .conftest import REPO
from .helpers import CATALOG, lake_rows, store_rows, synthea_resources


@pytest.fixture()
def http(synthea_server) -> Iterator[httpx.Client]:  # noqa: ANN001
    with httpx.Client(base_url=synthea_server.url, timeout=120) as client:
        yield client


def _run_jobs(engine, settings, kind: str) -> None:  # noqa: ANN001
    load_handlers()
    while run_one(engine, settings, new_worker_id(), [kind]) is not None:
        pass


def test_handlers_are_registered_and_scheduled(synthea_engine) -> None:  # noqa: ANN001
    from fhirlake.config import Settings

    assert {"view-refresh", "view-export"} <= set(load_handlers())
    assert handler_for("view-refresh") is not None
    settings = Settings(view_refresh_minutes=7)
    assert any(t.kind == "view-refresh" and t.every_minutes == 7 for t in default_tasks(settings))
    tasks, _modules = load_schedule(REPO / "jobs" / "schedule.yaml", settings)
    assert any(t.kind == "view-refresh" for t in tasks)


def test_refresh_job_materializes_the_catalog(synthea_engine, tmp_path) -> None:  # noqa: ANN001
    from fhirlake.config import Settings

    settings = Settings(data_dir=tmp_path)
    with synthea_engine.begin() as conn:
        job_id = queue.enqueue(conn, "view-refresh", {"names": ["patient", "condition"]})
    _run_jobs(synthea_engine, settings, "view-refresh")
    with synthea_engine.connect() as conn:
        job = queue.get(conn, job_id)
    assert job.status == "completed", job.error
    assert {v["name"] for v in job.result["views"]} == {"patient", "condition"}
    for name in ("patient", "condition"):
        assert lake_rows(settings.lake_dir, name) == store_rows(synthea_engine, name)


def _kickoff(http: httpx.Client, body: dict) -> str:
    response = http.post("/ViewDefinition/$viewdefinition-export", json=body)
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def test_export_flow(http: httpx.Client, synthea_server, synthea_engine) -> None:  # noqa: ANN001
    stored = http.post("/ViewDefinition", json=CATALOG["condition"]).json()
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "view", "part": [{"name": "name", "valueString": "patients"},
                                  {"name": "viewResource", "resource": CATALOG["patient"]}]},
        {"name": "view", "part": [{"name": "viewReference", "valueReference": {"reference": f"ViewDefinition/{stored['id']}"}}]},
        {"name": "_format", "valueCode": "parquet"},
        {"name": "clientTrackingId", "valueString": "track-1"},
    ]}
    status_url = _kickoff(http, body)
    pending = http.get(status_url)
    assert pending.status_code == 202 and pending.headers["X-Progress"] == "queued"
    _run_jobs(synthea_engine, synthea_server.settings, "view-export")
    done = http.get(status_url)
    assert done.status_code == 200, done.text
    parameters = done.json()["parameter"]
    assert {"name": "clientTrackingId", "valueString": "track-1"} in parameters
    outputs = {next(p["valueString"] for p in o["part"] if p["name"] == "name"): o["part"]
               for o in parameters if o["name"] == "output"}
    assert set(outputs) == {"patients", "condition"}
    for name, expected_type in (("patients", "Patient"), ("condition", "Condition")):
        url = next(p["valueUri"] for p in outputs[name] if p["name"] == "location")
        count = next(p["valueInteger"] for p in outputs[name] if p["name"] == "count")
        table = pq.read_table(io.BytesIO(http.get(url).content))
        assert table.num_rows == count == len(synthea_resources(expected_type))
    # cancelling a finished export removes it
    assert http.delete(status_url).status_code == 202
    assert http.get(status_url).status_code == 404
    assert http.get(url).status_code == 404


def test_export_ndjson_for_one_patient_and_cancel(http: httpx.Client, synthea_server, synthea_engine) -> None:  # noqa: ANN001
    patient = synthea_resources("Patient")[5]["id"]
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "viewResource", "resource": CATALOG["observation"]},
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
        {"name": "_format", "valueCode": "ndjson"},
    ]}
    status_url = _kickoff(http, body)
    _run_jobs(synthea_engine, synthea_server.settings, "view-export")
    for _ in range(20):
        done = http.get(status_url)
        if done.status_code == 200:
            break
        time.sleep(0.1)
    output = next(p for p in done.json()["parameter"] if p["name"] == "output")
    url = next(p["valueUri"] for p in output["part"] if p["name"] == "location")
    rows = [orjson.loads(line) for line in http.get(url).content.splitlines() if line]
    expected = [o for o in synthea_resources("Observation") if o["subject"]["reference"].endswith(patient)]
    assert len(rows) == len(expected) > 0 and {r["patient_id"] for r in rows} == {patient}

    queued = _kickoff(http, body)
    assert http.delete(queued).status_code == 202
    assert http.get(queued).status_code == 404
    _run_jobs(synthea_engine, synthea_server.settings, "view-export")  # nothing to claim: it was cancelled


def test_export_kickoff_errors(http: httpx.Client) -> None:
    bad = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
           "select": [{"column": [{"name": "x", "path": "name.where("}]}]}
    cases = [
        ({"resourceType": "Parameters", "parameter": []}, 400),
        ({"resourceType": "Parameters", "parameter": [{"name": "viewResource", "resource": bad}]}, 422),
        ({"resourceType": "Parameters", "parameter": [{"name": "viewReference", "valueString": "ViewDefinition/none"}]}, 404),
        ({"resourceType": "Parameters", "parameter": [{"name": "viewResource", "resource": CATALOG["patient"]},
                                                      {"name": "_format", "valueCode": "xlsx"}]}, 400),
        ({"resourceType": "Patient"}, 400),
    ]
    for body, status in cases:
        response = http.post("/$viewdefinition-export", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert http.get("/$viewdefinition-export/status/00000000-0000-0000-0000-000000000000").status_code == 404
