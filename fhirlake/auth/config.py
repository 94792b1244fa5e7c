"""AuthConfig: the security settings, derived once from ``fhirlake.config.Settings``.

Two kinds of bearer tokens are accepted:
- tokens of an external authorization server (Keycloak, Auth0, Entra...): ``FHIRLAKE_AUTH_ISSUER``,
  ``FHIRLAKE_AUTH_JWKS`` (URL or file; discovered from the issuer's OpenID configuration when
  absent) and ``FHIRLAKE_AUTH_AUDIENCE`` (defaults to the server's base URL);
- tokens issued by the built-in SMART Backend Services endpoint ``POST /auth/token``, signed with
  the server key (``<data dir>/auth/signing-key.pem`` unless ``auth_signing_key`` names a PEM file).
HS256 tokens are accepted only when ``FHIRLAKE_AUTH_DEV_SECRET`` is set (local development).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_ISSUER_SUFFIX = "/auth"
LOCAL_BUILTIN_ISSUER = "urn:fhirlake:auth"
LOCAL_AUDIENCE = "urn:fhirlake:fhir"


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = False
    issuer: str | None = None  # external authorization server
    jwks: str | None = None  # its JWKS: URL or file path
    audience: str | None = None  # expected ``aud`` of external tokens
    dev_secret: str | None = None
    base_url: str | None = None  # public FHIR base URL, when configured
    signing_key_path: Path = Path("fhirlake-data/auth/signing-key.pem")
    leeway_seconds: int = 30
    access_token_seconds: int = 300
    assertion_max_seconds: int = 300
    jwks_cache_seconds: int = 3600
    jwks_min_refresh_seconds: int = 30
    patient_claim: str = "patient"
    token_cache_size: int = 4096

    @property
    def builtin_issuer(self) -> str:
        return self.base_url.rstrip("/") + BUILTIN_ISSUER_SUFFIX if self.base_url else LOCAL_BUILTIN_ISSUER

    @property
    def builtin_audience(self) -> str:
        return self.base_url.rstrip("/") if self.base_url else LOCAL_AUDIENCE

    def token_url(self, request_base: str | None = None) -> str:
        """The token endpoint's URL: what client assertions must name as ``aud``."""
        base = (self.base_url or request_base or "").rstrip("/")
        return base + "/auth/token"

    @classmethod
    def from_settings(cls, settings: Any) -> AuthConfig:
        """Build from ``Settings``; optional fields not (yet) in Settings fall back to defaults."""
        base_url = getattr(settings, "base_url", None)
        issuer = getattr(settings, "auth_issuer", None)
        audience = getattr(settings, "auth_audience", None) or base_url
        jwks = getattr(settings, "auth_jwks", None)
        if jwks and not issuer:
            raise ValueError(
                "FHIRLAKE_AUTH_JWKS is set but FHIRLAKE_AUTH_ISSUER is not: tokens' iss must be checked"
            )
        if issuer and not audience:
            raise ValueError("set FHIRLAKE_AUTH_AUDIENCE (or FHIRLAKE_BASE_URL): tokens' aud must be checked")
        data_dir = Path(getattr(settings, "data_dir", "fhirlake-data"))
        signing_key = getattr(settings, "auth_signing_key", None)
        optional = {
            name: getattr(settings, "auth_" + name)
            for name in (
                "leeway_seconds",
                "access_token_seconds",
                "jwks_min_refresh_seconds",
                "patient_claim",
            )
            if getattr(settings, "auth_" + name, None) is not None
        }
        return cls(
            enabled=bool(getattr(settings, "auth_enabled", False)),
            issuer=issuer,  # compared exactly: Auth0 issuers end with "/"
            jwks=jwks,
            audience=audience,
            dev_secret=getattr(settings, "auth_dev_secret", None),
            base_url=base_url.rstrip("/") if base_url else None,
            signing_key_path=Path(signing_key) if signing_key else data_dir / "auth" / "signing-key.pem",
            **optional,
        )
