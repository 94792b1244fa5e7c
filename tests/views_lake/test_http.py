"""ViewDefinition storage and search, $viewdefinition-run at every level, identical to the CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fhirlake.cli.main import cli

from .conftest import SYNTHEA_100
from .helpers import CATALOG, synthea_resources

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def http(synthea_server) -> Iterator[httpx.Client]:  # noqa: ANN001
    with httpx.Client(base_url=synthea_server.url, timeout=120) as client:
        yield client


def _ndjson(body: bytes) -> list[bytes]:
    return sorted(line for line in body.splitlines() if line)


def _cli_lines(name: str, tmp_path: Path) -> list[bytes]:
    view_file = tmp_path / f"{name}.json"
    view_file.write_text(json.dumps(CATALOG[name]))
    result = CliRunner().invoke(cli, ["views", "run", str(view_file), "--input", str(SYNTHEA_100), "--format", "ndjson"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    return _ndjson(result.stdout_bytes)


def _parameters(*parameters: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


def _outcome(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_http_run_equals_cli_run(http: httpx.Client, tmp_path: Path, name: str) -> None:
    response = http.post("/ViewDefinition/$viewdefinition-run",
                         json=_parameters({"name": "viewResource", "resource": CATALOG[name]},
                                          {"name": "_format", "valueCode": "ndjson"}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert _ndjson(response.content) == _cli_lines(name, tmp_path)


def test_store_read_search_update_delete(http: httpx.Client) -> None:
    created = http.post("/ViewDefinition", json=CATALOG["patient"])
    assert created.status_code == 201, created.text
    view_id = created.json()["id"]
    assert created.headers["Location"].endswith(f"/ViewDefinition/{view_id}/_history/1")
    read = http.get(f"/ViewDefinition/{view_id}")
    assert read.status_code == 200 and read.json()["name"] == "patient" and read.headers["ETag"] == 'W/"1"'

    other = http.post("/ViewDefinition", json={**CATALOG["condition"], "status": "draft"})
    other_id = other.json()["id"]

    def ids(query: str) -> set[str]:
        response = http.get(f"/ViewDefinition?{query}")
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset" and bundle["total"] == len(bundle.get("entry", []))
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    assert view_id in ids("name=pat") and other_id not in ids("name=pat")
    assert ids("name:exact=patient") >= {view_id} and view_id not in ids("name:exact=pat")
    assert other_id in ids("status=draft") and view_id not in ids("status=draft")
    assert view_id in ids("resource=Patient") and other_id not in ids("resource=Patient")
    assert ids("resource=Condition&status=draft") >= {other_id}
    assert _outcome(http.get("/ViewDefinition?title=x"), 400)["expression"] == ["title"]

    changed = {**CATALOG["patient"], "id": view_id, "status": "retired"}
    updated = http.put(f"/ViewDefinition/{view_id}", json=changed)
    assert updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2"
    assert view_id in ids("status=retired") and view_id not in ids("status=active")
    conflict = http.put(f"/ViewDefinition/{view_id}", json=changed, headers={"If-Match": 'W/"1"'})
    assert conflict.status_code == 412

    run = http.get(f"/ViewDefinition/{view_id}/$viewdefinition-run", params={"_format": "ndjson"})
    assert run.status_code == 200 and len(_ndjson(run.content)) == len(synthea_resources("Patient"))
    by_reference = http.get("/$viewdefinition-run", params={"viewReference": f"ViewDefinition/{view_id}",
                                                            "_format": "ndjson"})
    assert _ndjson(by_reference.content) == _ndjson(run.content)

    assert http.delete(f"/ViewDefinition/{view_id}").status_code == 200
    assert http.get(f"/ViewDefinition/{view_id}").status_code == 410
    assert view_id not in ids("name=patient")
    assert http.delete(f"/ViewDefinition/{view_id}").status_code == 204
    _outcome(http.get(f"/ViewDefinition/{view_id}/$viewdefinition-run"), 404)


def test_invalid_view_definitions_are_refused(http: httpx.Client) -> None:
    bad = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
           "select": [{"column": [{"name": "ok", "path": "id"}, {"name": "bad", "path": "name.where("}]}]}
    issue = _outcome(http.post("/ViewDefinition", json=bad), 422)
    assert issue["expression"] == ["select[0].column[1].path"]
    not_a_type = {**bad, "resource": "Spaceship", "select": [{"column": [{"name": "id", "path": "id"}]}]}
    assert _outcome(http.post("/ViewDefinition", json=not_a_type), 422)["expression"] == ["resource"]
    _outcome(http.post("/ViewDefinition", json={"resourceType": "Patient"}), 400)
    _outcome(http.post("/ViewDefinition", content=b"{nope", headers={"Content-Type": "application/fhir+json"}), 400)
    issue = _outcome(http.post("/$viewdefinition-run", json=_parameters({"name": "viewResource", "resource": bad})), 422)
    assert issue["expression"] == ["select[0].column[1].path"]


def test_run_parameters(http: httpx.Client) -> None:
    patient_view = {"name": "viewResource", "resource": CATALOG["patient"]}
    observation_view = {"name": "viewResource", "resource": CATALOG["observation"]}

    csv = http.post("/$viewdefinition-run", json=_parameters(patient_view, {"name": "_format", "valueCode": "csv"}))
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith('"id","gender"') and len(lines) == 1 + len(synthea_resources("Patient"))

    limited = http.post("/$viewdefinition-run", json=_parameters(observation_view, {"name": "_limit", "valueInteger": 7}))
    assert len(limited.json()) == 7

    parquet = http.post("/$viewdefinition-run?_format=parquet", json=_parameters(observation_view))
    table = pq.read_table(io.BytesIO(parquet.content))
    observations = synthea_resources("Observation")
    assert table.num_rows == len(observations)

    patient = synthea_resources("Patient")[3]["id"]
    mine = http.post("/$viewdefinition-run", json=_parameters(
        observation_view, {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}}))
    rows = mine.json()
    expected = [o for o in observations if o["subject"]["reference"].endswith(patient)]
    assert len(rows) == len(expected) > 0 and {r["patient_id"] for r in rows} == {patient}
    get_form = http.get("/ViewDefinition/$viewdefinition-run", params={"patient": f"Patient/{patient}", "_format": "json",
                                                                      "viewReference": "ViewDefinition/none"})
    _outcome(get_form, 404)

    future = http.post("/$viewdefinition-run", json=_parameters(patient_view, {"name": "_since", "valueInstant": "2999-01-01T00:00:00Z"}))
    assert future.json() == []
    past = http.post("/$viewdefinition-run", json=_parameters(patient_view, {"name": "_since", "valueInstant": "2000-01-01T00:00:00Z"}))
    assert len(past.json()) == len(synthea_resources("Patient"))

    inline = [{"resourceType": "Patient", "id": "inline-1", "gender": "female"},
              {"resourceType": "Observation", "id": "not-a-patient"}]
    inline_run = http.post("/$viewdefinition-run", json=_parameters(
        patient_view, *({"name": "resource", "resource": r} for r in inline)))
    assert [(r["id"], r["gender"]) for r in inline_run.json()] == [("inline-1", "female")]

    pair = synthea_resources("Patient")[:2]
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{p['id']}"}} for p in pair]}
    created = http.post("/Group", json=group, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    grouped = http.post("/$viewdefinition-run", json=_parameters(
        patient_view, {"name": "group", "valueReference": {"reference": f"Group/{created.json()['id']}"}}))
    assert sorted(r["id"] for r in grouped.json()) == sorted(p["id"] for p in pair)


def test_run_errors(http: httpx.Client) -> None:
    view = {"name": "viewResource", "resource": CATALOG["patient"]}
    assert _outcome(http.post("/$viewdefinition-run", json=_parameters(view, {"name": "_format", "valueCode": "xlsx"})),
                    400)["expression"] == ["_format"]
    _outcome(http.post("/$viewdefinition-run", json=_parameters()), 400)
    _outcome(http.post("/$viewdefinition-run", json=_parameters(view, {"name": "viewReference", "valueString": "x"})), 400)
    assert _outcome(http.post("/$viewdefinition-run", json=_parameters(view, {"name": "_since", "valueString": "yesterday"})),
                    400)["expression"] == ["_since"]
    _outcome(http.post("/$viewdefinition-run", json=_parameters(view, {"name": "_limit", "valueString": "many"})), 400)
    _outcome(http.post("/$viewdefinition-run", json=_parameters(view, {"name": "bogus", "valueString": "1"})), 400)
    _outcome(http.post("/$viewdefinition-run", json={"resourceType": "Patient"}), 400)
    _outcome(http.get("/$viewdefinition-run", params={"viewReference": "ViewDefinition/missing"}), 404)
    _outcome(http.get("/$viewdefinition-run", params={"viewReference": "Patient/1"}), 400)
    _outcome(http.get("/$viewdefinition-run", params={"what": "1"}), 400)
    _outcome(http.post("/$viewdefinition-run", json=_parameters(view, {"name": "group", "valueReference": {"reference": "Group/none"}})), 404)


def test_run_streams_in_chunks(http: httpx.Client) -> None:
    view = {"name": "viewResource", "resource": CATALOG["observation"]}
    with http.stream("POST", "/$viewdefinition-run", json=_parameters(view, {"name": "_format", "valueCode": "ndjson"})) as response:
        chunks = [c for c in response.iter_raw() if c]
    assert len(chunks) > 1
    rows = [orjson.loads(line) for line in b"".join(chunks).splitlines() if line]
    assert len(rows) == len(synthea_resources("Observation"))
