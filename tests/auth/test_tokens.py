"""Bearer token verification against JWKS served from a file and from a local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from fhirlake.auth import AuthConfig, Authenticator, AuthError
from fhirlake.auth.keys import ServerKey

from .conftest import JwksServer, SigningKey, jwks_of, now

ISSUER = "https://idp.example.org/realms/fhir"
AUDIENCE = "https://fhir.example.org/r4"
SERVER_KEY = ServerKey.generate()


def claims(**overrides: object) -> dict:
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "azp": "app-1",
        "exp": now() + 300,
        "iat": now(),
        "scope": "openid launch/patient patient/Observation.rs",
        "patient": "p1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def make_auth(jwks: str | None, **config: object) -> Authenticator:
    options = {"enabled": True, "issuer": ISSUER, "jwks": jwks, "audience": AUDIENCE, **config}
    return Authenticator(AuthConfig(**options), server_key=SERVER_KEY)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def rsa_key() -> SigningKey:
    return SigningKey.rsa("RS256")


@pytest.fixture
def file_auth(rsa_key: SigningKey, tmp_path: Path) -> Authenticator:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(rsa_key, SigningKey.ec("ES384"))))
    return make_auth(str(path))


def test_valid_token_from_file_jwks(file_auth: Authenticator, rsa_key: SigningKey) -> None:
    ctx = file_auth.authenticate("Bearer " + rsa_key.sign(claims()))
    assert (ctx.client_id, ctx.user_id, ctx.patient_id) == ("app-1", "user-1", "p1")
    assert ctx.allows("search", "Observation") and not ctx.allows("search", "Condition")
    assert "Bearer" not in repr(ctx) and "eyJ" not in repr(ctx)  # the token is not kept in the context


@pytest.mark.parametrize("alg", ["RS256", "RS384", "ES256", "ES384"])
def test_each_allowed_algorithm_via_url(jwks_server: JwksServer, alg: str) -> None:
    key = SigningKey.rsa(alg) if alg.startswith("RS") else SigningKey.ec(alg)
    jwks_server.document = jwks_of(key)
    auth = make_auth(jwks_server.url + "/jwks")
    ctx = auth.authenticate(
        "Bearer " + key.sign(claims(scope="user/*.read", patient=None, fhirUser="Practitioner/7"))
    )
    assert ctx.user_id == "Practitioner/7" and ctx.patient_id is None and ctx.allows("read", "Patient")


BAD_TOKENS = {
    "expired": (lambda k: k.sign(claims(exp=now() - 120)), "expired"),
    "not yet valid": (lambda k: k.sign(claims(nbf=now() + 120)), "not yet valid"),
    "wrong issuer": (lambda k: k.sign(claims(iss="https://evil.example.org")), "issuer"),
    "no issuer": (lambda k: k.sign(claims(iss=None)), "issuer"),
    "wrong audience": (lambda k: k.sign(claims(aud="https://other.example.org")), "audience"),
    "no audience": (lambda k: k.sign(claims(aud=None)), "aud"),
    "no expiry": (lambda k: k.sign(claims(exp=None)), "exp"),
    "wrong key, same kid": (lambda k: SigningKey.rsa("RS256", kid=k.kid).sign(claims()), "signature"),
    "unknown kid": (lambda k: SigningKey.rsa("RS256").sign(claims()), "no known key"),
    "RS512": (
        lambda k: jwt.encode(claims(), k.private, algorithm="RS512", headers={"kid": k.kid}),
        "algorithm",
    ),
    "PS256": (
        lambda k: jwt.encode(claims(), k.private, algorithm="PS256", headers={"kid": k.kid}),
        "algorithm",
    ),
    "garbage": (lambda k: "not.a.jwt", "malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_refused(file_auth: Authenticator, rsa_key: SigningKey, case: str) -> None:
    make, message = BAD_TOKENS[case]
    with pytest.raises(AuthError) as info:
        file_auth.authenticate("Bearer " + make(rsa_key))
    assert message in info.value.description
    assert 'error="invalid_token"' in info.value.www_authenticate()


def test_small_leeway_accepts_clock_skew(file_auth: Authenticator, rsa_key: SigningKey) -> None:
    assert (
        file_auth.authenticate("Bearer " + rsa_key.sign(claims(exp=now() - 5, nbf=now() + 5))).patient_id
        == "p1"
    )


def test_alg_none_refused(file_auth: Authenticator, rsa_key: SigningKey) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": rsa_key.kid}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(AuthError, match="algorithm"):
        file_auth.authenticate("Bearer " + token)


def _hs256_with(secret: bytes, kid: str) -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims(scope="system/*.*")).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_hs256_signed_with_public_key_refused(
    file_auth: Authenticator, rsa_key: SigningKey, tmp_path: Path
) -> None:
    public_pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = _hs256_with(public_pem, rsa_key.kid)
    with pytest.raises(AuthError, match="algorithm"):
        file_auth.authenticate("Bearer " + forged)
    # even with a development secret configured, only that secret verifies HS256
    dev = make_auth(file_auth.config.jwks, dev_secret="a-long-local-development-secret-for-tests")
    with pytest.raises(AuthError, match="signature"):
        dev.authenticate("Bearer " + forged)
    good = _hs256_with(b"a-long-local-development-secret-for-tests", "dev")
    assert dev.authenticate("Bearer " + good).allows("delete", "Observation")
    with pytest.raises(AuthError):
        file_auth.authenticate("Bearer " + good)


def test_tampered_payload_refused(file_auth: Authenticator, rsa_key: SigningKey) -> None:
    header, _, signature = rsa_key.sign(claims()).split(".")
    escalated = b64(json.dumps(claims(scope="system/*.*", patient=None)).encode())
    with pytest.raises(AuthError, match="signature"):
        file_auth.authenticate(f"Bearer {header}.{escalated}.{signature}")


@pytest.mark.parametrize("header", [None, "", "   ", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    "])
def test_missing_or_wrong_scheme(file_auth: Authenticator, header: str | None) -> None:
    with pytest.raises(AuthError):
        file_auth.authenticate(header)


def test_unknown_kid_refresh_and_rotation(jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("fhirlake.auth.keys.time.monotonic", lambda: clock[0])
    old, new, stranger = SigningKey.rsa("RS384"), SigningKey.ec("ES256"), SigningKey.rsa("RS384")
    jwks_server.document = jwks_of(old)
    auth = make_auth(jwks_server.url + "/jwks", jwks_min_refresh_seconds=30)
    auth.authenticate("Bearer " + old.sign(claims()))
    assert jwks_server.requests == 1
    jwks_server.document = jwks_of(old, new)  # the issuer rotates in a new key
    clock[0] += 10
    for n in range(20):  # unknown kids within the minimum interval cause no requests
        with pytest.raises(AuthError, match="no known key"):
            auth.authenticate("Bearer " + stranger.sign(claims(jti=str(n))))
    with pytest.raises(AuthError):
        auth.authenticate("Bearer " + new.sign(claims()))
    assert jwks_server.requests == 1
    clock[0] += 21  # past the minimum interval: the unknown kid triggers one refresh
    assert auth.authenticate("Bearer " + new.sign(claims())).patient_id == "p1"
    assert jwks_server.requests == 2
    with pytest.raises(AuthError, match="no known key"):
        auth.authenticate("Bearer " + stranger.sign(claims()))
    assert jwks_server.requests == 2


def test_issuer_discovery_when_no_jwks_configured(jwks_server: JwksServer) -> None:
    key = SigningKey.ec("ES384")
    jwks_server.document = jwks_of(key)
    auth = Authenticator(
        AuthConfig(enabled=True, issuer=jwks_server.url, audience=AUDIENCE), server_key=SERVER_KEY
    )
    ctx = auth.authenticate(
        "Bearer " + key.sign(claims(iss=jwks_server.url, scp=["user/Patient.rs"], scope=None))
    )
    assert ctx.allows("search", "Patient") and not ctx.allows("search", "Observation")


def test_cached_token_still_expires(file_auth: Authenticator, rsa_key: SigningKey) -> None:
    auth = make_auth(file_auth.config.jwks, leeway_seconds=0)
    token = "Bearer " + rsa_key.sign(claims(exp=now() + 2))
    first = auth.authenticate(token)
    assert auth.authenticate(token) is first  # verified once, then served from the cache
    time.sleep(2.2)
    with pytest.raises(AuthError):
        auth.authenticate(token)


def test_builtin_tokens_round_trip(tmp_path: Path) -> None:
    config = AuthConfig(enabled=True, base_url=AUDIENCE, signing_key_path=tmp_path / "auth" / "key.pem")
    auth = Authenticator(config)
    assert (tmp_path / "auth" / "key.pem").stat().st_mode & 0o077 == 0
    token, lifetime = auth.issue_access_token("bulk-client", "system/*.rs")
    ctx = auth.authenticate("Bearer " + token)
    assert (ctx.client_id, ctx.user_id, lifetime) == ("bulk-client", None, 300)
    assert ctx.allows("export", "Patient") and not ctx.allows("create", "Patient")
    # a second process loads the same key and accepts the token
    assert Authenticator(config).authenticate("Bearer " + token).client_id == "bulk-client"
    # a token claiming the built-in issuer but signed by anyone else is refused
    forged = SigningKey.rsa("RS384", kid=auth.server_key.kid).sign(
        {"iss": config.builtin_issuer, "aud": AUDIENCE, "exp": now() + 60, "scope": "system/*.*", "sub": "x"}
    )
    with pytest.raises(AuthError, match="signature"):
        auth.authenticate("Bearer " + forged)
    es = SigningKey.ec("ES384", kid=auth.server_key.kid).sign(
        {"iss": config.builtin_issuer, "aud": AUDIENCE, "exp": now() + 60, "scope": "system/*.*", "sub": "x"}
    )
    with pytest.raises(AuthError, match="algorithm"):
        auth.authenticate("Bearer " + es)
