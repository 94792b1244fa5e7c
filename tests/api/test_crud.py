"""create, read, vread, update, delete over a real HTTP server."""

from __future__ import annotations

import httpx

from tests.api.helpers import FHIR_JSON, create, outcome_codes, patient


def test_create_assigns_id_meta_and_headers(client: httpx.Client) -> None:
    r = client.post("/Patient", json={**patient(), "id": "client-chosen"}, headers=FHIR_JSON)
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"  # POST ignores a client id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert "Last-Modified" in r.headers


def test_read_returns_exact_stored_bytes(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient("Bytes"), headers=FHIR_JSON)
    read = client.get(f"/Patient/{created.json()['id']}")
    assert read.status_code == 200
    assert read.content == created.content
    assert read.headers["Content-Type"].startswith("application/fhir+json")


def test_update_versions_and_vread(client: httpx.Client) -> None:
    p = create(client, patient("Versioned"))
    p["gender"] = "other"
    r = client.put(f"/Patient/{p['id']}", json=p, headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["ETag"] == 'W/"2"'
    v1 = client.get(f"/Patient/{p['id']}/_history/1").json()
    v2 = client.get(f"/Patient/{p['id']}/_history/2").json()
    assert v1["gender"] == "female" and v2["gender"] == "other"
    assert client.get(f"/Patient/{p['id']}/_history/9").status_code == 404
    assert client.get(f"/Patient/{p['id']}/_history/x").status_code == 400


def test_update_as_create_with_client_id(client: httpx.Client) -> None:
    r = client.put("/Patient/my-own-id-1", json={**patient("Own"), "id": "my-own-id-1"}, headers=FHIR_JSON)
    assert r.status_code == 201
    assert client.get("/Patient/my-own-id-1").json()["name"][0]["family"] == "Own"


def test_delete_then_gone_and_recreate(client: httpx.Client) -> None:
    p = create(client, patient("Deleted"))
    r = client.delete(f"/Patient/{p['id']}")
    assert r.status_code == 200
    gone = client.get(f"/Patient/{p['id']}")
    assert gone.status_code == 410
    assert outcome_codes(gone) == ["deleted"]
    assert client.delete(f"/Patient/{p['id']}").status_code == 204  # idempotent
    assert client.get(f"/Patient/{p['id']}/_history/1").status_code == 200
    assert client.get(f"/Patient/{p['id']}/_history/2").status_code == 410
    again = client.put(f"/Patient/{p['id']}", json=p, headers=FHIR_JSON)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


def test_delete_of_an_invalid_id_is_refused_and_touches_nothing(client: httpx.Client) -> None:
    a, b = create(client, patient("CommaA")), create(client, patient("CommaB"))
    r = client.delete(f"/Patient/{a['id']},{b['id']}")
    assert r.status_code == 400 and "not a valid FHIR id" in r.text
    assert client.get(f"/Patient/{a['id']}").status_code == 200
    assert client.get(f"/Patient/{b['id']}").status_code == 200


def test_if_match_optimistic_locking(client: httpx.Client) -> None:
    p = create(client, patient("Locked"))
    stale = client.put(f"/Patient/{p['id']}", json=p, headers={**FHIR_JSON, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    ok = client.put(f"/Patient/{p['id']}", json=p, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert client.delete(f"/Patient/{p['id']}", headers={"If-Match": 'W/"1"'}).status_code == 412
    assert client.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == "2"


def test_conditional_read_headers(client: httpx.Client) -> None:
    p = create(client, patient("Cached"))
    r = client.get(f"/Patient/{p['id']}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
    r = client.get(f"/Patient/{p['id']}", headers={"If-None-Match": 'W/"0"'})
    assert r.status_code == 200
    last_modified = r.headers["Last-Modified"]
    assert client.get(f"/Patient/{p['id']}", headers={"If-Modified-Since": last_modified}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(f"/Patient/{p['id']}", headers={"If-Modified-Since": old}).status_code == 200


def test_prefer_return(client: httpx.Client) -> None:
    minimal = client.post("/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"]
    oo = client.post("/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert oo.json()["resourceType"] == "OperationOutcome"


def test_summary_and_elements_on_read(client: httpx.Client) -> None:
    p = create(client, {**patient("Subset"), "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
                        "maritalStatus": {"text": "M"}})
    summary = client.get(f"/Patient/{p['id']}", params={"_summary": "true"}).json()
    assert "name" in summary and "text" not in summary and "maritalStatus" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    data = client.get(f"/Patient/{p['id']}", params={"_summary": "data"}).json()
    assert "text" not in data and "maritalStatus" in data
    elements = client.get(f"/Patient/{p['id']}", params={"_elements": "gender"}).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert client.get(f"/Patient/{p['id']}", params={"_summary": "bogus"}).status_code == 400


def test_xml_write_and_read(client: httpx.Client) -> None:
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><name><family value="Xml"/><given value="Ann"/></name>'
           b'<gender value="female"/><birthDate value="1980-02-03"/></Patient>')
    r = client.post("/Patient", content=xml, headers={"Content-Type": "application/fhir+xml",
                                                      "Accept": "application/fhir+xml"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/fhir+xml")
    assert b'<family value="Xml"/>' in r.content
    pid = r.headers["Location"].split("/Patient/")[1].split("/")[0]
    as_json = client.get(f"/Patient/{pid}").json()
    assert as_json["name"] == [{"family": "Xml", "given": ["Ann"]}]
    assert client.get(f"/Patient/{pid}", params={"_format": "xml"}).content.startswith(b"<?xml")
    pretty = client.get(f"/Patient/{pid}", params={"_pretty": "true"}).text
    assert "\n  " in pretty


def test_metadata_lists_types_and_formats(client: httpx.Client) -> None:
    cs = client.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in cs["rest"][0]["resource"]}
    assert {"Patient", "Observation", "Bundle"} <= types and len(types) == 146
    assert "application/fhir+xml" in cs["format"]
    assert client.get("/metadata", params={"_format": "xml"}).content.startswith(b"<?xml")
