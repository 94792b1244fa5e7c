"""SMART on FHIR scopes (App Launch 2.0): parsing, v1 -> v2 normalization, intersection.

A resource scope is ``<context>/<type>.<permissions>[?query]``:
- context: ``patient`` | ``user`` | ``system``;
- type: a resource type or ``*``;
- permissions: v1 ``read`` (= ``rs``), ``write`` (= ``cud``), ``*`` (= ``cruds``), or v2 letters, a
  non-empty subset of ``cruds`` written in that order;
- query (v2 "finer-grained" scopes): ``param=value`` pairs joined by ``&``, all of which must hold.

Every other scope (``openid``, ``fhirUser``, ``launch/patient``, ``offline_access``, fhirlake's own
``fhirlake/...`` scopes) is kept as an opaque "other" scope: it grants no resource access by itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

PERMISSION_ORDER = "cruds"
CONTEXTS = frozenset({"patient", "user", "system"})
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}

# Resource types that a ``*`` wildcard never covers: they need a scope that names them.
# Reading the audit trail is its own right (issue 7), not a side effect of ``system/*.rs``.
PROTECTED_TYPES = frozenset({"AuditEvent"})

_RESOURCE_SCOPE = re.compile(
    r"^(?P<ctx>[a-z]+)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<perm>[a-z*]+)(?:\?(?P<query>.*))?$"
)


class ScopeError(ValueError):
    """A scope string that looks like a resource scope but is malformed (strict parsing only)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One parsed scope. ``context`` is None for non-resource scopes (``openid``, ``launch/patient``...)."""

    raw: str
    context: str | None = None
    resource_type: str | None = None
    permissions: str = ""  # canonical v2 letters in ``cruds`` order
    query: tuple[tuple[str, str], ...] = ()

    @property
    def is_resource_scope(self) -> bool:
        return self.context is not None

    def covers_type(self, resource_type: str) -> bool:
        if self.resource_type == resource_type:
            return True
        return self.resource_type == "*" and resource_type not in PROTECTED_TYPES

    def allows(self, letter: str, resource_type: str) -> bool:
        return letter in self.permissions and self.covers_type(resource_type)

    def to_v2(self) -> str:
        """The scope in v2 syntax (query values percent-encoded where needed)."""
        if self.context is None:
            return self.raw
        text = f"{self.context}/{self.resource_type}.{self.permissions}"
        if self.query:
            text += "?" + "&".join(
                f"{quote(k, safe='-_.:')}={quote(v, safe='-_.:|/')}" for k, v in self.query
            )
        return text


def _canonical_permissions(perm: str) -> str | None:
    if perm in V1_PERMISSIONS:
        return V1_PERMISSIONS[perm]
    # v2: each letter at most once and in c-r-u-d-s order
    position = -1
    for letter in perm:
        index = PERMISSION_ORDER.find(letter)
        if index <= position:
            return None
        position = index
    return perm or None


def parse_scope(text: str, strict: bool = False) -> Scope:
    match = _RESOURCE_SCOPE.match(text)
    if match is None or match["ctx"] not in CONTEXTS:
        if strict and "/" in text and "." in text and not text.startswith(("launch/", "fhirlake/")):
            raise ScopeError(f"malformed resource scope {text!r}")
        return Scope(raw=text)
    permissions = _canonical_permissions(match["perm"])
    if permissions is None:
        if strict:
            raise ScopeError(
                f"invalid permissions in scope {text!r} (use read, write, * or letters of 'cruds' in order)"
            )
        return Scope(raw=text)
    query: tuple[tuple[str, str], ...] = ()
    if match["query"] is not None:
        try:
            pairs = parse_qsl(match["query"], keep_blank_values=False, strict_parsing=True)
        except ValueError as exc:
            if strict:
                raise ScopeError(f"malformed query in scope {text!r}") from exc
            return Scope(raw=text)
        query = tuple(sorted(set(pairs)))
    return Scope(
        raw=text, context=match["ctx"], resource_type=match["type"], permissions=permissions, query=query
    )


def parse_scopes(text: str | Iterable[str] | None, strict: bool = False) -> tuple[Scope, ...]:
    """Parse a space-separated scope string (or a list, as in Entra's ``scp``); duplicates dropped."""
    if text is None:
        return ()
    items = text.split() if isinstance(text, str) else [s for item in text for s in str(item).split()]
    seen: dict[str, Scope] = {}
    for item in items:
        if item not in seen:
            seen[item] = parse_scope(item, strict=strict)
    return tuple(seen.values())


def _intersect_one(asked: Scope, granted: Scope) -> Scope | None:
    if asked.context is None or granted.context is None:
        return asked if asked.raw == granted.raw else None
    if asked.context != granted.context:
        return None
    if granted.covers_type(asked.resource_type or ""):
        resource_type = asked.resource_type
    elif asked.resource_type == "*" and granted.resource_type not in PROTECTED_TYPES:
        resource_type = granted.resource_type
    else:
        return None
    letters = "".join(ch for ch in PERMISSION_ORDER if ch in asked.permissions and ch in granted.permissions)
    if not letters:
        return None
    query = tuple(sorted(set(asked.query) | set(granted.query)))
    if (resource_type, letters, query) == (asked.resource_type, asked.permissions, asked.query):
        return asked  # fully granted: keep the client's own spelling (v1 clients expect v1 back)
    result = Scope(
        raw="", context=asked.context, resource_type=resource_type, permissions=letters, query=query
    )
    return Scope(
        raw=result.to_v2(),
        context=result.context,
        resource_type=resource_type,
        permissions=letters,
        query=query,
    )


def intersect_scopes(requested: Iterable[Scope], registered: Iterable[Scope]) -> tuple[Scope, ...]:
    """Granted = requested ∩ registered, scope by scope; never more than registered."""
    registered = tuple(registered)
    granted: dict[str, Scope] = {}
    for asked in requested:
        for allowed in registered:
            piece = _intersect_one(asked, allowed)
            if piece is not None:
                granted.setdefault(piece.raw, piece)
    return tuple(granted.values())


def format_scopes(scopes: Iterable[Scope]) -> str:
    return " ".join(s.raw for s in scopes)
