"""Fixtures: test-owned signing keys, a JWKS served from a file and from a local HTTP server,
and a fresh PostgreSQL database per test session (dropped afterwards)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import Engine

from tests.conftest import fresh_engine


@dataclass
class SigningKey:
    """A signing key owned by the tests, with its public JWK."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, alg: str = "RS256", kid: str | None = None) -> SigningKey:
        return cls(
            kid or secrets.token_hex(4), alg, rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )

    @classmethod
    def ec(cls, alg: str = "ES384", kid: str | None = None) -> SigningKey:
        curve = ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()
        return cls(kid or secrets.token_hex(4), alg, ec.generate_private_key(curve))

    def public_jwk(self) -> dict[str, Any]:
        algo = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk = algo.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


def jwks_of(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in keys]}


@dataclass
class JwksServer:
    """A tiny HTTP server on 127.0.0.1 serving a JWKS that tests may swap (key rotation)."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    requests: int = 0
    url: str = ""
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                owner.requests += 1
                if self.path.endswith("/.well-known/openid-configuration"):
                    body = json.dumps({"issuer": owner.url, "jwks_uri": owner.url + "/jwks"}).encode()
                else:
                    body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with fresh_engine("fhirlake_auth_test", pool_size=12) as db:
        yield db


def now() -> int:
    return int(time.time())


@pytest.fixture
def tmp_jwks_file(tmp_path: Path) -> Path:
    return tmp_path / "jwks.json"


def run_in_threads(work: Any, threads_n: int) -> list[BaseException]:
    """Run ``work(n)`` on ``threads_n`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - reported to the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
