"""ViewDefinition resources stored on the server: create, read, update, delete, search.

They live in the same ``resource``/``resource_version`` tables as every FHIR resource (written by
``write_resources``, versioned, with history), and their search columns (name, status, resource)
in ``view_definition`` (migration 0005), updated in the same transaction. A ViewDefinition is
compiled before it is stored: an invalid one is refused with 422 naming the offending element.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, text

from fhirlake.fhir.outcome import FhirError
from fhirlake.store.resources import StoredVersion, WriteOp, new_id, read_current, write_resources

from .catalog import compiled
from .errors import ViewDefinitionError

RESOURCE_TYPE = "ViewDefinition"
SEARCH_PARAMS = ("name", "status", "resource", "_id", "_count")


def check_definition(body: object, res_id: str | None = None) -> dict:
    """The body as a valid ViewDefinition (FhirError 400/422 otherwise)."""
    if not isinstance(body, dict):
        raise FhirError(400, "The body must be a ViewDefinition (a JSON object)", code="structure")
    if body.get("resourceType") != RESOURCE_TYPE:
        raise FhirError(400, f"resourceType must be '{RESOURCE_TYPE}', got {body.get('resourceType')!r}",
                        code="invalid", expression=["resourceType"])
    if res_id is not None and body.get("id") not in (None, res_id):
        raise FhirError(400, f"The body's id {body.get('id')!r} does not match the URL's id {res_id!r}",
                        code="invalid", expression=["id"])
    validate_view(body)
    return body


def validate_view(definition: dict) -> None:
    try:
        compiled({k: v for k, v in definition.items() if k not in ("meta", "id", "text")})
    except ViewDefinitionError as exc:
        raise FhirError(422, f"Invalid ViewDefinition: {exc.message}", code="invalid",
                        expression=[exc.path] if exc.path else None) from exc


def _index(conn: Connection, version: StoredVersion, definition: dict | None) -> None:
    conn.execute(text("DELETE FROM view_definition WHERE rid = :rid"), {"rid": version.rid})
    if definition is None:
        return
    conn.execute(
        text("INSERT INTO view_definition (rid, res_id, name, status, resource) VALUES (:rid, :id, :n, :s, :r)"),
        {"rid": version.rid, "id": version.res_id, "n": definition.get("name"), "s": definition.get("status"),
         "r": definition.get("resource")},
    )


@dataclass
class Written:
    version: StoredVersion
    created: bool


def _write(conn: Connection, op: WriteOp) -> StoredVersion:
    # index=False: the R4 search index knows nothing of ViewDefinition; view_definition is its index.
    versions = write_resources(conn, [op], index=False)
    if not versions:
        raise FhirError(404, f"{RESOURCE_TYPE}/{op.res_id} is not known", code="not-found")
    _index(conn, versions[0], op.resource)
    return versions[0]


def create(conn: Connection, body: object) -> Written:
    definition = dict(check_definition(body))
    definition["id"] = new_id()
    return Written(_write(conn, WriteOp(RESOURCE_TYPE, definition["id"], definition, must_be_new=True)), True)


def update(conn: Connection, res_id: str, body: object, if_match: int | None = None) -> Written:
    definition = dict(check_definition(body, res_id))
    definition["id"] = res_id
    existing = read_current(conn, RESOURCE_TYPE, res_id)
    version = _write(conn, WriteOp(RESOURCE_TYPE, res_id, definition, expected_version=if_match))
    return Written(version, existing is None or existing.deleted)


def delete(conn: Connection, res_id: str) -> StoredVersion | None:
    existing = read_current(conn, RESOURCE_TYPE, res_id)
    if existing is None or existing.deleted:
        return None
    versions = write_resources(conn, [WriteOp(RESOURCE_TYPE, res_id, None)], index=False)
    if versions:
        _index(conn, versions[0], None)
    return versions[0] if versions else None


def read(conn: Connection, res_id: str) -> StoredVersion:
    current = read_current(conn, RESOURCE_TYPE, res_id)
    if current is None:
        raise FhirError(404, f"{RESOURCE_TYPE}/{res_id} is not known", code="not-found")
    if current.deleted:
        raise FhirError(410, f"{RESOURCE_TYPE}/{res_id} was deleted", code="deleted")
    return current


def read_definition(conn: Connection, reference: str) -> dict:
    """The ViewDefinition a ``viewReference`` points at (``ViewDefinition/id``, an absolute URL or an id)."""
    ref = reference.strip().rstrip("/")
    parts = ref.split("/")
    if "/_history/" in ref:
        parts = ref.split("/_history/")[0].split("/")
    if len(parts) >= 2 and parts[-2] != RESOURCE_TYPE:
        raise FhirError(400, f"viewReference must point to a ViewDefinition, got {reference!r}", code="invalid",
                        expression=["viewReference"])
    res_id = parts[-1]
    current = read_current(conn, RESOURCE_TYPE, res_id)
    if current is None or current.deleted or current.content is None:
        raise FhirError(404, f"viewReference {reference!r}: no such ViewDefinition", code="not-found",
                        expression=["viewReference"])
    return orjson.loads(current.content)


def search(conn: Connection, params: list[tuple[str, str]]) -> tuple[list[str], int]:
    """The stored JSON of the matching ViewDefinitions (by name, status, resource, _id) and the total."""
    conds = ["NOT r.deleted"]
    args: dict[str, object] = {}
    count = 100
    for i, (raw_name, value) in enumerate(params):
        name, _, modifier = raw_name.partition(":")
        if name in ("_format", "_pretty"):
            continue
        if name not in SEARCH_PARAMS:
            raise FhirError(400, f"Unknown search parameter '{raw_name}' for ViewDefinition"
                            f" (supported: {', '.join(SEARCH_PARAMS)})", code="invalid", expression=[raw_name])
        if name == "_count":
            try:
                count = max(0, min(int(value), 1000))
            except ValueError:
                raise FhirError(400, f"_count must be an integer, got {value!r}", code="invalid") from None
            continue
        values = [v for v in value.split(",") if v]
        key = f"p{i}"
        if name == "name":
            if modifier == "exact":
                conds.append(f"d.name = ANY(:{key})")
                args[key] = values
            elif modifier in ("", "contains"):
                pattern = "%{}%" if modifier == "contains" else "{}%"
                conds.append(f"lower(d.name) LIKE ANY(:{key})")
                args[key] = [pattern.format(_like(v.lower())) for v in values]
            else:
                raise FhirError(400, f"Modifier ':{modifier}' is not supported on name", code="invalid")
        elif name in ("status", "resource"):
            conds.append(f"d.{name} = ANY(:{key})")
            args[key] = values
        elif name == "_id":
            conds.append(f"r.res_id = ANY(:{key})")
            args[key] = values
    where = " AND ".join(conds)
    base = f"FROM view_definition d JOIN resource r ON r.rid = d.rid WHERE {where}"
    total = conn.execute(text(f"SELECT count(*) {base}"), args).scalar_one()
    rows = conn.execute(
        text(
            f"SELECT v.content {base.replace('WHERE', 'JOIN resource_version v ON v.rid = r.rid AND v.version = r.version WHERE', 1)}"
            f" ORDER BY d.name, r.rid LIMIT :limit"
        ),
        {**args, "limit": count},
    ).scalars().all()
    return list(rows), total


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
