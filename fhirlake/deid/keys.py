"""Secret keys for the keyed methods (cryptoHash, dateShift, encrypt).

One master secret (FHIRLAKE_DEID_KEY, or the file named by FHIRLAKE_DEID_KEY_FILE) is stretched
with HKDF-SHA256 into one independent key per method, so a leaked hash key says nothing about
the encryption key. The object never shows key material in repr/str.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fhirlake.deid.errors import DeidConfigError

ENV_KEY = "FHIRLAKE_DEID_KEY"
ENV_KEY_FILE = "FHIRLAKE_DEID_KEY_FILE"
MIN_SECRET_BYTES = 16
_SALT = b"fhirlake-deid-v1"
KEYED_METHODS = ("cryptoHash", "dateShift", "encrypt")


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode()).derive(master)


class DeidKeys:
    """Per-method keys derived from one master secret."""

    __slots__ = ("_keys",)

    def __init__(self, master: bytes | str) -> None:
        secret = master.encode() if isinstance(master, str) else bytes(master)
        if len(secret) < MIN_SECRET_BYTES:
            raise DeidConfigError(f"the de-identification key must be at least {MIN_SECRET_BYTES} bytes long")
        self._keys = {method: _derive(secret, method) for method in KEYED_METHODS}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeidKeys:
        """Read the master secret from FHIRLAKE_DEID_KEY or FHIRLAKE_DEID_KEY_FILE."""
        env = os.environ if environ is None else environ
        value = env.get(ENV_KEY)
        if value:
            return cls(value.strip())
        path = env.get(ENV_KEY_FILE)
        if path:
            try:
                data = Path(path).read_bytes().strip()
            except OSError as exc:
                raise DeidConfigError(f"cannot read {ENV_KEY_FILE} ({exc.strerror})") from None
            if not data:
                raise DeidConfigError(f"the file named by {ENV_KEY_FILE} is empty")
            return cls(data)
        raise DeidConfigError(
            f"no de-identification key: set {ENV_KEY} (at least {MIN_SECRET_BYTES} characters) "
            f"or {ENV_KEY_FILE}"
        )

    def key_for(self, method: str) -> bytes:
        """The 32-byte key of one keyed method."""
        return self._keys[method]

    def __repr__(self) -> str:
        return "DeidKeys(<hidden>)"

    __str__ = __repr__

    def __reduce__(self):  # keys must not travel by pickling by accident
        raise TypeError("DeidKeys cannot be pickled")
