"""Refuse to expose an unauthenticated server beyond loopback."""

from __future__ import annotations

import ipaddress

from fhirlake.config import Settings


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> str | None:
    """Return an error message when binding is unsafe, else None."""
    if is_loopback(settings.host):
        return None
    if settings.auth_enabled:
        return None
    return (
        f"Refusing to listen on {settings.host}: authentication is not configured. "
        "Set FHIRLAKE_AUTH_ISSUER/FHIRLAKE_AUTH_JWKS (or FHIRLAKE_AUTH_ENABLED=true with registered clients), "
        "or bind to 127.0.0.1."
    )
