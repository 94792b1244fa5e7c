"""PATCH with JSON Patch and FHIRPath Patch."""

from __future__ import annotations

import httpx

from tests.api.helpers import create, patient

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
FHIR = {"Content-Type": "application/fhir+json"}


def _op(kind: str, path: str, **parts: object) -> dict:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        key, val = value if isinstance(value, tuple) else ("valueString", value)
        part.append({"name": name, key: val})
    return {"name": "operation", "part": part}


def _params(*ops: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(ops)}


def test_json_patch(client: httpx.Client) -> None:
    p = create(client, patient("Patchy"))
    ops = [{"op": "replace", "path": "/gender", "value": "male"},
           {"op": "add", "path": "/name/0/given/-", "value": "Second"},
           {"op": "remove", "path": "/birthDate"},
           {"op": "test", "path": "/name/0/family", "value": "Patchy"}]
    r = client.patch(f"/Patient/{p['id']}", json=ops, headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gender"] == "male" and body["name"][0]["given"] == ["Jane", "Second"]
    assert "birthDate" not in body and body["meta"]["versionId"] == "2"


def test_json_patch_failures_change_nothing(client: httpx.Client) -> None:
    p = create(client, patient("Stable"))
    failing = [{"op": "replace", "path": "/gender", "value": "male"}, {"op": "test", "path": "/gender", "value": "x"}]
    assert client.patch(f"/Patient/{p['id']}", json=failing, headers=JSON_PATCH).status_code == 422
    assert client.patch(f"/Patient/{p['id']}", json={"op": "add"}, headers=JSON_PATCH).status_code == 400
    assert client.patch(f"/Patient/{p['id']}", json=[{"op": "jump", "path": "/x"}], headers=JSON_PATCH).status_code == 400
    invalid = [{"op": "replace", "path": "/birthDate", "value": "never"}]
    assert client.patch(f"/Patient/{p['id']}", json=invalid, headers=JSON_PATCH).status_code == 422
    change_id = [{"op": "replace", "path": "/id", "value": "other"}]
    assert client.patch(f"/Patient/{p['id']}", json=change_id, headers=JSON_PATCH).status_code == 422
    assert client.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_patch_honours_if_match(client: httpx.Client) -> None:
    p = create(client, patient("Matched"))
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    assert client.patch(f"/Patient/{p['id']}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"3"'}).status_code == 412
    assert client.patch(f"/Patient/{p['id']}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'}).status_code == 200


def test_fhirpath_patch_operations(client: httpx.Client) -> None:
    p = create(client, {**patient("Fp"), "identifier": [{"system": "a", "value": "1"}, {"system": "b", "value": "2"}]})
    params = _params(
        _op("replace", "Patient.gender", value=("valueCode", "male")),
        _op("delete", "Patient.identifier.where(system='a')"),
        _op("add", "Patient", name="active", value=("valueBoolean", True)),
        _op("insert", "Patient.identifier", index=("valueInteger", 0), value=("valueIdentifier",
                                                                            {"system": "c", "value": "3"})),
        _op("delete", "Patient.birthDate"),
    )
    r = client.patch(f"/Patient/{p['id']}", json=params, headers=FHIR)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gender"] == "male" and body["active"] is True and "birthDate" not in body
    assert [i["system"] for i in body["identifier"]] == ["c", "b"]
    moved = client.patch(f"/Patient/{p['id']}", json=_params(
        _op("move", "Patient.identifier", source=("valueInteger", 0), destination=("valueInteger", 1))), headers=FHIR)
    assert [i["system"] for i in moved.json()["identifier"]] == ["b", "c"]


def test_fhirpath_patch_errors(client: httpx.Client) -> None:
    p = create(client, {**patient("FpErr"), "identifier": [{"system": "a", "value": "1"}, {"system": "b", "value": "2"}]})
    too_many = _params(_op("replace", "Patient.identifier", value=("valueIdentifier", {"value": "x"})))
    assert client.patch(f"/Patient/{p['id']}", json=too_many, headers=FHIR).status_code == 422
    bad_path = _params(_op("delete", "Patient.name.where("))
    assert client.patch(f"/Patient/{p['id']}", json=bad_path, headers=FHIR).status_code == 400
    unknown = _params(_op("frobnicate", "Patient.gender"))
    assert client.patch(f"/Patient/{p['id']}", json=unknown, headers=FHIR).status_code == 400
    assert client.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == "1"
