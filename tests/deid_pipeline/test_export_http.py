"""De-identified $export over HTTP: kick-off, polling, manifest, every file, leak scan, joins."""

from __future__ import annotations

import io

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from fhirlake.jobs.export.deid import MANIFEST_EXTENSION_URL
from tests.deid_pipeline.conftest import MSFT, wait_for
from tests.deid_pipeline.leaks import birth_dates, identifying_values, leaks, person_records, read_ndjson


def _export(client: httpx.Client, params: dict, path: str = "/$export", headers: dict | None = None) -> dict:
    kick = client.get(path, params=params, headers=headers or {})
    assert kick.status_code == 202, kick.text
    response = wait_for(client, kick.headers["Content-Location"], headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def _files(client: httpx.Client, manifest: dict, key: str = "output", headers: dict | None = None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in manifest[key]:
        response = client.get(item["url"], headers=headers or {})
        assert response.status_code == 200
        out[item["url"].rsplit("/", 1)[1]] = response.content
    return out


def _resources(files: dict[str, bytes]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for content in files.values():
        for line in content.splitlines():
            resource = orjson.loads(line)
            out.setdefault(resource["resourceType"], []).append(resource)
    return out


def _input() -> list[dict]:
    return [r for f in sorted(MSFT.glob("*.ndjson.gz")) for r in read_ndjson(f)]


@pytest.fixture(scope="module")
def source() -> list[dict]:
    return _input()


def test_safe_harbor_export_has_no_identifier_and_joins(bulk, with_key, source) -> None:  # noqa: ANN001
    manifest = _export(bulk, {"_deidentify": "safe-harbor"})
    assert manifest["extension"] == {MANIFEST_EXTENSION_URL: "safe-harbor"}
    assert manifest["error"] == []
    files = _files(bulk, manifest)
    output = b"".join(files.values())
    # every stored resource was exported, and the counts in the manifest are right
    assert sum(item["count"] for item in manifest["output"]) == len(source) == output.count(b"\n")
    secrets = identifying_values(source)
    assert len(secrets) > 50  # the scanner found what to look for
    assert leaks(secrets, output) == []
    assert leaks(birth_dates(source), person_records(output)) == []
    assert all(len(p["birthDate"]) == 4 for p in _resources(files)["Patient"])  # year only
    got = _resources(files)
    original_ids = {r["id"] for r in source}
    patient_ids = {p["id"] for p in got["Patient"]}
    assert len(patient_ids) == len([r for r in source if r["resourceType"] == "Patient"])
    assert not patient_ids & original_ids  # pseudonyms, not the stored ids
    assert all(len(i) == 64 for i in patient_ids)  # HMAC-SHA256, hex
    subjects = {o["subject"]["reference"] for o in got["Observation"]}
    assert subjects and {s.split("/", 1)[1] for s in subjects} <= patient_ids
    assert not any(original in output.decode() for original in original_ids)
    assert all("text" not in r for rs in got.values() for r in rs)  # narrative removed


def test_plain_export_of_same_data_is_untouched(bulk, with_key, deid_engine, source) -> None:  # noqa: ANN001
    manifest = _export(bulk, {"_type": "Patient"})
    assert "extension" not in manifest
    files = _files(bulk, manifest)
    with deid_engine.connect() as conn:
        stored = {row[0] for row in conn.execute(text(
            "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE r.res_type = 'Patient' AND NOT r.deleted"))}
    assert set(b"".join(files.values()).decode().splitlines()) == stored  # byte for byte as stored
    assert leaks(identifying_values(source), b"".join(files.values()))  # identifiers are there


def test_alias_and_limited_data_set_and_patient_level(bulk, with_key, source) -> None:  # noqa: ANN001
    manifest = _export(bulk, {"_anonymizationConfig": "limited-data-set", "_type": "Patient,Encounter"},
                       path="/Patient/$export")
    assert manifest["extension"] == {MANIFEST_EXTENSION_URL: "limited-data-set"}
    got = _resources(_files(bulk, manifest))
    assert set(got) == {"Patient", "Encounter"}
    names = {n.get("family") for r in source if r["resourceType"] == "Patient" for n in r["name"]}
    output_names = [n for p in got["Patient"] for n in p.get("name", [])]
    assert names and not any("family" in n or "given" in n for n in output_names)  # only name.use may stay
    # the limited data set keeps dates: birth dates are the real ones
    assert {p["birthDate"] for p in got["Patient"]} == {r["birthDate"] for r in source if r["resourceType"] == "Patient"}


def test_same_pseudonyms_across_exports_and_formats(bulk, with_key) -> None:  # noqa: ANN001
    ndjson = _resources(_files(bulk, _export(bulk, {"_deidentify": "safe-harbor", "_type": "Patient"})))
    manifest = _export(bulk, {"_deidentify": "safe-harbor", "_type": "Patient", "_outputFormat": "parquet"})
    assert manifest["extension"] == {MANIFEST_EXTENSION_URL: "safe-harbor"}
    (content,) = _files(bulk, manifest).values()
    table = pq.read_table(io.BytesIO(content))
    rows = table.to_pylist()
    assert {r["id"] for r in rows} == {p["id"] for p in ndjson["Patient"]}
    assert all(orjson.loads(r["resource"])["id"] == r["id"] for r in rows)
    by_id = {p["id"]: p for p in ndjson["Patient"]}
    assert all(orjson.loads(r["resource"]) == by_id[r["id"]] for r in rows)  # same dates, same everything


def test_elements_apply_after_deidentification(bulk, with_key) -> None:  # noqa: ANN001
    full = _resources(_files(bulk, _export(bulk, {"_deidentify": "safe-harbor", "_type": "Observation"})))
    manifest = _export(bulk, {"_deidentify": "safe-harbor", "_type": "Observation",
                              "_elements": "Observation.effective", "outputCompression": "gzip"})
    subset = _resources(_files(bulk, manifest))
    by_id = {o["id"]: o for o in full["Observation"]}
    assert len(subset["Observation"]) == len(by_id)
    for obs in subset["Observation"]:
        # same pseudonym and the same shifted date as without _elements (offset from the subject)
        assert obs["effectiveDateTime"] == by_id[obs["id"]]["effectiveDateTime"]
        assert "subject" not in obs and "status" in obs  # status is mandatory, subject was not asked for
        assert "SUBSETTED" in {t["code"] for t in obs["meta"]["tag"]}


def test_unknown_profile_is_400_naming_it(bulk, with_key) -> None:  # noqa: ANN001
    for name in ("_deidentify", "_anonymizationConfig"):
        response = bulk.get("/$export", params={name: "hipaa-lite"})
        assert response.status_code == 400
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "hipaa-lite" in outcome["issue"][0]["diagnostics"]
        assert "safe-harbor" in outcome["issue"][0]["diagnostics"]
    two = bulk.get("/$export", params=[("_deidentify", "safe-harbor"), ("_anonymizationConfig", "limited-data-set")])
    assert two.status_code == 400
    # lenient handling drops unknown parameters, but never a de-identification it cannot honour
    lenient = bulk.get("/$export", params={"_deidentify": "hipaa-lite"},
                       headers={"Prefer": "respond-async, handling=lenient"})
    assert lenient.status_code == 400 and "hipaa-lite" in lenient.json()["issue"][0]["diagnostics"]


def test_post_parameters_alias(bulk, with_key) -> None:  # noqa: ANN001
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_anonymizationConfig", "valueString": "safe-harbor"}, {"name": "_type", "valueString": "Patient"}]}
    kick = bulk.post("/$export", json=body, headers={"Content-Type": "application/fhir+json"})
    assert kick.status_code == 202, kick.text
    manifest = wait_for(bulk, kick.headers["Content-Location"]).json()
    assert manifest["extension"] == {MANIFEST_EXTENSION_URL: "safe-harbor"}
    patients = _resources(_files(bulk, manifest))["Patient"]
    assert patients and all("name" not in p or all("family" not in n for n in p["name"]) for p in patients)


def test_missing_key_is_refused_at_kickoff(bulk, without_key, deid_engine) -> None:  # noqa: ANN001
    with deid_engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM job")).scalar()
    response = bulk.get("/$export", params={"_deidentify": "safe-harbor"})
    assert response.status_code == 400
    message = response.json()["issue"][0]["diagnostics"]
    assert "FHIRLAKE_DEID_KEY" in message and "not available" in message
    with deid_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job")).scalar() == before  # no job was queued


def test_worker_without_key_fails_the_job_and_writes_nothing(bulk, without_key, deid_engine, deid_server) -> None:  # noqa: ANN001
    from fhirlake.jobs import queue
    from fhirlake.jobs.export.params import parse_export
    from fhirlake.jobs.export.runner import job_folder

    req = parse_export([("_deidentify", "safe-harbor"), ("_type", "Patient")], level="system",
                       request_url=f"{deid_server.url}/$export", base_url=deid_server.url)
    assert "FHIRLAKE_DEID_KEY" not in orjson.dumps(req.to_json()).decode()
    with deid_engine.begin() as conn:  # as if a server with a key had accepted it
        job_id = queue.enqueue(conn, "export", req.to_json())
    response = wait_for(bulk, f"/bulk-status/{job_id}")
    assert response.status_code == 500
    assert "de-identification is not possible on this worker" in response.json()["issue"][0]["diagnostics"]
    folder = job_folder(deid_server.settings, job_id)
    assert not any(p.is_file() for p in __import__("pathlib").Path(folder).rglob("*"))
