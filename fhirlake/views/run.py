"""$viewdefinition-run as a service: which resources a run reads, and its rows as a byte stream.

Everything that can fail with a client error (the view, the parameters, access) is checked in
``prepare_run`` before any byte is sent; ``RunPlan.stream()`` then reads the store in batches
through a server-side cursor and yields the output chunk by chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Engine

from fhirlake.fhir.outcome import FhirError

from .catalog import compiled
from .compiler import CompiledView
from .definitions import read_definition, validate_view
from .ndjson import parse_line
from .stream import MEDIA_TYPES, limit_rows, output_format, stream_rows

FETCH_ROWS = 5_000


@dataclass
class RunRequest:
    """The operation's parameters, already parsed from the query string or a Parameters body."""

    view_reference: str | None = None
    view_resource: dict | None = None
    resources: list[dict] = field(default_factory=list)
    patient: str | None = None
    group: str | None = None
    since: str | None = None
    limit: int | None = None
    format: str | None = None
    header: bool = True


@dataclass
class RunPlan:
    view: CompiledView
    fmt: str
    limit: int | None
    header: bool
    inline: list[dict] | None  # run over these instead of the store
    rids: list[int] | None  # restrict the store read to these resources (patient, group, access)
    since: datetime | None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]

    def batches(self, engine: Engine) -> Iterator[pa.RecordBatch]:
        if self.inline is not None:
            return self.view.to_arrow(self.inline)
        return _store_batches(engine, self.view, self.rids, self.since)

    def stream(self, engine: Engine) -> Iterator[bytes]:
        return stream_rows(limit_rows(self.batches(engine), self.limit), self.fmt, self.view.schema, self.header)


def _reference_id(value: str, expected_type: str, parameter: str) -> str:
    parts = value.strip().rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] != expected_type:
        raise FhirError(400, f"{parameter} must reference a {expected_type}, got {value!r}", code="invalid",
                        expression=[parameter])
    return parts[-1]


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(400, f"_since must be an instant (e.g. 2024-01-01T00:00:00Z), got {value!r}",
                        code="invalid", expression=["_since"]) from None
    if parsed.tzinfo is None:
        raise FhirError(400, "_since must carry a time zone", code="invalid", expression=["_since"])
    return parsed


def _group_patients(conn: Connection, group: str) -> list[str]:
    import orjson

    from fhirlake.store.resources import read_current

    group_id = _reference_id(group, "Group", "group")
    current = read_current(conn, "Group", group_id)
    if current is None or current.deleted or current.content is None:
        raise FhirError(404, f"group {group!r}: no such Group", code="not-found", expression=["group"])
    members = orjson.loads(current.content).get("member") or []
    ids = []
    for member in members:
        reference = ((member or {}).get("entity") or {}).get("reference") or ""
        if reference.startswith("Patient/") or "/Patient/" in reference:
            ids.append(reference.rstrip("/").split("/")[-1])
    return ids


def _restricted_rids(conn: Connection, res_type: str, patient_ids: list[str] | None, access: Any) -> list[int] | None:
    """The rids a run may read when a patient, group or access constraint restricts it (None: all)."""
    from fhirlake.search.registry import registry
    from fhirlake.search.service import SearchError, find_matches

    if patient_ids is None and access is None:
        return None
    try:
        if patient_ids is None:
            # Access filters only: every resource of the type that the constraint lets through.
            return sorted(rid for rid, _ in find_matches(conn, res_type, "_lastUpdated=ge1000-01-01", access))
        if not patient_ids:
            return []
        refs = ",".join(f"Patient/{pid}" for pid in patient_ids)
        if res_type == "Patient":
            queries = [f"_id={','.join(patient_ids)}"]
        else:
            queries = [f"{param.code}={refs}" for param in registry().compartment_params(res_type)]
        rids: set[int] = set()
        for query in queries:
            rids.update(rid for rid, _ in find_matches(conn, res_type, query, access))
        return sorted(rids)
    except SearchError as exc:
        raise FhirError(exc.status, exc.message, code="invalid") from exc


