"""Small helpers for API tests."""

from __future__ import annotations

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def create(client: httpx.Client, resource: dict) -> dict:
    r = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()


def outcome_codes(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [i["code"] for i in body["issue"]]


def patient(family: str = "Doe", **extra: object) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Jane"]}], "gender": "female",
            "birthDate": "1970-01-01", **extra}
