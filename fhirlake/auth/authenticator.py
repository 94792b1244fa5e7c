"""Authenticator: ``Authorization: Bearer <jwt>`` -> AccessContext, or AuthError (401).

The token's (unverified) ``iss`` only chooses which keys to try; the signature, ``iss``, ``aud``,
``exp`` and ``nbf`` are then all verified by PyJWT with exactly one algorithm allowed: the one the
key was published for. ``none`` is never accepted; HS256 only with an explicit development secret.
Verified tokens are remembered (bounded, until their expiry and at most a few minutes) so that a
client sending the same token on every request pays the signature check once.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

import jwt
from sqlalchemy import Engine

from fhirlake.auth.config import AuthConfig
from fhirlake.auth.context import AccessContext
from fhirlake.auth.errors import AuthError
from fhirlake.auth.keys import ASYMMETRIC_ALGORITHMS, KeySet, ServerKey, fetch_json
from fhirlake.auth.scopes import parse_scopes

_MAX_TOKEN_LENGTH = 16 * 1024
_CACHE_SECONDS = 300.0  # bound on how long a revoked signing key keeps working for a cached token


class _Issuer:
    def __init__(self, name: str, audience: str, keys: KeySet | None, algorithms: frozenset[str]) -> None:
        self.name = name
        self.audience = audience
        self.keys = keys
        self.algorithms = algorithms


class Authenticator:
    def __init__(
        self, config: AuthConfig, engine: Engine | None = None, server_key: ServerKey | None = None
    ) -> None:
        self.config = config
        self.engine = engine
        self.server_key = server_key or ServerKey.load_or_create(config.signing_key_path)
        self._issuers: dict[str, _Issuer] = {
            config.builtin_issuer: _Issuer(
                config.builtin_issuer,
                config.builtin_audience,
                self.server_key.key_set(),
                frozenset({ServerKey.algorithm}),
            )
        }
        if config.issuer:
            self._issuers[config.issuer] = _Issuer(
                config.issuer, config.audience or config.builtin_audience, None, ASYMMETRIC_ALGORITHMS
            )
        self._external_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[AccessContext, float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- keys -------------------------------------------------------------------------------
    def _external_keys(self, issuer: _Issuer) -> KeySet:
        if issuer.keys is None:
            with self._external_lock:
                if issuer.keys is None:
                    source = self.config.jwks or self._discover_jwks_uri(issuer.name)
                    issuer.keys = KeySet.from_source(
                        source,
                        cache_seconds=self.config.jwks_cache_seconds,
                        min_refresh_seconds=self.config.jwks_min_refresh_seconds,
                    )
        return issuer.keys

    @staticmethod
    def _discover_jwks_uri(issuer: str) -> str:
        try:
            document = fetch_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
            return str(document["jwks_uri"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuthError("the authorization server's keys are unavailable") from exc

    # -- verification ----------------------------------------------------------------------
    def authenticate(self, authorization_header: str | None) -> AccessContext:
        token = self._bearer_token(authorization_header)
        now = time.time()
        with self._cache_lock:
            cached = self._cache.get(token)
        if cached is not None and now < cached[1]:
            return cached[0]
        claims = self.verify(token)
        context = self._context(claims)
        expires = min(float(claims["exp"]) + self.config.leeway_seconds, now + _CACHE_SECONDS)
        with self._cache_lock:
            self._cache[token] = (context, expires)
            if len(self._cache) > self.config.token_cache_size:
                self._cache.popitem(last=False)
        return context

    @staticmethod
    def _bearer_token(header: str | None) -> str:
        if not header or not header.strip():
            raise AuthError("missing bearer token")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        if len(token) > _MAX_TOKEN_LENGTH:
            raise AuthError("token too large")
        return token

    def verify(self, token: str) -> dict[str, Any]:
        """Verified claims of ``token``, or AuthError with a safe description."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        alg = header.get("alg")
        issuer = self._issuers.get(unverified.get("iss")) if isinstance(unverified.get("iss"), str) else None
        if issuer is None:
            raise AuthError("untrusted token issuer")
        if alg == "HS256" and self.config.dev_secret:
            candidates: list[Any] = [self.config.dev_secret]
        elif isinstance(alg, str) and alg in issuer.algorithms:
            keys = self._external_keys(issuer) if issuer.keys is None else issuer.keys
            kid = header.get("kid")
            candidates = [k.key for k in keys.find(kid if isinstance(kid, str) else None, alg)]
            if not candidates:
                raise AuthError("no known key matches the token's kid and algorithm")
        else:
            raise AuthError("token signing algorithm not allowed")
        error: AuthError | None = None
        for key in candidates:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=issuer.audience,
                    issuer=issuer.name,
                    leeway=self.config.leeway_seconds,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError as exc:
                error = AuthError("token signature is invalid")
                error.__cause__ = exc
            except jwt.ExpiredSignatureError as exc:
                raise AuthError("token expired") from exc
            except jwt.ImmatureSignatureError as exc:
                raise AuthError("token not yet valid") from exc
            except jwt.InvalidAudienceError as exc:
                raise AuthError("token audience is not this server") from exc
            except jwt.InvalidIssuerError as exc:
                raise AuthError("untrusted token issuer") from exc
            except jwt.MissingRequiredClaimError as exc:
                raise AuthError(f"token lacks the {exc.claim} claim") from exc
            except jwt.PyJWTError as exc:
                raise AuthError("invalid token") from exc
        assert error is not None
        raise error

    def _context(self, claims: dict[str, Any]) -> AccessContext:
        scope_claim = claims.get("scope", claims.get("scp"))
        if not isinstance(scope_claim, str | list):
            scope_claim = None
        patient = claims.get(self.config.patient_claim)
        client_id = next(
            (claims[k] for k in ("client_id", "azp", "cid") if isinstance(claims.get(k), str)),
            claims.get("sub") if isinstance(claims.get("sub"), str) else None,
        )
        user = claims.get("fhirUser")
        if not isinstance(user, str):
            sub = claims.get("sub")
            user = sub if isinstance(sub, str) and sub != client_id else None
        return AccessContext(
            scopes=parse_scopes(scope_claim),
            client_id=client_id,
            user_id=user,
            patient_id=patient if isinstance(patient, str) and patient else None,
            base_url=self.config.base_url,
        )

    # -- issuing (used by the backend-services token endpoint) --------------------------------
    def issue_access_token(self, client_id: str, scope: str, now: float | None = None) -> tuple[str, int]:
        issued = int(now if now is not None else time.time())
        lifetime = self.config.access_token_seconds
        claims = {
            "iss": self.config.builtin_issuer,
            "aud": self.config.builtin_audience,
            "sub": client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": _random_id(),
        }
        return self.server_key.sign(claims), lifetime


def _random_id() -> str:
    return secrets.token_urlsafe(18)
