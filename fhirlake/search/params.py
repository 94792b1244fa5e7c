"""Parsing of search parameter values: OR lists, escaping, prefixes, token/reference parts."""

from __future__ import annotations

import re

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on unescaped `sep`; escapes (\\, \\| \\$ \\\\) are kept for the next split level."""
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def split_or(value: str) -> list[str]:
    """The comma-separated alternatives of a value, still escaped for `|` and `$` splitting."""
    return split_escaped(value, ",")


def split_prefix(value: str) -> tuple[str, str]:
    m = _PREFIX.match(value)
    if m:
        return m.group(1), value[2:]
    return "eq", value


def token_parts(value: str) -> tuple[bool, str | None, str | None]:
    """(has_system_part, system, code): "c" -> (False, None, c); "s|c"; "|c" -> (True, None, c);
    "s|" -> (True, s, None)."""
    pieces = split_escaped(value, "|")
    if len(pieces) == 1:
        return False, None, unescape(pieces[0])
    system, code = unescape(pieces[0]), unescape("|".join(pieces[1:]))
    return True, system or None, code or None