def prepare_run(conn: Connection, request: RunRequest, instance_id: str | None = None, access: Any = None) -> RunPlan:
    """Resolve the view and the resources to read; raise FhirError for anything the client got wrong.

    ``access`` is the request's AccessContext (``flask.g.access``) or None when auth is off.
    """
    fmt = output_format(request.format)
    if fmt is None:
        raise FhirError(400, f"_format {request.format!r} is not supported (json, ndjson, csv, parquet)",
                        code="not-supported", expression=["_format"])
    sources = sum(x is not None for x in (instance_id, request.view_reference, request.view_resource))
    if sources != 1:
        raise FhirError(400, "Give exactly one view: the instance in the URL, viewReference or viewResource",
                        code="invalid", expression=["viewReference", "viewResource"])
    if request.view_resource is not None:
        definition = request.view_resource
        if not isinstance(definition, dict) or definition.get("resourceType") != "ViewDefinition":
            raise FhirError(400, "viewResource must be a ViewDefinition", code="invalid", expression=["viewResource"])
    else:
        definition = read_definition(conn, f"ViewDefinition/{instance_id}" if instance_id else request.view_reference or "")
    validate_view(definition)
    view = compiled({k: v for k, v in definition.items() if k not in ("meta", "id", "text")})
    if request.limit is not None and request.limit < 0:
        raise FhirError(400, "_limit must not be negative", code="invalid", expression=["_limit"])
    constraint = None
    if access is not None:
        access.require("read", view.resource_type)
        constraint = access.access_constraint(view.resource_type)
    since = _since(request.since)
    if request.resources:
        for i, resource in enumerate(request.resources):
            if not isinstance(resource, dict) or "resourceType" not in resource:
                raise FhirError(400, f"resource[{i}] is not a FHIR resource", code="invalid", expression=["resource"])
        if constraint is not None:
            raise FhirError(403, "Inline resources cannot be run under a restricted access token", code="forbidden")
        inline = [parse_line(_dump(r)) for r in request.resources]  # decimals kept exact
        return RunPlan(view, fmt, request.limit, request.header, inline, None, since)
    patient_ids: list[str] | None = None
    if request.patient:
        patient_ids = [_reference_id(request.patient, "Patient", "patient")]
    if request.group:
        members = _group_patients(conn, request.group)
        patient_ids = members if patient_ids is None else [p for p in patient_ids if p in members]
    if constraint is not None and getattr(constraint, "patient_id", None):
        allowed = constraint.patient_id
        patient_ids = [allowed] if patient_ids is None else [p for p in patient_ids if p == allowed]
    rids = _restricted_rids(conn, view.resource_type, patient_ids, constraint)
    return RunPlan(view, fmt, request.limit, request.header, None, rids, since)


def _dump(resource: dict) -> bytes:
    import orjson

    return orjson.dumps(resource)


def _store_batches(engine: Engine, view: CompiledView, rids: list[int] | None, since: datetime | None) -> Iterator[pa.RecordBatch]:
    """Rows of the current resources of the view's type, read through a server-side cursor."""
    conds = ["r.res_type = %s", "NOT r.deleted"]
    args: list[Any] = [view.resource_type]
    if rids is not None:
        if not rids:
            return
        conds.append("r.rid = ANY(%s)")
        args.append(rids)
    if since is not None:
        conds.append("r.last_updated >= %s")
        args.append(since)
    sql = (
        "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
        f" WHERE {' AND '.join(conds)} ORDER BY r.rid"
    )
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction(), conn.cursor(name=f"fl_run_{uuid.uuid4().hex[:8]}") as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute(sql, args)
            while True:
                rows = cursor.fetchmany(FETCH_ROWS)
                if not rows:
                    break
                yield from view.evaluate_ndjson([row[0].encode() for row in rows])
    finally:
        raw.close()
