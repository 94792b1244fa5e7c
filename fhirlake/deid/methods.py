"""The value transformations, as pure functions on JSON values (no tree walking here)."""

from __future__ import annotations

import base64
import hmac
import math
import os
import random
import re
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fhirlake.deid.errors import DeidConfigError, DeidProcessingError

MAX_AGE = 89
DATE_TYPES = frozenset({"date", "dateTime", "instant"})
INTEGER_TYPES = frozenset({"integer", "unsignedInt", "positiveInt", "integer64"})
NUMERIC_TYPES = INTEGER_TYPES | {"decimal"}
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
# Literal reference: [base/]Type/id[/_history/vid]
_LITERAL_REF = re.compile(r"^(?P<head>(?:.*/)?[A-Z][A-Za-z]+/)(?P<id>[A-Za-z0-9\-.]{1,64})(?P<tail>/_history/.*)?$")


# --- cryptoHash -------------------------------------------------------------------------------
def crypto_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of the UTF-8 value, lower-case hex."""
    return hmac.digest(key, value.encode("utf-8"), "sha256").hex()


def hash_reference(key: bytes, reference: str) -> str:
    """Hash only the id part, so `Patient/<hash(id)>` still joins to the hashed Patient.id."""
    if reference.startswith("#"):
        return "#" + crypto_hash(key, reference[1:]) if len(reference) > 1 else reference
    if reference.startswith("urn:uuid:"):
        return "urn:uuid:" + crypto_hash(key, reference[9:])
    m = _LITERAL_REF.match(reference)
    if m and "?" not in reference:
        return m.group("head") + crypto_hash(key, m.group("id")) + (m.group("tail") or "")
    # conditional references ("Type?identifier=...") and anything else: one opaque token
    return crypto_hash(key, reference)


# --- encrypt ----------------------------------------------------------------------------------
def encryption_key(raw: str | bytes) -> bytes:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) not in (16, 24, 32):
        raise DeidConfigError("the encryption key must be 128, 192 or 256 bits (16, 24 or 32 bytes) long")
    return data


def encrypt(key: bytes, value: str) -> str:
    """AES-GCM with a random 96-bit nonce; base64(nonce + ciphertext + tag)."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, value.encode("utf-8"), None)).decode("ascii")


def decrypt(key: bytes, token: str) -> str:
    """The inverse of `encrypt` (for tests and authorised re-identification)."""
    data = base64.b64decode(token)
    return AESGCM(key).decrypt(data[:12], data[12:], None).decode("utf-8")


# --- dates ------------------------------------------------------------------------------------
def date_shift_days(key: bytes, scope: str, max_days: int) -> int:
    """A stable, never-zero offset in [-max_days, max_days] from HMAC(key, scope)."""
    n = int.from_bytes(hmac.digest(key, scope.encode("utf-8"), "sha256")[:8], "big")
    offset = n % (2 * max_days) - max_days  # -max .. max-1
    return offset if offset < 0 else offset + 1  # skip 0: -max..-1, 1..max


def _year_is_too_old(year: int, today: date) -> bool:
    return today.year - year > MAX_AGE


def partial_date(value: str, today: date) -> str | None:
    """Year only, or None when the year itself points to an age over 89."""
    m = _DATE.match(value)
    if not m:
        return None
    year = int(m.group(1))
    return None if _year_is_too_old(year, today) else m.group(1)


def shift_date(value: str, days: int, today: date, partial_dates: bool) -> str | None:
    """Shift a date/dateTime/instant by `days`, keeping time and zone.

    Values with less than day precision cannot be shifted: they are treated as a redaction
    (year kept when partial dates are enabled). Values pointing to an age over 89 are removed.
    """
    m = _DATE.match(value)
    if not m:
        raise DeidProcessingError("a date value that is not a valid FHIR date")
    year = int(m.group(1))
    if _year_is_too_old(year, today):
        return None
    if m.group(3) is None:
        return m.group(1) if partial_dates else None
    try:
        shifted = date(year, int(m.group(2)), int(m.group(3))) + timedelta(days=days)
    except (ValueError, OverflowError):
        raise DeidProcessingError("a date value that is not a valid calendar date") from None
    return shifted.isoformat() + value[10:]


# --- ZIP codes and ages -----------------------------------------------------------------------
def partial_zip(value: str, restricted: frozenset[str]) -> str:
    """First three digits kept, the rest zeroed ("02139" -> "02100"); restricted ZIP3 -> all zeros."""
    digits = value.strip()
    prefix = digits[:3]
    if prefix in restricted or len(prefix) < 3:
        prefix = "0" * len(prefix)
    return prefix + re.sub(r"[0-9A-Za-z]", "0", digits[3:])


_AGE_UNIT_YEARS = {"a": 1.0, "year": 1.0, "years": 1.0, "yr": 1.0, "mo": 1 / 12, "month": 1 / 12,
                   "months": 1 / 12, "wk": 1 / 52.18, "d": 1 / 365.25, "h": 1 / 8766.0, "min": 1 / 525960.0}


def age_over_limit(age: dict) -> bool:
    """True when an Age value means more than 89 years (unknown units count as years)."""
    value = age.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True  # cannot tell: treat as identifying
    unit = age.get("code") or age.get("unit") or "a"
    return value * _AGE_UNIT_YEARS.get(str(unit), 1.0) > MAX_AGE


# --- perturb ----------------------------------------------------------------------------------
_RNG = random.SystemRandom()


def perturb(value: int | float, type_code: str, span: float, range_type: str, round_to: int | None):
    """Add uniform noise in [-span/2, span/2] (times |value| when proportional), keeping the type."""
    width = span * abs(value) if range_type == "proportional" else span
    noisy = value + _RNG.uniform(-width / 2, width / 2)
    if type_code in INTEGER_TYPES or (type_code == "" and isinstance(value, int)):
        result = int(round(noisy))
        if type_code == "positiveInt":
            result = max(result, 1)
        elif type_code == "unsignedInt":
            result = max(result, 0)
        return result
    places = 2 if round_to is None else round_to
    rounded = float(Decimal(repr(noisy)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))
    if not math.isfinite(rounded):
        raise DeidProcessingError("perturbation produced a non-finite number")
    return int(rounded) if places == 0 and isinstance(value, int) else rounded
