"""The Bulk Data flow over HTTP as a client runs it: kick-off, polling, manifest, every file, cancel."""

from __future__ import annotations

import io
import time
from collections import Counter

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from tests.bulk.conftest import wait_for


def _kickoff(client: httpx.Client, path: str, params: dict | None = None, body: dict | None = None) -> str:
    if body is not None:
        response = client.post(path, json=body, headers={"Content-Type": "application/fhir+json"})
    else:
        response = client.get(path, params=params or {})
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def run_export(client: httpx.Client, path: str, params: dict | None = None, body: dict | None = None) -> dict:
    status_url = _kickoff(client, path, params, body)
    response = wait_for(client, status_url)
    assert response.status_code == 200, response.text
    assert "Expires" in response.headers
    manifest = response.json()
    assert manifest["requiresAccessToken"] is False
    assert manifest["transactionTime"].endswith("Z")
    assert path in manifest["request"]
    return manifest


def download(client: httpx.Client, manifest: dict, key: str = "output") -> dict[str, list[dict]]:
    """type -> resources, checking each file's type, count and Content-Type."""
    out: dict[str, list[dict]] = {}
    for item in manifest[key]:
        assert item["url"].startswith("http://127.0.0.1:")
        response = client.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in response.content.splitlines() if line]
        assert len(lines) == item["count"]
        assert all(r["resourceType"] == item["type"] for r in lines)
        out.setdefault(item["type"], []).extend(lines)
    return out


def db_ids(engine, where: str = "TRUE", params: dict | None = None) -> dict[str, set[str]]:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT res_type, res_id FROM resource r WHERE NOT deleted AND {where}"), params or {})
        out: dict[str, set[str]] = {}
        for res_type, res_id in rows:
            out.setdefault(res_type, set()).add(res_id)
    return out


def as_ids(resources: dict[str, list[dict]]) -> dict[str, set[str]]:
    out = {t: {r["id"] for r in rs} for t, rs in resources.items()}
    for t, rs in resources.items():
        assert len(rs) == len(out[t]), f"duplicates in {t}"
    return out


def test_system_export_matches_database(bulk, engine) -> None:  # noqa: ANN001
    manifest = run_export(bulk, "/$export")
    got = download(bulk, manifest)
    assert as_ids(got) == db_ids(engine)
    # files are split at export_file_max_resources (400 in these tests)
    per_type = Counter(item["type"] for item in manifest["output"])
    assert per_type["Observation"] >= 2
    assert all(item["count"] <= 400 for item in manifest["output"])
    # content is served byte-for-byte as stored
    with engine.connect() as conn:
        stored = dict(conn.execute(text(
            "SELECT r.res_id, v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE r.res_type = 'Patient' AND NOT r.deleted")).all())
    for patient in got["Patient"]:
        assert orjson.loads(stored[patient["id"]]) == patient
    assert manifest["error"] == [] and manifest["deleted"] == []


def test_type_and_post_parameters(bulk, engine) -> None:  # noqa: ANN001
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient,Condition"},
        {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
    ]}
    manifest = run_export(bulk, "/$export", body=body)
    got = as_ids(download(bulk, manifest))
    expected = db_ids(engine, "res_type IN ('Patient', 'Condition')")
    assert got == expected and set(got) == {"Patient", "Condition"}


def test_since_and_deleted(bulk, engine) -> None:  # noqa: ANN001
    first = run_export(bulk, "/$export", {"_type": "Patient"})
    since = first["transactionTime"]
    time.sleep(0.01)
    patients = sorted(db_ids(engine)["Patient"])
    changed, gone = patients[0], patients[1]
    resource = bulk.get(f"/Patient/{changed}").json()
    resource["active"] = not resource.get("active", False)
    assert bulk.put(f"/Patient/{changed}", json=resource, headers={"Content-Type": "application/fhir+json"}).status_code == 200
    assert bulk.delete(f"/Patient/{gone}").status_code in (200, 204)
    manifest = run_export(bulk, "/$export", {"_since": since, "_type": "Patient"})
    got = as_ids(download(bulk, manifest))
    assert got == {"Patient": {changed}}
    deleted = download_bundles(bulk, manifest)
    assert [e["request"] for b in deleted for e in b["entry"]] == [{"method": "DELETE", "url": f"Patient/{gone}"}]


