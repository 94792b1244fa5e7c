"""create, read, vread, update, delete and their conditional forms.

Every function runs inside a connection/transaction the caller owns, so the HTTP layer, bundles
and jobs compose them freely: a transaction bundle is just many calls in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection

from fhirlake.fhir.outcome import FhirError, not_found
from fhirlake.services import authz
from fhirlake.services.resource_body import check_body, check_id, check_type
from fhirlake.store.resources import (
    StoredVersion,
    WriteOp,
    new_id,
    read_current,
    read_current_audited,
    read_version,
    write_resources,
)


@dataclass(frozen=True)
class WriteResult:
    version: StoredVersion | None  # None when nothing was written (conditional create hit, no-op delete)
    created: bool
    status: int  # 200, 201, 204


def read(conn: Connection, res_type: str, res_id: str, access: Any = None,
         audit: Callable[[], dict] | None = None,
         audited: Callable[[int, int], None] | None = None) -> StoredVersion:
    """``audit``/``audited``: build the access's audit row, and learn its id, when the read itself
    records the access (one statement; see ``read_current_audited``)."""
    check_type(res_type)
    if access is not None:
        authz.check_read(conn, access, res_type, res_id)
    if audit is not None and audited is not None:
        current, audit_id, outcome = read_current_audited(conn, res_type, res_id, audit())
        audited(audit_id, outcome)
    else:
        current = read_current(conn, res_type, res_id)
    if current is None or current.version == 0:
        raise not_found(res_type, res_id)
    if current.deleted:
        raise FhirError(410, f"{res_type}/{res_id} was deleted", code="deleted",
                        headers={"ETag": current.etag})
    return current


def vread(conn: Connection, res_type: str, res_id: str, version: str, access: Any = None) -> StoredVersion:
    check_type(res_type)
    if access is not None:
        authz.check_read(conn, access, res_type, res_id, "vread")
    if not version.isdigit():
        raise FhirError(400, f"'{version}' is not a version number", code="value")
    found = read_version(conn, res_type, res_id, int(version))
    if found is None:
        if read_current(conn, res_type, res_id) is None:
            raise not_found(res_type, res_id)
        raise FhirError(404, f"{res_type}/{res_id} has no version {version}", code="not-found")
    if found.deleted:
        raise FhirError(410, f"Version {version} of {res_type}/{res_id} is a deletion", code="deleted")
    return found


def find_matches(conn: Connection, res_type: str, query: str, access: Any = None) -> list[tuple[int, str]]:
    """Conditional operations see only what the caller may see (a hidden match cannot be changed)."""
    from fhirlake.search.service import SearchError
    from fhirlake.search.service import find_matches as search_matches

    if not query.strip():
        raise FhirError(400, "A conditional request needs search parameters", code="invalid")
    constraint = None
    if access is not None and not getattr(access, "is_unrestricted", False):
        authz.require(access, "search-type", res_type)
        constraint = access.access_constraint(res_type, "search")
    try:
        return search_matches(conn, res_type, query, access=constraint)
    except SearchError as exc:
        raise FhirError(exc.status, exc.message, code="invalid", expression=[exc.param] if exc.param else None) from exc


def create(conn: Connection, res_type: str, body: object, *, if_none_exist: str | None = None,
           res_id: str | None = None, access: Any = None) -> WriteResult:
    """POST: the server assigns the id (any id in the body is ignored, as the spec says)."""
    check_type(res_type)
    resource = check_body(body, res_type)
    authz.check_write(conn, access, res_type, None, resource, "create", exists=False)
    if if_none_exist:
        matches = find_matches(conn, res_type, if_none_exist, access)
        if len(matches) > 1:
            raise FhirError(412, f"If-None-Exist matched {len(matches)} resources", code="duplicate")
        if len(matches) == 1:
            return WriteResult(read(conn, res_type, matches[0][1]), created=False, status=200)
    resource = dict(resource)
    resource["id"] = res_id or new_id()
    resource = _id_first(resource)
    [written] = write_resources(conn, [WriteOp(res_type, resource["id"], resource, must_be_new=True)])
    return WriteResult(written, created=True, status=201)


def update(conn: Connection, res_type: str, res_id: str, body: object, *, if_match: int | None = None,
           access: Any = None, interaction: str = "update") -> WriteResult:
    """PUT Type/id: update, or create with the client's id when it does not exist yet."""
    check_type(res_type)
    check_id(res_id)
    resource = check_body(body, res_type, res_id, for_update=True)
    if access is not None:
        current = read_current(conn, res_type, res_id)
        exists = current is not None and not current.deleted and current.version > 0
        authz.check_write(conn, access, res_type, res_id, resource, interaction if exists else "create",
                          exists=exists)
    [written] = write_resources(conn, [WriteOp(res_type, res_id, resource, expected_version=if_match)])
    created = written.method == "create"
    return WriteResult(written, created=created, status=201 if created else 200)


def conditional_update(conn: Connection, res_type: str, query: str, body: object, *,
                       if_match: int | None = None, access: Any = None) -> WriteResult:
    check_type(res_type)
    if not isinstance(body, dict):
        raise FhirError(400, "The request body must be a FHIR resource", code="structure")
    matches = find_matches(conn, res_type, query, access)
    if len(matches) > 1:
        raise FhirError(412, f"The conditional update matched {len(matches)} resources", code="multiple-matches")
    body_id = body.get("id")
    if len(matches) == 1:
        match_id = matches[0][1]
        if body_id is not None and body_id != match_id:
            raise FhirError(400, f"Body id '{body_id}' differs from the matched resource '{match_id}'",
                            code="invalid", expression=[f"{res_type}.id"])
        body = {**body, "id": match_id}
        return update(conn, res_type, match_id, body, if_match=if_match, access=access)
    if body_id is not None:
        return update(conn, res_type, body_id, body, if_match=if_match, access=access)
    return create(conn, res_type, body, access=access)


def delete(conn: Connection, res_type: str, res_id: str, *, if_match: int | None = None,
           access: Any = None) -> WriteResult:
    check_type(res_type)
    if access is not None:
        current = read_current(conn, res_type, res_id)
        exists = current is not None and not current.deleted and current.version > 0
        stored = orjson.loads(current.content) if exists and current and current.content else None
        authz.check_write(conn, access, res_type, res_id, stored, "delete", exists=exists)
    written = write_resources(conn, [WriteOp(res_type, res_id, None, expected_version=if_match)])
    return WriteResult(written[0] if written else None, created=False, status=200 if written else 204)


def conditional_delete(conn: Connection, res_type: str, query: str, *, allow_multiple: bool,
                       access: Any = None) -> int:
    """Delete every match; more than one match needs ``allow_multiple`` (else 412). Returns the count."""
    check_type(res_type)
    authz.require(access, "delete", res_type)
    matches = find_matches(conn, res_type, query, access)
    if len(matches) > 1 and not allow_multiple:
        raise FhirError(412, f"The conditional delete matched {len(matches)} resources", code="multiple-matches")
    ops = [WriteOp(res_type, res_id, None) for _, res_id in matches]
    return len(write_resources(conn, ops))


def _id_first(resource: dict) -> dict:
    out = {"resourceType": resource["resourceType"], "id": resource["id"]}
    out.update((k, v) for k, v in resource.items() if k not in out)
    return out
