"""Resource and reference keys: what getResourceKey() and getReferenceKey([type]) return.

A resource's key is its logical id. A reference's key is the id it points to, so that
``getResourceKey()`` of a resource equals ``getReferenceKey()`` of every reference to it, for
relative ("Patient/123"), absolute ("http://x/fhir/Patient/123", with or without "_history/2")
and bundle-local ("urn:uuid:...") references. Conditional references ("Patient?identifier=...")
and contained references ("#p1") have no key.
"""

from __future__ import annotations

import re

_HISTORY = re.compile(r"/_history/[^/]+$")
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]+$")


def resource_key(resource: object) -> str | None:
    if isinstance(resource, dict):
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    return None


def reference_key(reference: object, wanted_type: str | None = None) -> str | None:
    """The key of a Reference (a dict with 'reference' and maybe 'type'), or None."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str) or not text or text.startswith("#") or "?" in text:
        return None
    declared_type = reference.get("type") if isinstance(reference.get("type"), str) else None
    if text.startswith("urn:uuid:") or text.startswith("urn:oid:"):
        ref_type, ref_id = declared_type, text.rsplit(":", 1)[1]
    else:
        parts = _HISTORY.sub("", text).rstrip("/").split("/")
        if len(parts) < 2 or not _TYPE_NAME.match(parts[-2]):
            return None
        ref_type, ref_id = parts[-2], parts[-1]
    if wanted_type is not None and ref_type is not None and ref_type != wanted_type:
        return None
    if wanted_type is not None and ref_type is None:
        return None
    return ref_id or None
