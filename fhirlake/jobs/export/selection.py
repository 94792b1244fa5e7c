"""Which resources an export holds, as SQL over the ``resource`` table inside the snapshot.

Patient and Group level exports select the Patient compartment through the search index
(``sp_reference`` rows of the official CompartmentDefinition's parameters): no JSON is scanned.
The chosen rids go to temporary tables of the snapshot transaction, so every later query (type
counts, file boundaries, the COPY itself) sees the same set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from psycopg import Connection as PgConnection
from sqlalchemy import Connection

from fhirlake.fhir import structure
from fhirlake.jobs.export.params import REFERENCED_TYPES, ExportRequest


@dataclass
class Selection:
    """The SQL condition (over alias ``r``) shared by all queries of one export, per type."""

    request: ExportRequest
    types: list[str]
    members: bool = False  # restrict to pg_temp.export_members
    patients: list[str] | None = None  # with ``members``: the patients asked for (None: every patient)
    filtered_types: set[str] = field(default_factory=set)  # types restricted by export_filter
    errors: list[dict] = field(default_factory=list)  # OperationOutcomes for the error file

    def condition(self, params: dict, res_type: str | None) -> str:
        conds = ["NOT r.deleted"]
        if res_type is not None:
            params["res_type"] = res_type
            conds.append("r.res_type = %(res_type)s")
        if self.request.since:
            params["since"] = self.request.since_dt()
            conds.append("r.last_updated >= %(since)s")
        if self.request.until:
            params["until"] = self.request.until_dt()
            conds.append("r.last_updated <= %(until)s")
        if self.members:
            conds.append("r.rid IN (SELECT rid FROM export_members)")
        if res_type is not None and res_type in self.filtered_types:
            conds.append("r.rid IN (SELECT rid FROM export_filter WHERE res_type = %(res_type)s)")
        return " AND ".join(conds)


def compartment_types() -> list[str]:
    from fhirlake.search.registry import registry

    return sorted({"Patient", *registry().compartments.get("Patient", {})})


def candidate_types(req: ExportRequest) -> list[str]:
    """Types an export may hold before looking at the data."""
    if req.level == "system":
        allowed = list(structure.resource_types())
    else:
        allowed = compartment_types() + (list(REFERENCED_TYPES) if req.include_referenced else [])
    if req.types:
        return [t for t in req.types if t in allowed]
    return sorted(set(allowed))


def group_patients(sa_conn: Connection, group_id: str) -> list[str] | None:
    """Patient ids among a Group's active members; None when the Group does not exist."""
    from fhirlake.store.resources import read_current

    found = read_current(sa_conn, "Group", group_id)
    if found is None or found.deleted or not found.content:
        return None
    group = orjson.loads(found.content)
    ids = []
    for member in group.get("member") or []:
        if member.get("inactive") is True:
            continue
        ref = (member.get("entity") or {}).get("reference") or ""
        if ref.startswith("Patient/"):
            ids.append(ref.split("/", 1)[1].split("/_history", 1)[0])
    return ids


def build(sa_conn: Connection, raw: PgConnection, req: ExportRequest) -> Selection:
    """Fill the temporary selection tables; raise FhirError only for problems found at run time."""
    types = candidate_types(req)
    sel = Selection(req, types)
    if req.level != "system":
        patients = req.patients
        if req.level == "group":
            members = group_patients(sa_conn, req.group_id or "")
            members = members or []
            patients = [p for p in members if patients is None or p in patients]
        _fill_members(raw, patients, req.include_referenced)
        sel.members = True
        sel.patients = patients
    filters = _filters(req)
    if filters:
        _fill_filters(sa_conn, raw, filters, sel)
    return sel


def _fill_members(raw: PgConnection, patients: list[str] | None, include_referenced: bool) -> None:
    from fhirlake.search.registry import registry

    reg = registry()
    pids = sorted({p.pid for t in reg.compartments.get("Patient", {}) for p in reg.compartment_params(t)})
    patient_test = "" if patients is None else " AND p.res_id = ANY(%(patients)s)"
    params = {"pids": pids, "patients": patients}
    with raw.cursor() as cur:
        cur.execute("CREATE TEMP TABLE export_members (rid bigint PRIMARY KEY) ON COMMIT DROP")
        cur.execute(
            "INSERT INTO export_members"
            f" SELECT p.rid FROM resource p WHERE p.res_type = 'Patient' AND NOT p.deleted{patient_test}"
            " UNION SELECT c.rid FROM sp_reference c JOIN resource p ON p.res_type = 'Patient'"
            f" AND p.res_id = c.target_id AND NOT p.deleted WHERE c.pid = ANY(%(pids)s)"
            f" AND c.target_type = 'Patient'{patient_test}",
            params,
        )
        if include_referenced:
            cur.execute(
                "INSERT INTO export_members SELECT DISTINCT t.rid FROM sp_reference x"
                " JOIN export_members m ON m.rid = x.rid"
                " JOIN resource t ON t.res_type = x.target_type AND t.res_id = x.target_id AND NOT t.deleted"
                " WHERE x.target_type = ANY(%(types)s) ON CONFLICT DO NOTHING",
                {"types": list(REFERENCED_TYPES)},
            )
        cur.execute("ANALYZE export_members")


def _filters(req: ExportRequest) -> dict[str, list[list[str]]]:
    """Per type, conditions that must all hold, each an OR of search queries."""
    out: dict[str, list[list[str]]] = {}
    for res_type, queries in req.type_filters.items():
        out.setdefault(res_type, []).append(queries)
    for res_type, queries in req.access_filters.items():
        out.setdefault(res_type, []).append(queries)
    return out


def _fill_filters(sa_conn: Connection, raw: PgConnection, filters: dict[str, list[list[str]]], sel: Selection) -> None:
    from fhirlake.search.service import find_matches

    with raw.cursor() as cur:
        cur.execute("CREATE TEMP TABLE export_filter (res_type text, rid bigint) ON COMMIT DROP")
    for res_type, conditions in filters.items():
        allowed: set[int] | None = None
        for alternatives in conditions:
            matched: set[int] = set()
            for query in alternatives:
                try:
                    with sa_conn.begin_nested():  # a failing query must not abort the snapshot
                        matched.update(rid for rid, _id in find_matches(sa_conn, res_type, query))
                except Exception as exc:  # noqa: BLE001 - reported in the error file, export goes on
                    sel.errors.append(_outcome(f"_typeFilter {res_type}?{query} could not run: {exc}"))
            allowed = matched if allowed is None else allowed & matched
        sel.filtered_types.add(res_type)
        rows = [(res_type, rid) for rid in sorted(allowed or ())]
        if rows:
            with raw.cursor() as cur, cur.copy("COPY export_filter (res_type, rid) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    with raw.cursor() as cur:
        cur.execute("CREATE INDEX ON export_filter (res_type, rid)")


def _outcome(message: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": message}]}