def download_bundles(client: httpx.Client, manifest: dict) -> list[dict]:
    bundles = []
    for item in manifest["deleted"]:
        assert item["type"] == "Bundle"
        response = client.get(item["url"])
        bundles += [orjson.loads(line) for line in response.content.splitlines() if line]
        assert len(bundles) == item["count"]
    assert all(b["type"] == "transaction" for b in bundles)
    return bundles


def test_type_filter_and_elements(bulk, engine) -> None:  # noqa: ANN001
    with engine.connect() as conn:
        code = conn.execute(text(
            "SELECT v.content::jsonb #>> '{code,coding,0,code}' AS c FROM resource r JOIN resource_version v"
            " ON v.rid = r.rid AND v.version = r.version WHERE r.res_type = 'Observation' AND NOT r.deleted"
            " GROUP BY c ORDER BY count(*) DESC LIMIT 1")).scalar()
        expected = {r[0] for r in conn.execute(text(
            "SELECT r.res_id FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE r.res_type = 'Observation' AND NOT r.deleted AND v.content::jsonb @> CAST(:doc AS jsonb)"),
            {"doc": orjson.dumps({"code": {"coding": [{"code": code}]}}).decode()})}
    manifest = run_export(bulk, "/$export", {"_type": "Observation,Patient", "_typeFilter": f"Observation?code={code}",
                                             "_elements": "Observation.status,gender"})
    got = download(bulk, manifest)
    assert {r["id"] for r in got["Observation"]} == expected
    assert {r["id"] for r in got["Patient"]} == db_ids(engine)["Patient"]
    for obs in got["Observation"]:
        assert "valueQuantity" not in obs and "status" in obs
        assert any(t.get("code") == "SUBSETTED" for t in obs["meta"]["tag"])
    assert all("name" not in p for p in got["Patient"])


def _patients_with_encounters(engine) -> set[str]:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE r.res_type = 'Encounter' AND NOT r.deleted")).scalars()
        subjects = {orjson.loads(c).get("subject", {}).get("reference", "") for c in rows}
    live = db_ids(engine).get("Patient", set())
    return {ref.removeprefix("Patient/") for ref in subjects if ref.startswith("Patient/")} & live


def compartment_ids(engine, patient_ids: list[str] | None) -> dict[str, set[str]]:  # noqa: ANN001
    """Expected Patient compartment, computed independently from the JSON of every resource."""
    from fhirlake.search.registry import registry

    comp = registry().compartments["Patient"]
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT r.res_type, r.res_id, v.content FROM resource r JOIN resource_version v ON v.rid = r.rid"
            " AND v.version = r.version WHERE NOT r.deleted")).all()
    live_patients = {rid for t, rid, _c in rows if t == "Patient"}
    wanted = live_patients if patient_ids is None else set(patient_ids) & live_patients
    out: dict[str, set[str]] = {}
    for res_type, res_id, content in rows:
        if res_type == "Patient":
            if res_id in wanted:
                out.setdefault(res_type, set()).add(res_id)
            continue
        if res_type not in comp:
            continue
        refs = _compartment_refs(res_type, comp[res_type], orjson.loads(content))
        if refs & wanted:
            out.setdefault(res_type, set()).add(res_id)
    return out


def _compartment_refs(res_type: str, param_names: tuple[str, ...], resource: dict) -> set[str]:
    """Patient ids the CompartmentDefinition's parameters point at, evaluated with FHIRPath on the JSON
    (not through the search index the export uses)."""
    from fhirlake.fhir.fhirpath import compile_path
    from fhirlake.search.registry import registry

    params = registry().params(res_type)
    found: set[str] = set()
    for name in param_names:
        param = params.get(name)
        if param is None or not param.expression:
            continue
        found |= _patient_refs(compile_path(param.expression)(resource))
    return found


