"""Conditional create, update, delete and conditional references (they search through the index)."""

from __future__ import annotations

import uuid

import httpx
import orjson

from tests.api.helpers import FHIR_JSON, create, patient


def _ident(value: str) -> dict:
    return {"identifier": [{"system": "http://example.org/mrn", "value": value}]}


def test_conditional_create(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    first = client.post("/Patient", json={**patient(), **_ident(mrn)},
                        headers={**FHIR_JSON, "If-None-Exist": f"identifier=http://example.org/mrn|{mrn}"})
    assert first.status_code == 201
    second = client.post("/Patient", json={**patient(), **_ident(mrn)},
                         headers={**FHIR_JSON, "If-None-Exist": f"identifier=http://example.org/mrn|{mrn}"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    create(client, {**patient(), **_ident(mrn)})  # now there are two
    third = client.post("/Patient", json={**patient(), **_ident(mrn)},
                        headers={**FHIR_JSON, "If-None-Exist": f"identifier=http://example.org/mrn|{mrn}"})
    assert third.status_code == 412


def test_conditional_update(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    query = f"identifier=http://example.org/mrn|{mrn}"
    created = client.put(f"/Patient?{query}", json={**patient("CondNew"), **_ident(mrn)}, headers=FHIR_JSON)
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(f"/Patient?{query}", json={**patient("CondUpd"), **_ident(mrn)}, headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    wrong_id = client.put(f"/Patient?{query}", json={**patient(), **_ident(mrn), "id": "other"}, headers=FHIR_JSON)
    assert wrong_id.status_code == 400
    create(client, {**patient(), **_ident(mrn)})
    assert client.put(f"/Patient?{query}", json={**patient(), **_ident(mrn)}, headers=FHIR_JSON).status_code == 412


def test_conditional_delete_single_and_multiple(client: httpx.Client) -> None:
    family = "Cd" + uuid.uuid4().hex[:8]
    a = create(client, patient(family))
    b = create(client, patient(family))
    assert client.delete(f"/Patient?family={family}").status_code == 412
    assert client.get(f"/Patient/{a['id']}").status_code == 200
    r = client.delete(f"/Patient?family={family}&_multiple=true")
    assert r.status_code == 200
    assert client.get(f"/Patient/{a['id']}").status_code == 410
    assert client.get(f"/Patient/{b['id']}").status_code == 410
    assert client.delete(f"/Patient?family={family}").status_code == 204


def test_conditional_references_in_transaction(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    org = create(client, {"resourceType": "Organization", "name": "Hosp",
                          "identifier": [{"system": "http://example.org/org", "value": mrn}]})
    ok = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient(), "managingOrganization": {
            "reference": f"Organization?identifier=http://example.org/org|{mrn}"}},
         "request": {"method": "POST", "url": "Patient"}}]}
    r = client.post("/", content=orjson.dumps(ok), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    loc = r.json()["entry"][0]["response"]["location"].split("/_history")[0]
    assert client.get(loc).json()["managingOrganization"]["reference"] == f"Organization/{org['id']}"
    missing = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient(), "managingOrganization": {"reference": "Organization?identifier=none|none"}},
         "request": {"method": "POST", "url": "Patient"}}]}
    assert client.post("/", content=orjson.dumps(missing), headers=FHIR_JSON).status_code == 400
    create(client, {"resourceType": "Organization", "name": "Dup",
                    "identifier": [{"system": "http://example.org/org", "value": mrn}]})
    assert client.post("/", content=orjson.dumps(ok), headers=FHIR_JSON).status_code == 412


def test_transaction_conditional_create_and_update_entries(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001", "resource": {**patient(), **_ident(mrn)},
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier=http://example.org/mrn|{mrn}"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                      "subject": {"reference": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    first = client.post("/", content=orjson.dumps(bundle), headers=FHIR_JSON).json()
    second = client.post("/", content=orjson.dumps(bundle), headers=FHIR_JSON).json()
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert first["entry"][0]["response"]["location"] == second["entry"][0]["response"]["location"]
    obs = client.get(second["entry"][1]["response"]["location"].split("/_history")[0]).json()
    pid = first["entry"][0]["response"]["location"].split("/Patient/")[1].split("/")[0]
    assert obs["subject"]["reference"] == f"Patient/{pid}"
