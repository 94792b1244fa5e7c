"""Registered SMART Backend Services clients (table ``auth_client``) and their public keys."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from fhirlake.auth.keys import KeySet, has_private_material, parse_jwks
from fhirlake.auth.scopes import parse_scopes
from fhirlake.store.schema import auth_client


class ClientRegistrationError(ValueError):
    """A registration that would not work or would be unsafe (message safe to print)."""


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    scope: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    created_at: datetime | None = None


def _is_loopback_http(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]"))


def read_jwks_argument(value: str) -> tuple[dict[str, Any] | None, str | None]:
    """``--jwks FILE_OR_URL``: an https URL (http only on loopback) or a JWKS file read now."""
    if value.startswith("https://") or _is_loopback_http(value):
        return None, value
    if value.startswith("http://"):
        raise ClientRegistrationError("a JWKS URL must use https (plain http is accepted on loopback only)")
    path = Path(value)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClientRegistrationError(f"cannot read a JWKS from {value}: {type(exc).__name__}") from exc
    return document, None


def validate_registration(
    client_id: str, jwks: dict[str, Any] | None, jwks_url: str | None, scope: str
) -> None:
    if not client_id or len(client_id) > 255 or any(ch.isspace() for ch in client_id):
        raise ClientRegistrationError("client id must be 1-255 characters without spaces")
    if (jwks is None) == (jwks_url is None):
        raise ClientRegistrationError("give exactly one of a JWKS document or a JWKS URL")
    if jwks is not None:
        if has_private_material(jwks):
            raise ClientRegistrationError(
                "the JWKS holds private key material: register only the public keys"
            )
        usable = [k for k in parse_jwks(jwks) if k.usable_for("RS384") or k.usable_for("ES384")]
        if not usable:
            raise ClientRegistrationError("the JWKS has no RS384/ES384-capable public key")
    scopes = parse_scopes(scope, strict=True)  # raises ScopeError (a ValueError) on a malformed scope
    if not scopes:
        raise ClientRegistrationError("at least one scope is required")


class ClientRegistry:
    def __init__(
        self, engine: Engine, jwks_cache_seconds: float = 3600, jwks_min_refresh_seconds: float = 30
    ) -> None:
        self.engine = engine
        self._cache_seconds = jwks_cache_seconds
        self._min_refresh = jwks_min_refresh_seconds
        self._key_sets: dict[tuple[str, str], KeySet] = {}
        self._lock = threading.Lock()

    def add(
        self,
        client_id: str,
        scope: str,
        jwks: dict[str, Any] | None = None,
        jwks_url: str | None = None,
        replace: bool = False,
    ) -> RegisteredClient:
        validate_registration(client_id, jwks, jwks_url, scope)
        scope = " ".join(scope.split())
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(auth_client.c.client_id).where(auth_client.c.client_id == client_id)
            ).first()
            if exists and not replace:
                raise ClientRegistrationError(f"client {client_id!r} is already registered")
            if exists:
                conn.execute(delete(auth_client).where(auth_client.c.client_id == client_id))
            conn.execute(
                insert(auth_client).values(client_id=client_id, jwks=jwks, jwks_url=jwks_url, scope=scope)
            )
        return RegisteredClient(client_id, scope, jwks, jwks_url)

    def get(self, client_id: str) -> RegisteredClient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_client).where(auth_client.c.client_id == client_id)).first()
        return (
            RegisteredClient(row.client_id, row.scope, row.jwks, row.jwks_url, row.created_at)
            if row
            else None
        )

    def list_clients(self) -> list[RegisteredClient]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(auth_client).order_by(auth_client.c.client_id)).all()
        return [RegisteredClient(r.client_id, r.scope, r.jwks, r.jwks_url, r.created_at) for r in rows]

    def remove(self, client_id: str) -> bool:
        with self.engine.begin() as conn:
            removed = conn.execute(delete(auth_client).where(auth_client.c.client_id == client_id)).rowcount
        with self._lock:
            for key in [k for k in self._key_sets if k[0] == client_id]:
                del self._key_sets[key]
        return bool(removed)

    def key_set(self, client: RegisteredClient) -> KeySet:
        """The client's keys; URL key sets are cached and refreshed like an issuer's."""
        source = client.jwks_url or json.dumps(client.jwks, sort_keys=True)
        cache_key = (client.client_id, source)
        with self._lock:
            found = self._key_sets.get(cache_key)
            if found is None:
                if client.jwks_url:
                    found = KeySet.from_url(
                        client.jwks_url,
                        cache_seconds=self._cache_seconds,
                        min_refresh_seconds=self._min_refresh,
                    )
                else:
                    found = KeySet.from_document(client.jwks)
                self._key_sets[cache_key] = found
            return found
