"""Assemble Bundle JSON around stored resource text without parsing it again."""

from __future__ import annotations

from collections.abc import Iterable

import orjson


def bundle_bytes(head: dict, entries: Iterable[tuple[dict, str | None]]) -> bytes:
    """``head`` is the Bundle without ``entry``; each entry is (entry fields, resource JSON text or None).

    The stored text goes in verbatim: this is how reads stay byte-for-byte and cheap.
    """
    parts: list[bytes] = []
    for fields, content in entries:
        body = orjson.dumps(fields)
        if content is not None:
            # body is '{...}'; splice the resource in as the first member
            inner = body[1:-1]
            body = b'{"resource":' + content.encode() + (b"," + inner if inner else b"") + b"}"
        parts.append(body)
    head_bytes = orjson.dumps(head)
    if not parts:
        return head_bytes
    return head_bytes[:-1] + b',"entry":[' + b",".join(parts) + b"]}"
