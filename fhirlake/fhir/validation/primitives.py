"""One predicate per FHIR primitive type: is this JSON value a valid lexical value?

The regular expressions are the ones the R4 StructureDefinitions give for each primitive
(`TypeDef.regex`); a few checks the regexes cannot make (calendar dates, integer ranges,
JSON kinds) are added by hand.
"""

from __future__ import annotations

import math
import re
from calendar import monthrange
from collections.abc import Callable
from typing import Any

from fhirlake.fhir import structure

Check = Callable[[Any], bool]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_WHITESPACE = re.compile(r"\s+", re.ASCII)
_ASCII_SPACE = re.compile(r"[ \t\n\x0b\f\r]")


def _regex(type_code: str) -> Callable[[str], Any]:
    definition = structure.get_type(type_code)
    pattern = definition.regex if definition and definition.regex else r".+"
    # The regexes are written for Java, where \s and \S are ASCII-only.
    return re.compile(pattern, re.DOTALL | re.ASCII).fullmatch


def _valid_day(text: str) -> bool:
    # The R4 regexes accept 2021-02-31; "Dates SHALL be valid dates".
    if len(text) < 10:
        return True
    day = int(text[8:10])
    return day <= 28 or day <= monthrange(int(text[0:4]), int(text[5:7]))[1]


def _string_check(type_code: str, allow_calendar: bool = False) -> Check:
    match = _regex(type_code)
    if allow_calendar:
        return lambda v: type(v) is str and match(v) is not None and _valid_day(v)
    return lambda v: type(v) is str and match(v) is not None


def _check_string(v: Any) -> bool:
    # R4 regex [ \r\n\t\S]+ with Java's ASCII \S: non-empty, no vertical tab or form feed.
    return type(v) is str and v != "" and "\x0b" not in v and "\x0c" not in v


def _check_boolean(v: Any) -> bool:
    return v is True or v is False


def _check_integer(v: Any) -> bool:
    return type(v) is int and INT32_MIN <= v <= INT32_MAX


def _check_positive_int(v: Any) -> bool:
    return type(v) is int and 1 <= v <= INT32_MAX


def _check_unsigned_int(v: Any) -> bool:
    return type(v) is int and 0 <= v <= INT32_MAX


def _check_decimal(v: Any) -> bool:
    t = type(v)
    return t is int or (t is float and math.isfinite(v))


def _check_base64(v: Any) -> bool:
    if type(v) is not str or _BASE64.fullmatch(v) is None:
        return False
    return len(v) % 4 == 0 or len(_WHITESPACE.sub("", v)) % 4 == 0


def _check_uri(v: Any) -> bool:
    # \S* in R4, but empty strings are never valid JSON primitive values.
    return type(v) is str and v != "" and _ASCII_SPACE.search(v) is None


def _check_xhtml(v: Any) -> bool:
    return type(v) is str and v.startswith("<div") and v.rstrip().endswith("div>")


def build_checks() -> dict[str, Check]:
    """type code -> predicate, for every R4 primitive type."""
    checks: dict[str, Check] = {
        "boolean": _check_boolean,
        "integer": _check_integer,
        "positiveInt": _check_positive_int,
        "unsignedInt": _check_unsigned_int,
        "decimal": _check_decimal,
        "string": _check_string,
        "markdown": _check_string,
        "uri": _check_uri,
        "url": _check_uri,
        "canonical": _check_uri,
        "base64Binary": _check_base64,
        "xhtml": _check_xhtml,
        "date": _string_check("date", allow_calendar=True),
        "dateTime": _string_check("dateTime", allow_calendar=True),
        "instant": _string_check("instant", allow_calendar=True),
    }
    for code in ("id", "code", "oid", "uuid", "time"):
        checks[code] = _string_check(code)
    return checks


PRIMITIVE_CHECKS: dict[str, Check] = build_checks()

# Words for error messages: what a valid value of each type looks like.
EXPECTED = {
    "boolean": "a JSON boolean",
    "integer": "a JSON integer between -2147483648 and 2147483647",
    "positiveInt": "a JSON integer >= 1",
    "unsignedInt": "a JSON integer >= 0",
    "decimal": "a JSON number",
    "string": "a non-empty string",
    "markdown": "a non-empty string",
    "uri": "a non-empty string without whitespace",
    "url": "a non-empty string without whitespace",
    "canonical": "a non-empty string without whitespace",
    "code": "a non-empty string without leading, trailing or repeated whitespace",
    "id": "1-64 characters of A-Z a-z 0-9 - .",
    "date": "a date YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "a dateTime YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.s)+zz:zz",
    "instant": "an instant YYYY-MM-DDThh:mm:ss(.s)+zz:zz",
    "time": "a time hh:mm:ss(.s)",
    "base64Binary": "base64 text",
    "oid": "an OID urn:oid:1.2.3",
    "uuid": "a UUID urn:uuid:(lower-case hex)",
    "xhtml": "an XHTML <div> string",
}
