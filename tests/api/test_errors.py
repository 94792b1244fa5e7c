"""Bad input answers with a specific OperationOutcome and never changes stored data."""

from __future__ import annotations

import httpx

from tests.api.helpers import FHIR_JSON, create, outcome_codes, patient


def test_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post("/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON)
    assert r.status_code == 400
    assert outcome_codes(r) == ["structure"]


def test_malformed_xml_is_400(client: httpx.Client) -> None:
    r = client.post("/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'><name>",
                    headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400


def test_xml_entity_expansion_refused(client: httpx.Client) -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b'<Patient xmlns="http://hl7.org/fhir"><gender value="&lol2;"/></Patient>')
    r = client.post("/Patient", content=bomb, headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400


def test_unknown_type_is_404(client: httpx.Client) -> None:
    assert client.get("/Patientx/1").status_code == 404
    r = client.post("/Unicorn", json={"resourceType": "Unicorn"}, headers=FHIR_JSON)
    assert r.status_code == 404
    assert outcome_codes(r) == ["not-supported"]


def test_type_mismatch_and_id_mismatch(client: httpx.Client) -> None:
    r = client.post("/Patient", json={"resourceType": "Observation"}, headers=FHIR_JSON)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["resourceType"]
    p = create(client, patient())
    r = client.put(f"/Patient/{p['id']}", json={**p, "id": "other"}, headers=FHIR_JSON)
    assert r.status_code == 400
    r = client.put(f"/Patient/{p['id']}", json={k: v for k, v in p.items() if k != "id"}, headers=FHIR_JSON)
    assert r.status_code == 400


def test_invalid_resource_is_422_with_expression_and_nothing_stored(client: httpx.Client) -> None:
    p = create(client, patient("Untouched"))
    bad = {**p, "birthDate": "1970-13-45"}
    r = client.put(f"/Patient/{p['id']}", json=bad, headers=FHIR_JSON)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    r = client.put(f"/Patient/{p['id']}", json={**p, "colour": "blue"}, headers=FHIR_JSON)
    assert r.status_code == 422
    current = client.get(f"/Patient/{p['id']}").json()
    assert current["meta"]["versionId"] == "1" and current["birthDate"] == "1970-01-01"


def test_unsupported_media_type_is_415(client: httpx.Client) -> None:
    r = client.post("/Patient", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert client.get("/metadata", params={"_format": "text/csv"}).status_code == 415


def test_method_not_allowed_is_405_outcome(client: httpx.Client) -> None:
    r = client.delete("/metadata")
    assert r.status_code == 405
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.put("/", json={}).status_code == 405


def test_request_too_large_is_413(client: httpx.Client, server) -> None:  # noqa: ANN001
    limit = server.settings.max_request_bytes
    big = b'{"resourceType":"Patient","name":[{"text":"' + b"a" * (limit + 10) + b'"}]}'
    r = client.post("/Patient", content=big, headers=FHIR_JSON)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_deep_nesting_refused(client: httpx.Client) -> None:
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = client.post("/Patient", content=deep, headers=FHIR_JSON)
    assert r.status_code == 400


def test_invalid_ids(client: httpx.Client) -> None:
    bad_id = "a" * 65
    r = client.put(f"/Patient/{bad_id}", json={**patient(), "id": bad_id}, headers=FHIR_JSON)
    assert r.status_code == 400
    r = client.put("/Patient/x", json=patient(), headers={**FHIR_JSON, "If-Match": "banana"})
    assert r.status_code == 400


def test_nul_in_url_is_400_not_a_server_error(client: httpx.Client) -> None:
    for path in ("/Patient/abc%00def", "/Patient/abc%00def/_history/1", "/Patient?name=a%00b",
                 "/Patient?na%00me=x", "/Patient/abc%00def/_history"):
        r = client.get(path)
        assert r.status_code == 400, path
        assert outcome_codes(r) == ["invalid"]
    r = client.post("/Patient/_search", data={"name": "a\x00b"})
    assert r.status_code in (400,), r.text


def test_nul_in_resource_strings_is_400_naming_the_element(client: httpx.Client) -> None:
    r = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "a\u0000b"}]}, headers=FHIR_JSON)
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["name[0].family"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male\u0000"}, "request": {"method": "POST", "url": "Patient"}}]}
    assert client.post("/", json=bundle, headers=FHIR_JSON).status_code == 400
    # a literal backslash-u in text is ordinary content
    ok = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]}, headers=FHIR_JSON)
    assert ok.status_code == 201
    assert client.get(f"/Patient/{ok.json()['id']}").json()["name"][0]["family"] == "a\\u0000b"
