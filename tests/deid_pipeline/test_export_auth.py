"""With authorization on, a de-identified export needs the scope fhirlake/deid-export."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fhirlake.jobs.export.deid import MANIFEST_EXTENSION_URL
from tests.auth.conftest import SigningKey, jwks_of
from tests.conftest import start_server
from tests.deid_pipeline.conftest import wait_for

ISSUER = "https://issuer.deid.test"
AUDIENCE = "fhirlake-deid"
KEY = SigningKey.rsa("RS256")


def _headers(scope: str) -> dict[str, str]:
    now = int(time.time())
    token = KEY.sign({"iss": ISSUER, "aud": AUDIENCE, "sub": "research-app", "client_id": "research-app",
                      "scope": scope, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex})
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json", "Prefer": "respond-async"}


@pytest.fixture(scope="module")
def secured(deid_engine, deid_data_dir, deid_worker) -> Iterator[httpx.Client]:  # noqa: ANN001
    # Same data folder as the worker's server, so that the files it writes can be served here.
    jwks = deid_data_dir / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(KEY)))
    live = start_server(deid_engine, deid_data_dir, auth_enabled=True, auth_issuer=ISSUER, auth_jwks=str(jwks),
                        auth_audience=AUDIENCE, export_file_max_resources=1000)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        yield client
    live.stop()


def test_without_deid_scope_is_403(secured, with_key) -> None:  # noqa: ANN001
    headers = _headers("system/*.rs")
    refused = secured.get("/$export", params={"_deidentify": "safe-harbor"}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "deid-export" in refused.json()["issue"][0]["diagnostics"]
    alias = secured.get("/$export", params={"_anonymizationConfig": "safe-harbor"}, headers=headers)
    assert alias.status_code == 403
    # the same token may still export identified data: the scope gates de-identification only
    assert secured.get("/$export", params={"_type": "Patient"}, headers=headers).status_code == 202


def test_deid_scope_alone_grants_no_resources(secured, with_key) -> None:  # noqa: ANN001
    response = secured.get("/$export", params={"_deidentify": "safe-harbor"}, headers=_headers("fhirlake/deid-export"))
    assert response.status_code == 403


def test_with_deid_scope_the_export_runs(secured, with_key) -> None:  # noqa: ANN001
    headers = _headers("system/Patient.rs fhirlake/deid-export")
    kick = secured.get("/$export", params={"_deidentify": "safe-harbor"}, headers=headers)
    assert kick.status_code == 202, kick.text
    response = wait_for(secured, kick.headers["Content-Location"], headers=headers)
    assert response.status_code == 200, response.text
    manifest = response.json()
    assert manifest["requiresAccessToken"] is True
    assert manifest["extension"] == {MANIFEST_EXTENSION_URL: "safe-harbor"}
    assert [item["type"] for item in manifest["output"]] == ["Patient"]  # scopes still limit the types
    (item,) = manifest["output"]
    assert secured.get(item["url"]).status_code == 401
    content = secured.get(item["url"], headers=headers).content
    assert content.count(b"\n") == item["count"] > 0 and b'"family"' not in content
