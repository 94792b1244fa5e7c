"""$validate at type and instance level."""

from __future__ import annotations

import httpx

from tests.api.helpers import FHIR_JSON, create, patient


def test_validate_type_level(client: httpx.Client) -> None:
    ok = client.post("/Patient/$validate", json=patient(), headers=FHIR_JSON)
    assert ok.status_code == 200
    assert [i["severity"] for i in ok.json()["issue"]] == ["information"]
    bad = client.post("/Patient/$validate", json={**patient(), "birthDate": "1-2-3", "foo": 1}, headers=FHIR_JSON)
    assert bad.status_code == 200
    issues = bad.json()["issue"]
    assert {i["expression"][0] for i in issues if i["severity"] == "error"} >= {"Patient.birthDate", "Patient.foo"}


def test_validate_parameters_and_instance(client: httpx.Client) -> None:
    p = create(client, patient())
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": p},
                                                          {"name": "mode", "valueCode": "update"}]}
    r = client.post(f"/Patient/{p['id']}/$validate", json=params, headers=FHIR_JSON)
    assert r.status_code == 200 and r.json()["issue"][0]["severity"] == "information"
    wrong = client.post("/Patient/other-id/$validate", json=p, headers=FHIR_JSON)
    assert wrong.json()["issue"][0]["severity"] == "error"
    assert client.post("/Patient/$validate", json={"resourceType": "Observation"}, headers=FHIR_JSON
                       ).json()["issue"][0]["severity"] == "error"
    assert client.post("/Unicorn/$validate", json={"resourceType": "Unicorn"}, headers=FHIR_JSON).status_code == 404
