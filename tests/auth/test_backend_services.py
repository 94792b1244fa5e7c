"""SMART Backend Services end to end through the Flask blueprint, with real RS384/ES384 assertions."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from fhirlake.api.auth_routes import AuthServices, bp, install_auth
from fhirlake.auth.backend_services import ASSERTION_TYPE, OAuthError
from fhirlake.auth.capability import capability_security
from fhirlake.cli.clients import clients
from fhirlake.config import Settings

from .conftest import JwksServer, SigningKey, jwks_of, now

BASE = "https://fhir.example.org/r4"
TOKEN_URL = BASE + "/auth/token"


@pytest.fixture
def app(engine: Engine, tmp_path: Path) -> Iterator[tuple[FlaskClient, AuthServices]]:
    settings = Settings(base_url=BASE, data_dir=tmp_path, auth_enabled=True)
    flask_app = Flask("test")
    services = install_auth(flask_app, settings, engine)
    flask_app.register_blueprint(bp)
    yield flask_app.test_client(), services
    services.audit.close()


def register(
    services: AuthServices, scope: str, key: SigningKey | None = None, url: str | None = None
) -> str:
    client_id = "client-" + secrets.token_hex(4)
    if url:
        services.token_service.registry.add(client_id, scope, jwks_url=url)
    else:
        services.token_service.registry.add(client_id, scope, jwks=jwks_of(key))  # type: ignore[arg-type]
    return client_id


def assertion(key: SigningKey, client_id: str, **overrides: object) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now() + 240,
        "jti": secrets.token_hex(12),
    }
    claims.update(overrides)
    return key.sign({k: v for k, v in claims.items() if v is not None})


def ask(client: FlaskClient, signed: str, scope: str = "system/*.rs", **form: str) -> tuple[int, dict]:
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        "scope": scope,
        **form,
    }
    response = client.post("/auth/token", data=data)
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, response.get_json()


def test_rs384_flow_and_token_use(app: tuple[FlaskClient, AuthServices]) -> None:
    client, services = app
    key = SigningKey.rsa("RS384")
    client_id = register(services, "system/*.rs", key)
    status, body = ask(client, assertion(key, client_id), "system/*.rs")
    assert status == 200, body
    assert body["token_type"] == "bearer" and body["expires_in"] == 300 and body["scope"] == "system/*.rs"
    ctx = services.authenticator.authenticate("Bearer " + body["access_token"])
    assert ctx.client_id == client_id and ctx.patient_id is None
    assert ctx.allows("export", "Observation") and not ctx.allows("create", "Observation")
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS384" and header["kid"] == services.authenticator.server_key.kid
    jwks = client.get("/auth/jwks").get_json()
    assert jwks["keys"][0]["kid"] == header["kid"] and "d" not in jwks["keys"][0]


def test_es384_flow_with_jwks_url(app: tuple[FlaskClient, AuthServices], jwks_server: JwksServer) -> None:
    client, services = app
    key = SigningKey.ec("ES384")
    jwks_server.document = jwks_of(key)
    client_id = register(services, "system/Patient.rs system/Observation.rs", url=jwks_server.url + "/jwks")
    status, body = ask(client, assertion(key, client_id), "system/*.rs system/*.cud system/AuditEvent.rs")
    assert status == 200, body
    assert body["scope"] == "system/Patient.rs system/Observation.rs"  # never more than registered
    ctx = services.authenticator.authenticate("Bearer " + body["access_token"])
    assert ctx.allows("search", "Patient") and not ctx.allows("search", "Condition")


def _failure(app: tuple[FlaskClient, AuthServices], make, scope: str = "system/*.rs") -> tuple[int, dict]:  # noqa: ANN001
    client, services = app
    key = SigningKey.rsa("RS384")
    client_id = register(services, "system/*.rs", key)
    return ask(client, make(key, client_id), scope)


FAILURES = {
    "aud wrong": (
        lambda k, c: assertion(k, c, aud="https://other.example.org/auth/token"),
        "invalid_client",
        "aud",
    ),
    "exp too far": (lambda k, c: assertion(k, c, exp=now() + 900), "invalid_client", "five minutes"),
    "expired": (lambda k, c: assertion(k, c, exp=now() - 120), "invalid_client", "expired"),
    "no exp": (lambda k, c: assertion(k, c, exp=None), "invalid_client", "exp"),
    "no jti": (lambda k, c: assertion(k, c, jti=None), "invalid_client", "jti"),
    "sub differs": (lambda k, c: assertion(k, c, sub="someone-else"), "invalid_client", "sub"),
    "unknown client": (lambda k, c: assertion(k, "nobody", sub="nobody"), "invalid_client", "unknown client"),
    "wrong key": (
        lambda k, c: assertion(SigningKey.rsa("RS384", kid=k.kid), c),
        "invalid_client",
        "signature",
    ),
    "RS256": (
        lambda k, c: jwt.encode(
            {"iss": c, "sub": c, "aud": TOKEN_URL, "exp": now() + 60, "jti": "x"},
            k.private,
            algorithm="RS256",
            headers={"kid": k.kid},
        ),
        "invalid_client",
        "RS384 or ES384",
    ),
    "garbage": (lambda k, c: "abc.def", "invalid_client", "not a valid JWT"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_assertion_failures(app: tuple[FlaskClient, AuthServices], case: str) -> None:
    make, error, message = FAILURES[case]
    status, body = _failure(app, make)
    assert (status, body["error"]) == (401, error)
    assert message in body["error_description"]
    assert "access_token" not in body


def test_scope_escalation_and_invalid_scope(app: tuple[FlaskClient, AuthServices]) -> None:
    status, body = _failure(app, assertion, scope="user/*.rs patient/*.rs system/AuditEvent.rs")
    assert (status, body["error"]) == (400, "invalid_scope")
    status, body = _failure(app, assertion, scope="  ")
    assert (status, body["error"]) == (400, "invalid_scope")


def test_replayed_jti_refused(app: tuple[FlaskClient, AuthServices]) -> None:
    client, services = app
    key = SigningKey.ec("ES384")
    client_id = register(services, "system/*.rs", key)
    signed = assertion(key, client_id)
    assert ask(client, signed)[0] == 200
    status, body = ask(client, signed)
    assert (status, body["error"]) == (401, "invalid_client") and "already been used" in body[
        "error_description"
    ]
    # concurrent replays of one fresh assertion: exactly one wins
    fresh = assertion(key, client_id)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            services.token_service.issue(
                {
                    "grant_type": "client_credentials",
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": fresh,
                    "scope": "system/*.rs",
                },
                TOKEN_URL,
            )
            outcomes.append("ok")
        except OAuthError as exc:
            outcomes.append(exc.error)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["invalid_client"] * 5 + ["ok"]


def test_request_shape_errors(app: tuple[FlaskClient, AuthServices]) -> None:
    client, _ = app
    status, body = ask(client, "x", grant_type="authorization_code")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body = ask(client, "x", client_assertion_type="urn:other")
    assert (status, body["error"]) == (400, "invalid_request")
    response = client.post("/auth/token", json={"grant_type": "client_credentials"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_logins_are_audited_without_secrets(app: tuple[FlaskClient, AuthServices], engine: Engine) -> None:
    client, services = app
    key = SigningKey.rsa("RS384")
    client_id = register(services, "system/*.rs", key)
    signed = assertion(key, client_id)
    _, body = ask(client, signed)
    ask(client, signed)  # replay: a failed login
    with engine.connect() as conn:
        rows = (
            conn.execute(text("SELECT * FROM audit_event WHERE client_id = :c ORDER BY id"), {"c": client_id})
            .mappings()
            .all()
        )
        everything = json.dumps(
            [dict(r) for r in conn.execute(text("SELECT * FROM audit_event")).mappings()], default=str
        )
    assert [(r["interaction"], r["action"], r["outcome"]) for r in rows] == [
        ("login", "E", 200),
        ("login", "E", 401),
    ]
    assert rows[1]["source_ip"] == "127.0.0.1" and "already been used" in rows[1]["outcome_desc"]
    assert signed not in everything and body["access_token"] not in everything
    assert signed.split(".")[2] not in everything


def test_smart_configuration_and_capability(app: tuple[FlaskClient, AuthServices], tmp_path: Path) -> None:
    client, _ = app
    document = client.get("/.well-known/smart-configuration").get_json()
    assert document["token_endpoint"] == TOKEN_URL
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["ES384", "RS384"]
    assert "client-confidential-asymmetric" in document["capabilities"]
    security = capability_security(Settings(base_url=BASE, auth_enabled=True, data_dir=tmp_path))
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert uris["url"].endswith("oauth-uris") and uris["extension"][0] == {
        "url": "token",
        "valueUri": TOKEN_URL,
    }
    assert "disabled" in capability_security(Settings(data_dir=tmp_path))["description"]


def test_clients_cli(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False), data_dir=tmp_path)
    runner = CliRunner()
    key = SigningKey.ec("ES384")
    jwks_file = tmp_path / "client.jwks.json"
    jwks_file.write_text(json.dumps(jwks_of(key)))
    client_id = "cli-" + secrets.token_hex(3)

    def run(*args: str):  # noqa: ANN202
        return runner.invoke(clients, list(args), obj=settings)

    result = run("add", "--client-id", client_id, "--jwks", str(jwks_file), "--scope", "system/*.rs")
    assert result.exit_code == 0, result.output
    assert "1 key(s)" in result.output
    assert (
        run("add", "--client-id", client_id, "--jwks", str(jwks_file), "--scope", "system/*.rs").exit_code
        != 0
    )
    bad_scope = run(
        "add", "--client-id", client_id + "x", "--jwks", str(jwks_file), "--scope", "system/*.xyz"
    )
    assert bad_scope.exit_code != 0 and "invalid permissions" in bad_scope.output
    private = tmp_path / "private.jwks.json"
    from jwt.algorithms import ECAlgorithm

    private.write_text(json.dumps({"keys": [ECAlgorithm.to_jwk(key.private, as_dict=True)]}))
    refused = run("add", "--client-id", client_id + "p", "--jwks", str(private), "--scope", "system/*.rs")
    assert refused.exit_code != 0 and "private key" in refused.output
    http = run(
        "add", "--client-id", client_id + "h", "--jwks", "http://example.org/jwks", "--scope", "system/*.rs"
    )
    assert http.exit_code != 0 and "https" in http.output
    listed = run("list")
    assert listed.exit_code == 0 and client_id in listed.output and "system/*.rs" in listed.output
    assert run("remove", "--client-id", client_id).exit_code == 0
    assert client_id not in run("list").output
    assert run("remove", "--client-id", client_id).exit_code != 0
