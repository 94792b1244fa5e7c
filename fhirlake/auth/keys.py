"""Public keys for token verification (JWKS from a URL or a file) and the server's own signing key.

Remote JWKS are cached; a token with an unknown ``kid`` triggers a refresh (key rotation), but at
most once per ``min_refresh_seconds`` so that a flood of forged ``kid`` values cannot turn the
server into a request amplifier against the issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "ES256", "ES384"})
_CURVE_FOR_ALG = {"ES256": "secp256r1", "ES384": "secp384r1"}
_MAX_JWKS_BYTES = 512 * 1024


class JwksError(Exception):
    """A JWKS that cannot be fetched or parsed (the message names no secret)."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    alg: str | None  # the JWK's own "alg", when it declares one

    def usable_for(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith("RS"):
            return isinstance(self.key, rsa.RSAPublicKey) and self.key.key_size >= 2048
        if alg in _CURVE_FOR_ALG:
            return (
                isinstance(self.key, ec.EllipticCurvePublicKey) and self.key.curve.name == _CURVE_FOR_ALG[alg]
            )
        return False


def parse_jwks(document: Any) -> list[VerificationKey]:
    """Public signature keys of a JWKS document; encryption keys and unknown key types are skipped.

    Private key material, if present by mistake, is reduced to its public half.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWKS document (an object with a 'keys' array)")
    keys: list[VerificationKey] = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            if jwk.get("kty") == "RSA":
                loaded = RSAAlgorithm.from_jwk(jwk)
            elif jwk.get("kty") == "EC":
                loaded = ECAlgorithm.from_jwk(jwk)
            else:
                continue
        except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        public = loaded.public_key() if hasattr(loaded, "private_numbers") else loaded
        keys.append(VerificationKey(kid=jwk.get("kid"), key=public, alg=jwk.get("alg")))
    return keys


def has_private_material(document: Any) -> bool:
    return isinstance(document, dict) and any(
        isinstance(k, dict) and "d" in k for k in document.get("keys", [])
    )


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - configured URLs only
        body = response.read(_MAX_JWKS_BYTES + 1)
    if len(body) > _MAX_JWKS_BYTES:
        raise JwksError(f"JWKS at {url} is too large")
    return json.loads(body)


class KeySet:
    """Keys of one issuer or client. ``find`` may refresh from the source on an unknown kid."""

    def __init__(
        self,
        load: Callable[[], list[VerificationKey]],
        cache_seconds: float = 3600.0,
        min_refresh_seconds: float = 30.0,
        name: str = "jwks",
    ) -> None:
        self._load = load
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._name = name
        self._keys: list[VerificationKey] = []
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> KeySet:
        return cls(lambda: parse_jwks(fetch_json(url)), name=url, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> KeySet:
        file = Path(path)
        return cls(lambda: parse_jwks(json.loads(file.read_text(encoding="utf-8"))), name=str(file), **kwargs)

    @classmethod
    def from_document(cls, document: Any) -> KeySet:
        keys = parse_jwks(document)
        return cls(lambda: keys, cache_seconds=float("inf"), min_refresh_seconds=float("inf"), name="inline")

    @classmethod
    def from_source(cls, source: str, **kwargs: Any) -> KeySet:
        """A URL (http/https) or a file path."""
        if source.startswith(("https://", "http://")):
            return cls.from_url(source, **kwargs)
        return cls.from_file(source, **kwargs)

    def _refresh(self, now: float) -> None:
        try:
            self._keys = self._load()
        except (OSError, ValueError, JwksError) as exc:
            # keep the previous keys: an issuer hiccup must not log everybody out
            log.warning("could not load JWKS from %s: %s", self._name, type(exc).__name__)
        self._loaded_at = now

    def find(self, kid: str | None, alg: str) -> list[VerificationKey]:
        now = time.monotonic()
        with self._lock:
            if now - self._loaded_at >= self._cache_seconds:
                self._refresh(now)
            found = self._match(kid, alg)
            if not found and now - self._loaded_at >= self._min_refresh:
                self._refresh(now)  # unknown kid: perhaps the issuer rotated its keys
                found = self._match(kid, alg)
            return found

    def _match(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return [k for k in self._keys if (kid is None or k.kid == kid) and k.usable_for(alg)]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rsa_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (used as the ``kid``)."""
    numbers = public_key.public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    canonical = json.dumps({"e": _b64url(e), "kty": "RSA", "n": _b64url(n)}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


class ServerKey:
    """The RS384 key that signs access tokens issued by ``POST /auth/token``.

    Kept as PEM in the data directory (mode 0600) so that every worker process and every restart
    shares it; created atomically by whichever process gets there first.
    """

    algorithm = "RS384"

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.kid = rsa_thumbprint(self.public_key)

    @classmethod
    def generate(cls) -> ServerKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def load_or_create(cls, path: Path) -> ServerKey:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process won the race; use its key
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(pem)
                return cls(key)
            time.sleep(0.05)  # let the winner finish writing
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return cls(loaded)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._private, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"}
        )

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def key_set(self) -> KeySet:
        verification = VerificationKey(kid=self.kid, key=self.public_key, alg=self.algorithm)
        return KeySet(
            lambda: [verification],
            cache_seconds=float("inf"),
            min_refresh_seconds=float("inf"),
            name="server",
        )