def _patient_refs(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v.startswith("Patient/"):
                found.add(v.split("/")[1])
            else:
                found |= _patient_refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _patient_refs(v)
    return found


def _trim_to_compartment_params(expected: dict[str, set[str]], got: dict[str, set[str]]) -> None:
    # The JSON walk above finds every Patient reference; the CompartmentDefinition names only some
    # paths (e.g. Provenance via target/patient/agent). Types where the two definitions differ are
    # compared as "export is a subset of the walk" instead.
    for res_type in list(expected):
        if res_type in got and got[res_type] != expected[res_type]:
            assert got[res_type] <= expected[res_type], res_type
            expected[res_type] = got[res_type]


def test_patient_level_export(bulk, engine) -> None:  # noqa: ANN001
    manifest = run_export(bulk, "/Patient/$export")
    got = as_ids(download(bulk, manifest))
    expected = compartment_ids(engine, None)
    assert got["Patient"] == expected["Patient"]
    for res_type in ("Encounter", "Observation", "Condition", "Procedure", "MedicationRequest", "Claim"):
        assert got[res_type] == expected[res_type], res_type
    assert "Organization" not in got and "Practitioner" not in got


def test_group_export_with_referenced(bulk, engine) -> None:  # noqa: ANN001
    # two Synthea patients with encounters (other suites add bare patients to the shared database)
    patients = sorted(_patients_with_encounters(engine))[:2]
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients]}
    created = bulk.post("/Group", json=group, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    group_id = created.json()["id"]
    manifest = run_export(bulk, f"/Group/{group_id}/$export",
                          {"_type": "Patient,Encounter,Condition,Organization,Practitioner",
                           "includeAssociatedData": "_referenced"})
    got = as_ids(download(bulk, manifest))
    expected = compartment_ids(engine, patients)
    assert got["Patient"] == set(patients)
    assert expected["Encounter"] and got["Encounter"] == expected["Encounter"]
    assert got.get("Condition", set()) == expected.get("Condition", set())
    # the organizations and practitioners those encounters name
    with engine.connect() as conn:
        refs = set()
        for (content,) in conn.execute(text(
                "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
                " WHERE r.res_type = 'Encounter' AND r.res_id = ANY(:ids)"), {"ids": list(got["Encounter"])}):
            enc = orjson.loads(content)
            refs |= {p["individual"]["reference"] for p in enc.get("participant", []) if "individual" in p}
            if "serviceProvider" in enc:
                refs.add(enc["serviceProvider"]["reference"])
    assert {f"Practitioner/{i}" for i in got["Practitioner"]} >= {r for r in refs if r.startswith("Practitioner/")}
    assert {f"Organization/{i}" for i in got["Organization"]} >= {r for r in refs if r.startswith("Organization/")}
    # a patient parameter narrows a Group export further
    body = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{patients[0]}"}},
                                                        {"name": "_type", "valueString": "Patient"}]}
    manifest = run_export(bulk, f"/Group/{group_id}/$export", body=body)
    assert as_ids(download(bulk, manifest)) == {"Patient": {patients[0]}}


