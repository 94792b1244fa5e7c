"""batch and transaction Bundles."""

from __future__ import annotations

import tarfile
from pathlib import Path

import httpx
import orjson
import pytest

from tests.api.helpers import FHIR_JSON, create, patient
from tests.conftest import SHARED


def _post_bundle(client: httpx.Client, bundle: dict, **headers: str) -> httpx.Response:
    return client.post("/", content=orjson.dumps(bundle), headers={**FHIR_JSON, **headers})


def test_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222", "resource": patient("Txn"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:oid:1.2.3.4", "resource": {"resourceType": "Organization", "name": "Org"},
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": {**patient("Org-linked"), "managingOrganization": {"reference": "urn:oid:1.2.3.4"}},
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = _post_bundle(client, bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created"] * 4
    obs_loc, pat_loc, org_loc, pat2_loc = (e["response"]["location"] for e in out["entry"])
    obs = client.get(obs_loc.split("/_history")[0]).json()
    pat_id = pat_loc.split("/Patient/")[1].split("/")[0]
    assert obs["subject"]["reference"] == f"Patient/{pat_id}"
    org_id = org_loc.split("/Organization/")[1].split("/")[0]
    assert client.get(pat2_loc.split("/_history")[0]).json()["managingOrganization"]["reference"] == \
        f"Organization/{org_id}"
    assert all(e["response"]["etag"] == 'W/"1"' and e["response"]["lastModified"] for e in out["entry"])


def test_transaction_is_atomic(client: httpx.Client) -> None:
    keep = create(client, patient("Keep"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("ShouldNotExist"), "request": {"method": "POST", "url": "Patient"},
         "fullUrl": "urn:uuid:33333333-3333-3333-3333-333333333333"},
        {"request": {"method": "DELETE", "url": f"Patient/{keep['id']}"}},
        {"resource": {**patient("Broken"), "birthDate": "not-a-date"}, "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = _post_bundle(client, bundle)
    assert r.status_code == 422
    assert "Bundle.entry[2]" in r.json()["issue"][0]["diagnostics"]
    # the delete did not happen, and no new version anywhere
    assert client.get(f"/Patient/{keep['id']}").json()["meta"]["versionId"] == "1"
    history = client.get("/Patient/_history", params={"_count": 1000}).json()
    assert not any(e.get("resource", {}).get("name", [{}])[0].get("family") == "ShouldNotExist"
                   for e in history.get("entry", []))


def test_transaction_if_match_conflict_rolls_back(client: httpx.Client) -> None:
    p = create(client, patient("Conflict"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Other"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": p, "request": {"method": "PUT", "url": f"Patient/{p['id']}", "ifMatch": 'W/"5"'}},
    ]}
    assert _post_bundle(client, bundle).status_code == 412


def test_transaction_processing_order_and_reads(client: httpx.Client) -> None:
    p = create(client, patient("Order"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{p['id']}"}},
        {"resource": {**p, "gender": "male"}, "request": {"method": "PUT", "url": f"Patient/{p['id']}"}},
    ]}
    out = _post_bundle(client, bundle).json()
    # GET is processed last, so it sees the PUT
    assert out["entry"][0]["resource"]["gender"] == "male"
    assert out["entry"][1]["response"]["status"] == "200 OK"


def test_batch_reports_failures_per_entry(client: httpx.Client) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("BatchOk"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "nope-not-a-code ", "birthDate": "x"},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
    ]}
    r = _post_bundle(client, bundle)
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    assert out["entry"][0]["response"]["status"] == "201 Created"
    assert out["entry"][1]["response"]["status"] == "422"
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["response"]["status"] == "404"
    created = out["entry"][0]["response"]["location"].split("/_history")[0]
    assert client.get(created).status_code == 200


def test_bad_bundles(client: httpx.Client) -> None:
    assert _post_bundle(client, {"resourceType": "Patient"}).status_code == 400
    assert _post_bundle(client, {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    r = _post_bundle(client, {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]})
    assert r.status_code == 400
    dup = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:44444444-4444-4444-4444-444444444444", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:44444444-4444-4444-4444-444444444444", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    assert _post_bundle(client, dup).status_code == 400


def _rewrite(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, mapping))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node


@pytest.fixture(scope="module")
def synthea_bundles(tmp_path_factory) -> list[Path]:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("bundles")
    with tarfile.open(SHARED / "synthea" / "msft-anonymization-samples-r4" / "bundles.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    files = sorted(folder.rglob("*.json"))
    # hospital and practitioner bundles first: patients' bundles refer to them
    return sorted(files, key=lambda p: 0 if "Information" in p.name else 1)


def test_load_synthea_transactions_and_read_back_exactly(client: httpx.Client, synthea_bundles: list[Path]) -> None:
    loaded = 0
    for path in synthea_bundles:
        # urn:uuid references resolve within their own bundle only (the spec's rule)
        local_map: dict[str, str] = {}
        bundle = orjson.loads(path.read_bytes())
        r = _post_bundle(client, bundle)
        assert r.status_code == 200, (path.name, r.text[:500])
        out = r.json()["entry"]
        assert len(out) == len(bundle["entry"])
        for sent, got in zip(bundle["entry"], out, strict=True):
            location = got["response"]["location"]
            type_and_id = location.split("/_history")[0].rsplit("/", 2)[-2:]
            local_map[sent["fullUrl"]] = "/".join(type_and_id)
        for sent, got in zip(bundle["entry"], out, strict=True):
            url = got["response"]["location"].split("/_history")[0]
            read = client.get(url)
            assert read.status_code == 200
            stored = read.json()
            expected = _rewrite(sent["resource"], local_map)
            expected["id"] = url.rsplit("/", 1)[1]
            meta = stored.pop("meta")
            assert meta["versionId"] == "1"
            expected.pop("meta", None)
            assert stored == expected
            # the bytes served are the bytes stored: a second read is identical
            assert client.get(url).content == read.content
            loaded += 1
    assert loaded == 5298
