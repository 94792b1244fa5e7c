"""SMART Backend Services token endpoint logic (client_credentials + private_key_jwt), HTTP-free.

Checks, in order (https://hl7.org/fhir/smart-app-launch/backend-services.html):
grant and assertion types; the assertion's header (RS384 or ES384 only); the client (``iss``)
is registered; the signature against the client's registered JWKS; ``iss`` = ``sub`` = client id,
``aud`` = this token endpoint's URL, ``exp`` present and at most five minutes ahead, ``jti``
present and never seen before (``auth_jti``, insert-or-fail; expired rows pruned); then the
granted scopes = requested ∩ registered, refused with ``invalid_scope`` when nothing remains.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import Engine, text

from fhirlake.auth.authenticator import Authenticator
from fhirlake.auth.clients import ClientRegistry
from fhirlake.auth.scopes import format_scopes, intersect_scopes, parse_scopes

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = frozenset({"RS384", "ES384"})
_MAX_ASSERTION_LENGTH = 16 * 1024


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, client_id: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.client_id = client_id

    @property
    def status(self) -> int:
        return 401 if self.error == "invalid_client" else 400

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class TokenGrant:
    client_id: str
    scope: str
    body: dict[str, Any]


class TokenService:
    def __init__(
        self, authenticator: Authenticator, engine: Engine, registry: ClientRegistry | None = None
    ) -> None:
        self.authenticator = authenticator
        self.config = authenticator.config
        self.engine = engine
        self.registry = registry or ClientRegistry(
            engine, self.config.jwks_cache_seconds, self.config.jwks_min_refresh_seconds
        )

    def issue(self, form: Mapping[str, str], token_url: str) -> TokenGrant:
        """Handle one token request; raises OAuthError. ``token_url`` is this endpoint's public URL."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        if not assertion or len(assertion) > _MAX_ASSERTION_LENGTH:
            raise OAuthError("invalid_request", "client_assertion is required")
        if not form.get("scope", "").strip():
            raise OAuthError("invalid_scope", "scope is required")
        claims = self._verify_assertion(assertion, token_url)
        client_id = claims["iss"]
        client = self.registry.get(client_id)
        assert client is not None  # checked in _verify_assertion
        # the assertion is spent once verified, whatever happens next: it can never be replayed
        self._consume_jti(client_id, claims["jti"], int(claims["exp"]))
        granted = intersect_scopes(parse_scopes(form["scope"]), parse_scopes(client.scope))
        if not granted:
            raise OAuthError(
                "invalid_scope", "none of the requested scopes is registered for this client", client_id
            )
        scope = format_scopes(granted)
        token, lifetime = self.authenticator.issue_access_token(client_id, scope)
        body = {"access_token": token, "token_type": "bearer", "expires_in": lifetime, "scope": scope}
        return TokenGrant(client_id=client_id, scope=scope, body=body)

    def _verify_assertion(self, assertion: str, token_url: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", "client_assertion is not a valid JWT") from exc
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise OAuthError("invalid_client", "client_assertion lacks iss")
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise OAuthError(
                "invalid_client", "client_assertion must be signed with RS384 or ES384", client_id
            )
        client = self.registry.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client", client_id)
        kid = header.get("kid")
        keys = self.registry.key_set(client).find(kid if isinstance(kid, str) else None, alg)
        if not keys:
            raise OAuthError(
                "invalid_client", "no registered key matches the assertion's kid and algorithm", client_id
            )
        leeway = self.config.leeway_seconds
        last_error: OAuthError | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    assertion,
                    key.key,
                    algorithms=[alg],
                    audience=token_url,
                    issuer=client_id,
                    leeway=leeway,
                    options={"require": ["exp", "iss", "sub", "aud", "jti"]},
                )
                break
            except jwt.InvalidSignatureError as exc:
                last_error = OAuthError("invalid_client", "client_assertion signature is invalid", client_id)
                last_error.__cause__ = exc
            except jwt.ExpiredSignatureError as exc:
                raise OAuthError("invalid_client", "client_assertion expired", client_id) from exc
            except jwt.ImmatureSignatureError as exc:
                raise OAuthError("invalid_client", "client_assertion not yet valid", client_id) from exc
            except jwt.InvalidAudienceError as exc:
                raise OAuthError(
                    "invalid_client", "client_assertion aud must be this token endpoint's URL", client_id
                ) from exc
            except jwt.MissingRequiredClaimError as exc:
                raise OAuthError(
                    "invalid_client", f"client_assertion lacks the {exc.claim} claim", client_id
                ) from exc
            except jwt.PyJWTError as exc:
                raise OAuthError("invalid_client", "client_assertion is invalid", client_id) from exc
        else:
            assert last_error is not None
            raise last_error
        if claims.get("sub") != client_id:
            raise OAuthError(
                "invalid_client", "client_assertion sub must equal iss (the client id)", client_id
            )
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp > time.time() + self.config.assertion_max_seconds + leeway:
            raise OAuthError(
                "invalid_client", "client_assertion exp must be at most five minutes ahead", client_id
            )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise OAuthError("invalid_client", "client_assertion jti must be a non-empty string", client_id)
        return claims

    def _consume_jti(self, client_id: str, jti: str, exp: int) -> None:
        # kept until exp + leeway: after that the assertion is refused as expired anyway
        expires = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=self.config.leeway_seconds)
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM auth_jti WHERE expires_at < now()"))
            fresh = conn.execute(
                text(
                    "INSERT INTO auth_jti (client_id, jti, expires_at) VALUES (:c, :j, :e)"
                    " ON CONFLICT DO NOTHING RETURNING 1"
                ),
                {"c": client_id, "j": jti, "e": expires},
            ).first()
        if fresh is None:
            raise OAuthError("invalid_client", "client_assertion jti has already been used", client_id)