def test_parquet_and_gzip(bulk, engine) -> None:  # noqa: ANN001
    manifest = run_export(bulk, "/$export", {"_type": "Observation", "_outputFormat": "application/vnd.apache.parquet"})
    [item] = manifest["output"]
    response = bulk.get(item["url"])
    assert response.headers["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == ["id", "version", "last_updated", "resource"]
    assert set(table.column("id").to_pylist()) == db_ids(engine)["Observation"] and table.num_rows == item["count"]
    assert orjson.loads(table.column("resource")[0].as_py())["resourceType"] == "Observation"

    manifest = run_export(bulk, "/$export", {"_type": "Patient", "outputCompression": "gzip"})
    item = manifest["output"][0]
    raw = httpx.get(item["url"], headers={"Accept-Encoding": "identity"})  # a client that cannot gunzip
    assert "Content-Encoding" not in raw.headers
    plain_ids = {orjson.loads(x)["id"] for x in raw.content.splitlines()}
    with httpx.Client() as c:
        compressed = c.get(item["url"], headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert {orjson.loads(x)["id"] for x in compressed.content.splitlines()} == plain_ids == db_ids(engine)["Patient"]


@pytest.mark.parametrize(("path", "params", "fragment"), [
    ("/$export", {"_outputFormat": "text/csv"}, "_outputFormat"),
    ("/$export", {"_since": "yesterday"}, "_since"),
    ("/$export", {"_type": "NotAType"}, "unknown resource type"),
    ("/$export", {"bogus": "1"}, "bogus"),
    ("/$export", {"includeAssociatedData": "LatestProvenanceResources"}, "not supported"),
    ("/$export", {"_typeFilter": "Observation?nope=1"}, "nope"),
    ("/Group/does-not-exist/$export", {}, "Group/does-not-exist"),
])
def test_kickoff_errors(bulk, path: str, params: dict, fragment: str) -> None:  # noqa: ANN001
    response = bulk.get(path, params=params)
    assert response.status_code in (400, 404), response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert fragment.lower() in body["issue"][0]["diagnostics"].lower()


def test_lenient_handling_ignores_unknown(bulk) -> None:  # noqa: ANN001
    response = bulk.get("/$export", params={"bogus": "1", "_type": "Patient"},
                        headers={"Prefer": "respond-async, handling=lenient"})
    assert response.status_code == 202
    assert wait_for(bulk, response.headers["Content-Location"]).status_code == 200


def test_cancel_then_404(bulk) -> None:  # noqa: ANN001
    status_url = _kickoff(bulk, "/$export")
    response = bulk.delete(status_url)
    assert response.status_code == 202
    assert bulk.get(status_url).status_code == 404
    assert bulk.delete(status_url).status_code == 404
    # a completed export can be deleted too; its files go with it
    manifest = run_export(bulk, "/$export", {"_type": "Patient"})
    url = manifest["output"][0]["url"]
    status_url = url.split("/bulk-files/")[0] + "/bulk-status/" + url.split("/bulk-files/")[1].split("/")[0]
    assert bulk.delete(status_url).status_code == 202
    assert bulk.get(url).status_code == 404


def test_polling_too_fast_is_throttled(bulk, engine) -> None:  # noqa: ANN001
    from fhirlake.jobs import queue

    with engine.begin() as conn:  # a job no worker will take (unknown kind stays queued briefly)
        job_id = queue.enqueue(conn, "export-paused", {"request_url": "x"})
        conn.execute(text("UPDATE job SET kind = 'export', status = 'running', worker_id = 'nobody',"
                          " heartbeat_at = now() + interval '1 hour' WHERE id = :id"), {"id": job_id})
    try:
        first = bulk.get(f"/bulk-status/{job_id}")
        second = bulk.get(f"/bulk-status/{job_id}")
        assert first.status_code == 202 and first.headers["Retry-After"]
        assert second.status_code == 429 and second.headers["Retry-After"]
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM job WHERE id = :id"), {"id": job_id})


def test_concurrency_limit_answers_429(bulk, engine, bulk_server) -> None:  # noqa: ANN001
    limit = bulk_server.settings.export_max_concurrent
    with engine.begin() as conn:
        ids = [str(r[0]) for r in conn.execute(text(
            "INSERT INTO job (id, kind, status, params, worker_id, heartbeat_at)"
            " SELECT gen_random_uuid(), 'export', 'running', '{}', 'nobody', now() + interval '1 hour'"
            " FROM generate_series(1, :n) RETURNING id"), {"n": limit})]
    try:
        response = bulk.get("/$export")
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM job WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})


def test_patient_and_group_exports_list_deletions_in_their_compartments(bulk, engine) -> None:  # noqa: ANN001
    member, other = sorted(_patients_with_encounters(engine))[-2:]
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{member}"}}]}
    created = bulk.post("/Group", json=group, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    group_id = created.json()["id"]
    with engine.connect() as conn:
        def an_encounter_of(patient: str) -> str:
            return conn.execute(text(
                "SELECT r.res_id FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
                " WHERE r.res_type = 'Encounter' AND NOT r.deleted AND v.content::jsonb -> 'subject' ->> 'reference'"
                " = :ref LIMIT 1"), {"ref": f"Patient/{patient}"}).scalar_one()
        mine, theirs = an_encounter_of(member), an_encounter_of(other)
    since = run_export(bulk, "/$export", {"_type": "Organization"})["transactionTime"]
    time.sleep(0.01)
    for encounter in (mine, theirs):
        assert bulk.delete(f"/Encounter/{encounter}").status_code in (200, 204)

    def deletions(path: str) -> set[str]:
        manifest = run_export(bulk, path, {"_since": since, "_type": "Encounter,Patient"})
        return {e["request"]["url"] for b in download_bundles(bulk, manifest) for e in b["entry"]}

    assert deletions(f"/Group/{group_id}/$export") == {f"Encounter/{mine}"}
    assert deletions("/Patient/$export") == {f"Encounter/{mine}", f"Encounter/{theirs}"}
    assert deletions("/$export") >= {f"Encounter/{mine}", f"Encounter/{theirs}"}
