"""SMART authorization through the whole server: a patient-context token against every path.

Tokens are minted here with the tests' own RSA key and verified by the server against a JWKS file.
The store is loaded with the sample Synthea patients; token A may see patient A only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from fhirlake.services.loader import SAMPLE_DIR, iter_ndjson, load_folder
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade
from tests.auth.conftest import SigningKey, jwks_of
from tests.conftest import PG_SERVER, create_database, drop_database, start_server

ISSUER = "https://issuer.example.test"
AUDIENCE = "fhirlake-e2e"
KEY = SigningKey.rsa("RS256")


def token(scope: str, patient: str | None = None, client: str = "app-1", **extra: object) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": client, "client_id": client, "scope": scope,
              "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, **extra}
    if patient:
        claims["patient"] = patient
    return KEY.sign(claims)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[httpx.Client]:  # noqa: ANN001
    # A database of its own: the assertions count exactly what one patient may see.
    name = create_database("fhirlake_security")
    engine = make_engine(f"{PG_SERVER}/{name}")
    upgrade(engine)
    load_folder(engine, SAMPLE_DIR)
    data_dir: Path = tmp_path_factory.mktemp("secure")
    jwks = data_dir / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(KEY)))
    live = start_server(engine, data_dir, auth_enabled=True, auth_issuer=ISSUER, auth_jwks=str(jwks),
                        auth_audience=AUDIENCE)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            yield c
    finally:
        live.stop()
        engine.dispose()
        drop_database(name)


@pytest.fixture(scope="module")
def patients() -> tuple[str, str]:
    ids = [p["id"] for p in iter_ndjson(SAMPLE_DIR / "Patient.ndjson.gz")]
    return ids[0], ids[1]


def _observation_of(patient_id: str) -> str:
    for obs in iter_ndjson(SAMPLE_DIR / "Observation.ndjson.gz"):
        if obs["subject"]["reference"] == f"Patient/{patient_id}":
            return obs["id"]
    raise AssertionError("no observation")


def _subjects(bundle: dict) -> set[str]:
    out = set()
    for e in bundle.get("entry", []):
        r = e["resource"]
        if r["resourceType"] == "Patient":
            out.add(r["id"])
        for key in ("subject", "patient"):
            if isinstance(r.get(key), dict):
                out.add(r[key]["reference"].split("/")[-1])
    return out


def test_missing_and_invalid_tokens_are_401(secured: httpx.Client) -> None:
    r = secured.get("/Patient")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert r.json()["resourceType"] == "OperationOutcome"
    other = SigningKey.rsa("RS256", kid=KEY.kid)
    forged = other.sign({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "scope": "system/*.read",
                         "exp": int(time.time()) + 60})
    assert secured.get("/Patient", headers=bearer(forged)).status_code == 401
    expired = KEY.sign({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "scope": "system/*.read",
                        "exp": int(time.time()) - 600})
    assert secured.get("/Patient", headers=bearer(expired)).status_code == 401
    assert secured.get("/metadata").status_code == 200  # discovery stays public
    assert secured.get("/.well-known/smart-configuration").status_code == 200


def test_scope_without_type_is_403(secured: httpx.Client, patients: tuple[str, str]) -> None:
    tok = token("system/Observation.rs")
    r = secured.get(f"/Patient/{patients[0]}", headers=bearer(tok))
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    assert secured.get("/Observation", params={"_count": 1}, headers=bearer(tok)).status_code == 200
    write = secured.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                               "code": {"text": "x"}},
                         headers={**bearer(tok), "Content-Type": "application/fhir+json"})
    assert write.status_code == 403


def test_patient_token_cannot_reach_another_patient(secured: httpx.Client, patients: tuple[str, str]) -> None:
    a, b = patients
    h = bearer(token("patient/*.rs launch/patient", patient=a))
    obs_a, obs_b = _observation_of(a), _observation_of(b)
    # read and vread
    assert secured.get(f"/Patient/{a}", headers=h).status_code == 200
    assert secured.get(f"/Patient/{b}", headers=h).status_code == 404
    assert secured.get(f"/Observation/{obs_a}", headers=h).status_code == 200
    assert secured.get(f"/Observation/{obs_b}", headers=h).status_code == 404
    assert secured.get(f"/Observation/{obs_b}/_history/1", headers=h).status_code == 404
    # search, explicit and implicit
    assert _subjects(secured.get("/Observation", params={"patient": b}, headers=h).json()) == set()
    everything = secured.get("/Observation", params={"_count": 1000, "_total": "accurate"}, headers=h).json()
    assert _subjects(everything) == {a}
    # the restriction is inside the query: the total counts only what the token may see
    assert everything["total"] == len(everything["entry"])
    # includes and revincludes
    inc = secured.get("/Observation", params={"_include": "Observation:subject", "_count": 50}, headers=h).json()
    assert _subjects(inc) == {a}
    rev = secured.get("/Patient", params={"_revinclude": "Observation:subject"}, headers=h).json()
    assert _subjects(rev) == {a}
    # chains and _has
    family_b = next(p for p in iter_ndjson(SAMPLE_DIR / "Patient.ndjson.gz") if p["id"] == b)["name"][0]["family"]
    chained = secured.get("/Observation", params={"subject:Patient.family": family_b}, headers=h).json()
    assert chained.get("entry", []) == []
    has = secured.get("/Patient", params={"_has:Observation:patient:status": "final"}, headers=h).json()
    assert _subjects(has) <= {a}
    # compartment search and $everything
    assert secured.get(f"/Patient/{b}/Observation", headers=h).json().get("entry", []) == []
    assert secured.get(f"/Patient/{b}/$everything", headers=h).status_code == 404
    assert _subjects(secured.get(f"/Patient/{a}/$everything", headers=h).json()) == {a}
    # history
    assert secured.get(f"/Patient/{b}/_history", headers=h).status_code == 404
    assert secured.get(f"/Patient/{a}/_history", headers=h).status_code == 200
    assert secured.get("/Observation/_history", headers=h).status_code == 403
    assert secured.get("/_history", headers=h).status_code == 403
    # GET inside a transaction
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{b}"}}, {"request": {"method": "GET", "url": f"Patient/{a}"}}]}
    out = secured.post("/", content=orjson.dumps(bundle),
                       headers={**h, "Content-Type": "application/fhir+json"}).json()
    assert [e["response"]["status"] for e in out["entry"]] == ["404", "200 OK"]
    # bulk export needs system scopes
    assert secured.get("/$export", headers={**h, "Prefer": "respond-async"}).status_code in (401, 403)


def test_patient_token_writes_stay_in_compartment(secured: httpx.Client, patients: tuple[str, str]) -> None:
    a, b = patients
    h = {**bearer(token("patient/*.cruds", patient=a)), "Content-Type": "application/fhir+json"}
    mine = {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
            "subject": {"reference": f"Patient/{a}"}}
    theirs = {**mine, "subject": {"reference": f"Patient/{b}"}}
    created = secured.post("/Observation", json=mine, headers=h)
    assert created.status_code == 201
    assert secured.post("/Observation", json=theirs, headers=h).status_code == 403
    moved = {**created.json(), "subject": {"reference": f"Patient/{b}"}}
    assert secured.put(f"/Observation/{moved['id']}", json=moved, headers=h).status_code == 403
    obs_b = _observation_of(b)
    assert secured.delete(f"/Observation/{obs_b}", headers=h).status_code == 404
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": mine, "request": {"method": "POST", "url": "Observation"}},
        {"resource": theirs, "request": {"method": "POST", "url": "Observation"}}]}
    assert secured.post("/", content=orjson.dumps(tx), headers=h).status_code == 403
    read_only = {**bearer(token("patient/*.rs", patient=a)), "Content-Type": "application/fhir+json"}
    assert secured.post("/Observation", json=mine, headers=read_only).status_code == 403


def test_query_restricted_scope(secured: httpx.Client, patients: tuple[str, str]) -> None:
    a, _ = patients
    h = bearer(token("patient/Observation.rs?category=laboratory patient/Patient.rs", patient=a))
    found = secured.get("/Observation", params={"_count": 500}, headers=h).json()
    cats = {c["code"] for e in found.get("entry", []) for cat in e["resource"].get("category", [])
            for c in cat.get("coding", [])}
    assert cats <= {"laboratory"}


def test_sql_injection_in_parameters_is_an_ordinary_value(secured: httpx.Client) -> None:
    h = bearer(token("system/*.rs"))
    for value in ["'; DROP TABLE resource; --", "x' OR '1'='1", "\\' UNION SELECT content FROM resource_version --"]:
        r = secured.get("/Patient", params={"family": value}, headers=h)
        assert r.status_code == 200 and r.json().get("entry", []) == []
    assert secured.get("/Patient", params={"_count": 1}, headers=h).json()["entry"]


def test_audit_trail(secured: httpx.Client, patients: tuple[str, str]) -> None:
    a, b = patients
    secured.get(f"/Patient/{b}", headers=bearer(token("patient/*.rs", patient=a, client="audited-app")))
    secured.get("/Patient", headers={"Authorization": "Bearer not-a-token"})
    auditor = bearer(token("system/AuditEvent.rs", client="auditor"))
    events = secured.get("/AuditEvent", params={"_count": 200, "_sort": "-date"}, headers=auditor)
    assert events.status_code == 200
    text_all = events.text
    assert "audited-app" in text_all
    assert "not-a-token" not in text_all  # no credentials in the audit trail
    outcomes = [e["resource"].get("outcome") for e in events.json()["entry"]]
    assert outcomes  # refused and failed requests are recorded too
    assert secured.get("/AuditEvent", headers=bearer(token("patient/*.rs", patient=a))).status_code == 403
    assert secured.post("/AuditEvent", json={"resourceType": "AuditEvent"},
                        headers={**auditor, "Content-Type": "application/fhir+json"}).status_code == 405
    first = events.json()["entry"][0]["resource"]["id"]
    assert secured.delete(f"/AuditEvent/{first}", headers=auditor).status_code == 405
