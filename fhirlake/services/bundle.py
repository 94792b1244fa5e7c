"""batch and transaction Bundles.

A transaction runs in the caller's database transaction: any failing entry raises and nothing is
written. Entries are processed in the spec's order (DELETE, POST, PUT/PATCH, GET/HEAD); POSTed
resources get their ids before anything is written so that ``urn:uuid:``/``urn:oid:`` references
anywhere in the bundle can be rewritten to them; conditional references (``Patient?identifier=..``)
must resolve to exactly one resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection

from fhirlake.fhir.outcome import FhirError, Issue, operation_outcome
from fhirlake.services import authz, crud
from fhirlake.services.resource_body import check_body, check_id, check_type
from fhirlake.store.resources import (
    StoredVersion,
    WriteOp,
    format_instant,
    new_id,
    read_current,
    write_resources,
)

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}

# Reads inside a bundle are answered by the HTTP layer's own dispatcher, so that GET entries
# behave exactly like the equivalent request (search included). (method, url) -> (status, body dict)
ReadDispatcher = Callable[[Connection, str, str], tuple[int, dict | None]]


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict | None
    if_match: str | None = None
    if_none_exist: str | None = None
    res_type: str = ""
    res_id: str | None = None
    query: str | None = None
    response: dict = field(default_factory=dict)
    written: StoredVersion | None = None


def _entry_error(entry: _Entry | int, message: str, status: int = 400, code: str = "invalid") -> FhirError:
    index = entry.index if isinstance(entry, _Entry) else entry
    return FhirError(status, f"Bundle.entry[{index}]: {message}", code=code, expression=[f"Bundle.entry[{index}]"])


def _parse_entries(bundle: dict) -> list[_Entry]:
    entries = []
    for n, raw in enumerate(bundle.get("entry") or []):
        if not isinstance(raw, dict):
            raise _entry_error(n, "an entry must be an object", code="structure")
        req = raw.get("request")
        if not isinstance(req, dict) or "method" not in req or "url" not in req:
            raise _entry_error(n, "request.method and request.url are required", code="required")
        method = str(req["method"]).upper()
        if method not in _ORDER:
            raise _entry_error(n, f"unsupported method '{method}'")
        entry = _Entry(n, method, str(req["url"]).lstrip("/"), raw.get("fullUrl"), raw.get("resource"),
                       req.get("ifMatch"), req.get("ifNoneExist"))
        path, _, query = entry.url.partition("?")
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise _entry_error(entry, f"request.url '{entry.url}' names no resource type")
        entry.res_type = parts[0]
        entry.res_id = parts[1] if len(parts) > 1 else None
        entry.query = query or None
        if method in ("POST", "PUT") and not isinstance(entry.resource, dict):
            raise _entry_error(entry, f"{method} needs a resource", code="required")
        entries.append(entry)
    return entries


def _rewrite_references(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in mapping:
                out[key] = mapping[value]
            else:
                out[key] = _rewrite_references(value, mapping)
        return out
    if isinstance(node, list):
        return [_rewrite_references(v, mapping) for v in node]
    return node


def _collect_references(node: object, found: set[str]) -> None:
    """Every ``reference`` string in the resource (one walk serves both the conditional-reference
    lookup and the decision whether the resource needs rewriting at all)."""
    if type(node) is dict:
        for key, value in node.items():
            if key == "reference" and type(value) is str:
                found.add(value)
            elif type(value) is dict or type(value) is list:
                _collect_references(value, found)
    elif type(node) is list:
        for v in node:
            if type(v) is dict or type(v) is list:
                _collect_references(v, found)


def _is_conditional(reference: str) -> bool:
    return "?" in reference and not reference.startswith("#")


def resolve_conditional_reference(conn: Connection, reference: str, access: Any = None) -> str:
    res_type, _, query = reference.partition("?")
    check_type(res_type)
    matches = crud.find_matches(conn, res_type, query, access)
    if not matches:
        raise FhirError(400, f"Conditional reference '{reference}' matches no resource", code="not-found")
    if len(matches) > 1:
        raise FhirError(412, f"Conditional reference '{reference}' matches {len(matches)} resources",
                        code="multiple-matches")
    return f"{res_type}/{matches[0][1]}"


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _response_for(v: StoredVersion, status: int, base: str) -> dict:
    return {
        "status": _STATUS_TEXT.get(status, str(status)),
        "location": f"{base}/{v.res_type}/{v.res_id}/_history/{v.version}",
        "etag": _etag(v.version),
        "lastModified": format_instant(v.last_updated),
    }


def _authorize_write(conn: Connection, access: Any, res_type: str, res_id: str, new: dict | None,
                     interaction: str) -> None:
    """Same rules as the single-resource interactions: stored version visible, new content in bounds."""
    if not authz.is_restricted(access):
        return
    current = read_current(conn, res_type, res_id)
    exists = current is not None and not current.deleted and current.version > 0
    if new is None and exists and current is not None:
        new = orjson.loads(current.content or "{}")
    authz.check_write(conn, access, res_type, res_id, new, interaction if exists or new is None else "create",
                      exists=exists)


def process_transaction(conn: Connection, bundle: dict, base: str, read: ReadDispatcher,
                        return_resources: bool = False,
                        conditional_reference_cache: dict[str, str] | None = None, access: Any = None) -> dict:
    entries = _parse_entries(bundle)
    seen_full_urls: set[str] = set()
    for e in entries:
        if e.full_url:
            if e.full_url in seen_full_urls:
                raise _entry_error(e, f"fullUrl '{e.full_url}' appears twice")
            seen_full_urls.add(e.full_url)

    mapping: dict[str, str] = {}
    # 1. decide the identity of every POST/PUT target before anything is written
    for e in entries:
        if e.method != "GET":
            check_type(e.res_type)
        if e.method == "POST":
            if e.if_none_exist:
                matches = crud.find_matches(conn, e.res_type, e.if_none_exist, access)
                if len(matches) > 1:
                    raise _entry_error(e, f"ifNoneExist matched {len(matches)} resources", 412, "duplicate")
                if matches:
                    e.res_id = matches[0][1]
                    e.response = {"status": "200 OK"}
            if e.res_id is None:
                e.res_id = new_id()
        elif e.method in ("PUT", "PATCH") and e.res_id is None:
            if not e.query:
                raise _entry_error(e, f"{e.method} needs Type/id or Type?search")
            matches = crud.find_matches(conn, e.res_type, e.query, access)
            if len(matches) > 1:
                raise _entry_error(e, f"conditional {e.method} matched {len(matches)} resources", 412,
                                   "multiple-matches")
            if matches:
                e.res_id = matches[0][1]
            elif e.method == "PUT":
                e.res_id = (e.resource or {}).get("id") or new_id()
            else:
                raise _entry_error(e, "conditional PATCH matched nothing", 404, "not-found")
        if e.full_url and e.res_id and e.method in ("POST", "PUT"):
            target = f"{e.res_type}/{e.res_id}"
            # A fullUrl equal to its target rewrites nothing: leave it out so that resources
            # referring only to such entries need no rewriting copy.
            if e.full_url != target:
                mapping[e.full_url] = target
            if e.full_url.startswith(base + "/") and e.full_url[len(base) + 1:] != target:
                mapping[e.full_url[len(base) + 1:]] = target

    # 2. conditional references, resolved once each
    references: dict[int, set[str]] = {}  # entry index -> reference strings in its resource
    conditional: set[str] = set()
    for e in entries:
        if e.resource is not None:
            found = references[e.index] = set()
            _collect_references(e.resource, found)
            conditional.update(r for r in found if _is_conditional(r))
    cache = conditional_reference_cache if conditional_reference_cache is not None else {}
    for ref in conditional:
        if ref not in cache:
            cache[ref] = resolve_conditional_reference(conn, ref, access)
        mapping[ref] = cache[ref]

    # 3. writes, in the spec's order, as one batch through the store
    ops: list[WriteOp] = []
    op_entries: list[_Entry] = []
    targets: set[tuple[str, str]] = set()
    for e in sorted(entries, key=lambda x: (_ORDER[x.method], x.index)):
        if e.method in ("GET", "HEAD"):
            continue
        if e.method == "POST" and e.response.get("status") == "200 OK":
            continue  # ifNoneExist found it; nothing to write
        if e.method == "DELETE" and e.res_id is None:
            authz.require(access, "delete", e.res_type)
            for _, match_id in crud.find_matches(conn, e.res_type, e.query or "", access):
                _authorize_write(conn, access, e.res_type, match_id, None, "delete")
                ops.append(WriteOp(e.res_type, match_id, None))
                op_entries.append(e)
            continue
        key = (e.res_type, e.res_id or "")
        if key in targets:
            raise _entry_error(e, f"{e.res_type}/{e.res_id} is the target of more than one entry")
        targets.add(key)
        expected = _if_match(e)
        if e.method == "DELETE":
            _authorize_write(conn, access, e.res_type, e.res_id or "", None, "delete")
            ops.append(WriteOp(e.res_type, e.res_id or "", None, expected_version=expected))
        elif e.method == "PATCH":
            from fhirlake.services.fhirpath_patch import apply_fhirpath_patch
            from fhirlake.services.patch import apply_json_patch

            current = crud.read(conn, e.res_type, e.res_id or "", access)
            resource = orjson.loads(current.content or "{}")
            if isinstance(e.resource, dict) and e.resource.get("resourceType") == "Parameters":
                patched = apply_fhirpath_patch(resource, e.resource)
            elif isinstance(e.resource, dict) and e.resource.get("resourceType") == "Binary":
                import base64

                patched = apply_json_patch(resource, orjson.loads(base64.b64decode(e.resource.get("data", ""))))
            else:
                raise _entry_error(e, "PATCH entries carry a Parameters (FHIRPath Patch) or Binary (JSON Patch)")
            check_body(patched, e.res_type, e.res_id, for_update=True)
            _authorize_write(conn, access, e.res_type, e.res_id or "", patched, "patch")
            ops.append(WriteOp(e.res_type, e.res_id or "", patched, expected_version=expected))
        else:
            needs_rewrite = mapping and not mapping.keys().isdisjoint(references.get(e.index, ()))
            resource = _rewrite_references(e.resource, mapping) if needs_rewrite else e.resource
            assert isinstance(resource, dict)
            try:
                if e.method == "PUT":
                    check_id(e.res_id or "")
                    resource = dict(resource)
                    resource.setdefault("id", e.res_id)
                    check_body(resource, e.res_type, e.res_id, for_update=True)
                else:
                    check_body(resource, e.res_type)
                    resource = {**resource, "id": e.res_id}
            except FhirError as exc:
                exc.issues = [Issue(i.severity, i.code, f"Bundle.entry[{e.index}]: {i.diagnostics}",
                                    i.expression) for i in exc.issues]
                raise
            _authorize_write(conn, access, e.res_type, e.res_id or "", resource,
                             "create" if e.method == "POST" else "update")
            ops.append(WriteOp(e.res_type, e.res_id or "", resource, expected_version=expected,
                               must_be_new=e.method == "POST"))
        op_entries.append(e)

    written = write_resources(conn, ops)
    by_key = {(v.res_type, v.res_id): v for v in written}
    for e in op_entries:
        v = by_key.get((e.res_type, e.res_id or ""))
        if e.method == "DELETE":
            e.response = {"status": "204 No Content"} if v is None else {"status": "200 OK", "etag": _etag(v.version)}
        elif v is not None:
            e.written = v
            status = 201 if v.method == "create" else 200
            e.response = _response_for(v, status, base)
    for e in entries:
        if e.method == "POST" and e.response.get("status") == "200 OK" and e.written is None:
            current = crud.read(conn, e.res_type, e.res_id or "")
            e.written = current
            e.response = _response_for(current, 200, base)

    # 4. reads last, so they see the transaction's own writes
    for e in entries:
        if e.method in ("GET", "HEAD"):
            status, body = read(conn, "GET", e.url)
            e.response = {"status": _STATUS_TEXT.get(status, str(status))}
            if body is not None and e.method == "GET":
                e.response["__resource"] = body

    return _response_bundle("transaction-response", entries, return_resources)


def _if_match(e: _Entry) -> int | None:
    if not e.if_match:
        return None
    digits = "".join(ch for ch in e.if_match if ch.isdigit())
    if not digits:
        raise _entry_error(e, f"ifMatch '{e.if_match}' is not a version ETag")
    return int(digits)


def process_batch(conn: Connection, bundle: dict, base: str, read: ReadDispatcher,
                  return_resources: bool = False, access: Any = None) -> dict:
    """Each entry on its own (a savepoint each): failures are reported per entry."""
    raw_entries = bundle.get("entry") or []
    results: list[_Entry] = []
    for n, raw in enumerate(raw_entries):
        sub_bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [raw]}
        savepoint = conn.begin_nested()
        try:
            response = process_transaction(conn, sub_bundle, base, read, return_resources, access=access)
            savepoint.commit()
            entry = response["entry"][0]
            results.append(_Entry(n, "", "", None, entry.get("resource"), response=entry["response"]))
        except FhirError as exc:
            savepoint.rollback()
            outcome = operation_outcome([Issue(i.severity, i.code, i.diagnostics.replace(
                "Bundle.entry[0]", f"Bundle.entry[{n}]"), i.expression) for i in exc.issues])
            results.append(_Entry(n, "", "", None, None,
                                  response={"status": str(exc.status), "outcome": outcome}))
    out_entries = []
    for e in results:
        entry: dict = {}
        if e.resource is not None:
            entry["resource"] = e.resource
        entry["response"] = e.response
        out_entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "batch-response", "entry": out_entries}


def _response_bundle(kind: str, entries: list[_Entry], return_resources: bool) -> dict:
    out_entries = []
    for e in entries:
        entry: dict = {}
        read_body = e.response.pop("__resource", None)
        if read_body is not None:
            entry["resource"] = read_body
        elif return_resources and e.written is not None and e.written.content is not None:
            entry["resource"] = orjson.loads(e.written.content)
        if e.full_url:
            entry["fullUrl"] = e.full_url
        entry["response"] = e.response
        out_entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": kind, "entry": out_entries}


def process_bundle(conn: Connection, bundle: object, base: str, read: ReadDispatcher,
                   return_resources: bool = False, access: Any = None) -> dict:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "POST to the base URL takes a Bundle", code="invalid")
    kind = bundle.get("type")
    if kind == "transaction":
        return process_transaction(conn, bundle, base, read, return_resources, access=access)
    if kind == "batch":
        return process_batch(conn, bundle, base, read, return_resources, access=access)
    raise FhirError(400, f"Bundle.type must be 'batch' or 'transaction', not '{kind}'", code="invalid",
                    expression=["Bundle.type"])
