"""Search service: plan a request, run it with keyset paging, assemble the searchset Bundle.

`search` returns the Bundle as JSON bytes: entry resources are spliced in as the stored JSON
text, never re-serialized (only _summary/_elements subsets are rebuilt).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

import orjson
from sqlalchemy import Connection

from fhirlake.fhir import structure
from fhirlake.search.access import AccessConstraint
from fhirlake.search.errors import SearchError
from fhirlake.search.params import split_or
from fhirlake.search.planner import Context, Planner, Sql, _Ignored, _pid_test, date_pred, parse_name
from fhirlake.search.registry import registry
from fhirlake.search.subset import apply_elements, apply_summary

__all__ = ["SearchRequest", "SearchError", "search", "find_matches", "everything", "supported_params"]

DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_INCLUDE_ROUNDS = 4
IGNORED_CONTROL = {"_format", "_pretty"}
CONTROL = {"_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_cursor",
           "_contained", "_containedType", "_type", "_include:iterate", "_revinclude:iterate"} | IGNORED_CONTROL


@dataclass
class SearchRequest:
    resource_type: str | None
    params: list[tuple[str, str]]
    base_url: str
    lenient: bool = False
    compartment: tuple[str, str] | None = None
    access: AccessConstraint | None = None


@dataclass
class _Controls:
    count: int = DEFAULT_COUNT
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (code, descending)
    includes: list[tuple[str, bool]] = field(default_factory=list)  # (spec, iterate)
    revincludes: list[tuple[str, bool]] = field(default_factory=list)
    total: str | None = None
    summary: str | None = None
    elements: list[str] | None = None
    cursor: str | None = None
    types: list[str] | None = None
    kept: list[tuple[str, str]] = field(default_factory=list)  # for the self link


# ---------------------------------------------------------------- request parsing


def _split(params: Sequence[tuple[str, str]], ctx: Context) -> tuple[_Controls, list[tuple[str, str]]]:
    c = _Controls()
    filters = []
    for name, value in params:
        if name not in CONTROL:
            filters.append((name, value))
            continue
        try:
            if name in IGNORED_CONTROL:
                continue
            if name == "_count":
                if not value.isdigit():
                    ctx.fail(name, f"_count must be a non-negative integer, not '{value}'")
                c.count = min(int(value), MAX_COUNT)
            elif name == "_sort":
                for key in value.split(","):
                    if key:
                        c.sort.append((key.lstrip("-"), key.startswith("-")))
            elif name.startswith("_include"):
                c.includes.append((value, name.endswith(":iterate")))
            elif name.startswith("_revinclude"):
                c.revincludes.append((value, name.endswith(":iterate")))
            elif name == "_total":
                if value not in ("none", "estimate", "accurate"):
                    ctx.fail(name, f"_total must be none, estimate or accurate, not '{value}'")
                c.total = value
            elif name == "_summary":
                if value not in ("true", "false", "text", "data", "count"):
                    ctx.fail(name, f"_summary must be true, false, text, data or count, not '{value}'")
                c.summary = value
            elif name == "_elements":
                c.elements = [e.strip() for e in value.split(",") if e.strip()]
            elif name == "_cursor":
                c.cursor = value
                continue  # not part of the query's identity
            elif name == "_type":
                c.types = [t for t in value.split(",") if t]
                bad = [t for t in c.types if not structure.is_resource_type(t)]
                if bad:
                    ctx.fail(name, f"Unknown resource type '{bad[0]}' in _type")
            elif name in ("_contained", "_containedType"):
                ctx.fail(name, f"'{name}' is not supported: contained resources are not searched")
            c.kept.append((name, value))
        except _Ignored:
            continue
    return c, filters


# ---------------------------------------------------------------- sorting and cursors

_SORT_SQL = {
    "date": ("sp_date", "min({t}.lo)", "max({t}.hi)", "timestamptz", "'infinity'", "'-infinity'"),
    "string": ("sp_string", "min({t}.norm)", "max({t}.norm)", "text", "chr(1114111)", "''"),
    "token": ("sp_token", "min({t}.code)", "max({t}.code)", "text", "chr(1114111)", "''"),
    "number": ("sp_number", "min({t}.lo)", "max({t}.hi)", "numeric", "'Infinity'", "'-Infinity'"),
    "quantity": ("sp_number", "min({t}.lo)", "max({t}.hi)", "numeric", "'Infinity'", "'-Infinity'"),
    "reference": ("sp_reference", "min({t}.target_id)", "max({t}.target_id)", "text", "chr(1114111)", "''"),
    "uri": ("sp_uri", "min({t}.uri)", "max({t}.uri)", "text", "chr(1114111)", "''"),
}


def _sort_keys(sql: Sql, ctx: Context, types: list[str], sort: list[tuple[str, bool]]) -> list[tuple[str, str, bool]]:
    """(SQL expression, cast type, descending) per sort key; NULLs always sort last."""
    reg = registry()
    keys = []
    for code, desc in sort:
        if code == "_id":
            keys.append(("r.res_id", "text", desc))
            continue
        if code == "_lastUpdated":
            keys.append(("r.last_updated", "timestamptz", desc))
            continue
        params = [p for t in types if (p := reg.get(t, code)) is not None]
        if not params or params[0].type not in _SORT_SQL:
            try:
                ctx.fail("_sort", f"Cannot sort by '{code}': not a sortable parameter of {', '.join(types)}")
            except _Ignored:
                continue
        table, asc_agg, desc_agg, cast, hi_null, lo_null = _SORT_SQL[params[0].type]
        t = sql.alias("k")
        agg = (desc_agg if desc else asc_agg).format(t=t)
        pid_test = _pid_test(sql, f"{t}.pid", [p.pid for p in params])
        expr = f"coalesce((SELECT {agg} FROM {table} {t} WHERE {t}.rid = r.rid AND {pid_test}), {lo_null if desc else hi_null})"
        keys.append((expr, cast, desc))
    return keys


def _encode_cursor(values: list, rid: int, direction: str) -> str:
    raw = orjson.dumps({"k": [v.isoformat() if isinstance(v, datetime) else str(v) for v in values], "r": rid, "d": direction})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or not isinstance(data.get("r"), int):
            raise ValueError
        return data
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise SearchError(400, "Malformed paging cursor", "_cursor") from exc


def _keyset_condition(sql: Sql, keys: list[tuple[str, str, bool]], cursor: dict, backwards: bool) -> str:
    values = cursor["k"]
    if len(values) != len(keys):
        raise SearchError(400, "Paging cursor does not match _sort", "_cursor")
    ors = []
    for i in range(len(keys) + 1):
        ands = []
        for j in range(i):
            ands.append(f"k{j} = {sql.p(values[j])}::{keys[j][1]}")
        if i < len(keys):
            desc = keys[i][2] != backwards
            ands.append(f"k{i} {'<' if desc else '>'} {sql.p(values[i])}::{keys[i][1]}")
        else:
            ands.append(f"rid {'<' if backwards else '>'} {sql.p(cursor['r'])}")
        ors.append("(" + " AND ".join(ands) + ")")
    return "(" + " OR ".join(ors) + ")"


# ---------------------------------------------------------------- the search itself


def _base_conditions(planner: Planner, types: list[str], req: SearchRequest, filters: list[tuple[str, str]]) -> list[str]:
    sql = planner.sql
    conds = [f"r.res_type = {sql.p(types[0])}" if len(types) == 1 else f"r.res_type = ANY({sql.p(types)})", "NOT r.deleted"]
    if req.compartment is not None:
        conds.append(planner.compartment_condition("r", types, req.compartment[0], req.compartment[1]))
    visible = planner.visibility("r", types)
    if visible:
        conds.append(visible)
    conds.extend(planner.conditions("r", types, filters))
    return conds


def _types_of(req: SearchRequest, controls: _Controls) -> list[str]:
    if req.resource_type:
        if not structure.is_resource_type(req.resource_type):
            raise SearchError(404, f"Unknown resource type '{req.resource_type}'")
        return [req.resource_type]
    return controls.types or structure.resource_types()


def search(conn: Connection, req: SearchRequest) -> bytes:
    """Run a search and return the searchset Bundle as JSON bytes."""
    ctx = Context(req.base_url, req.access, req.compartment, req.lenient)
    controls, filters = _split(req.params, ctx)
    types = _types_of(req, controls)
    sql = Sql()
    planner = Planner(ctx, sql)
    conds = _base_conditions(planner, types, req, filters)
    kept_filters = [(n, v) for n, v in filters if n not in ctx.ignored]
    keys = _sort_keys(sql, ctx, types, controls.sort)
    where = " AND ".join(conds)
    where_args = dict(sql.args)

    count = controls.count
    summary_count = controls.summary == "count" or count == 0
    page: list[tuple] = []
    has_more = backwards = False
    cursor = _decode_cursor(controls.cursor) if controls.cursor else None
    if not summary_count:
        select_keys = "".join(f", {expr} AS k{i}" for i, (expr, _c, _d) in enumerate(keys))
        inner = f"SELECT r.rid, r.res_type, r.res_id{select_keys} FROM resource r WHERE {where}"
        backwards = bool(cursor and cursor.get("d") == "p")
        outer_where = _keyset_condition(sql, keys, cursor, backwards) if cursor else "true"
        order = ", ".join(f"k{i} {'DESC' if d != backwards else 'ASC'}" for i, (_e, _c, d) in enumerate(keys))
        order = (order + ", " if order else "") + ("rid DESC" if backwards else "rid ASC")
        # sort keys come back as text: the cursor stores them verbatim (infinities included)
        key_text = "".join(f", k{i}::text AS c{i}" for i in range(len(keys)))
        query = (f"SELECT rid, res_type, res_id{key_text} FROM ({inner}) s WHERE {outer_where}"
                 f" ORDER BY {order} LIMIT {sql.p(count + 1)}")
        page = list(conn.exec_driver_sql(query, sql.args).all())
        has_more = len(page) > count
        page = page[:count]
        if backwards:
            page.reverse()

    total = None
    mode = controls.total or ("accurate" if summary_count else None)
    if mode == "accurate":
        total = conn.exec_driver_sql(f"SELECT count(*) FROM resource r WHERE {where}", where_args).scalar()
    elif mode == "estimate":
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM resource r WHERE {where}", where_args).scalar()
        total = int((plan if isinstance(plan, list) else orjson.loads(plan))[0]["Plan"]["Plan Rows"])
    elif mode is None and cursor is None and not has_more:
        total = len(page)

    match_rids = [row[0] for row in page]
    included = _includes(conn, ctx, [(row[0], row[1]) for row in page], controls) if page else []

    link_base = _link_base(req)
    query_params = kept_filters + controls.kept
    links = [("self", _url(link_base, query_params + ([("_cursor", controls.cursor)] if controls.cursor else [])))]
    n_keys = len(keys)
    if page:
        last, first = page[-1], page[0]
        if has_more or backwards:
            links.append(("next", _url(link_base, query_params + [("_cursor", _encode_cursor(list(last[3:3 + n_keys]), last[0], "n"))])))
        if cursor is not None and (has_more or not backwards):
            links.append(("previous", _url(link_base, query_params + [("_cursor", _encode_cursor(list(first[3:3 + n_keys]), first[0], "p"))])))
    return _bundle(conn, req.base_url, total, links, match_rids, included, controls)


def _link_base(req: SearchRequest) -> str:
    base = req.base_url.rstrip("/")
    if req.compartment:
        base += f"/{req.compartment[0]}/{req.compartment[1]}"
    return f"{base}/{req.resource_type}" if req.resource_type else base


def _url(base: str, params: list[tuple[str, str]]) -> str:
    if not params:
        return base
    return base + "?" + "&".join(f"{quote(n, safe=':._-')}={quote(v, safe=':|,$/._-')}" for n, v in params)


# ---------------------------------------------------------------- _include / _revinclude


def _include_pids(spec: str, source_types: set[str], ctx: Context, name: str) -> tuple[list[int], str | None, set[str]]:
    """(reference pids, target type filter, source types the spec applies to)."""
    reg = registry()
    if spec == "*":
        return [p.pid for t in source_types for p in reg.params(t).values() if p.type == "reference"], None, source_types
    pieces = spec.split(":")
    if len(pieces) not in (2, 3) or not structure.is_resource_type(pieces[0]):
        ctx.fail(name, f"Malformed {name} '{spec}'")
    res_type, code = pieces[0], pieces[1]
    target = pieces[2] if len(pieces) == 3 else None
    if code == "*":
        return [p.pid for p in reg.params(res_type).values() if p.type == "reference"], target, {res_type}
    param = reg.get(res_type, code)
    if param is None or param.type != "reference":
        ctx.fail(name, f"'{res_type}' has no reference parameter '{code}'")
        raise AssertionError
    return [param.pid], target, {res_type}


def _includes(conn: Connection, ctx: Context, matches: list[tuple[int, str]], controls: _Controls) -> list[int]:
    seen = {rid for rid, _t in matches}
    result: list[int] = []
    frontier = matches
    for round_no in range(MAX_INCLUDE_ROUNDS):
        if not frontier:
            break
        found: list[tuple[int, str]] = []
        for kind, specs in (("_include", controls.includes), ("_revinclude", controls.revincludes)):
            for spec, iterate in specs:
                if round_no > 0 and not iterate:
                    continue
                try:
                    found.extend(_include_once(conn, ctx, kind, spec, frontier))
                except _Ignored:
                    continue
        frontier = []
        for rid, res_type in found:
            if rid not in seen:
                seen.add(rid)
                result.append(rid)
                frontier.append((rid, res_type))
    return result


def _include_once(conn: Connection, ctx: Context, kind: str, spec: str, sources: list[tuple[int, str]]) -> list[tuple[int, str]]:
    sql = Sql()
    planner = Planner(ctx, sql)
    if kind == "_include":
        pids, target, applies = _include_pids(spec, {t for _r, t in sources}, ctx, kind)
        rids = [rid for rid, t in sources if t in applies]
        if not rids or not pids:
            return []
        visible = planner.visibility("t", [target] if target else None)
        query = (
            "SELECT DISTINCT t.rid, t.res_type FROM sp_reference ref"
            " JOIN resource t ON t.res_type = ref.target_type AND t.res_id = ref.target_id"
            f" WHERE ref.rid = ANY({sql.p(rids)}) AND ref.pid = ANY({sql.p(pids)}) AND NOT t.deleted"
            + (f" AND t.res_type = {sql.p(target)}" if target else "")
            + (f" AND {visible}" if visible else "")
        )
    else:
        if spec == "*":
            pids = [p.pid for ps in registry().by_type.values() for p in ps.values() if p.type == "reference"]
            target, source_type = None, None
        else:
            pids, target, applies = _include_pids(spec, set(), ctx, kind)
            source_type = next(iter(applies))
        rids = [rid for rid, t in sources if target is None or t == target]
        if not rids or not pids:
            return []
        visible = planner.visibility("s", [source_type] if source_type else None)
        query = (
            "SELECT DISTINCT s.rid, s.res_type FROM resource m"
            " JOIN sp_reference ref ON ref.target_id = m.res_id AND ref.target_type = m.res_type"
            " JOIN resource s ON s.rid = ref.rid"
            f" WHERE m.rid = ANY({sql.p(rids)}) AND ref.pid = ANY({sql.p(pids)}) AND NOT s.deleted"
            + (f" AND {visible}" if visible else "")
        )
    return [(r[0], r[1]) for r in conn.exec_driver_sql(query, sql.args).all()]


# ---------------------------------------------------------------- Bundle assembly


def _fetch_content(conn: Connection, rids: list[int]) -> dict[int, tuple[str, str, str]]:
    if not rids:
        return {}
    rows = conn.exec_driver_sql(
        "SELECT r.rid, r.res_type, r.res_id, v.content FROM resource r"
        " JOIN resource_version v ON v.rid = r.rid AND v.version = r.version WHERE r.rid = ANY(%s)",
        (rids,),
    ).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _entry(base: str, res_type: str, res_id: str, content: str, mode: str, controls: _Controls) -> bytes:
    if controls.elements is not None or controls.summary in ("true", "text", "data"):
        resource = orjson.loads(content)
        if controls.summary in ("true", "text", "data"):
            resource = apply_summary(resource, controls.summary)
        if controls.elements is not None and mode == "match":
            resource = apply_elements(resource, controls.elements)
        body = orjson.dumps(resource)
    else:
        body = content.encode()
    full_url = orjson.dumps(f"{base}/{res_type}/{res_id}")
    return b'{"fullUrl":' + full_url + b',"resource":' + body + b',"search":{"mode":"' + mode.encode() + b'"}}'


def _bundle(conn: Connection, base_url: str, total: int | None, links: list[tuple[str, str]], match_rids: list[int],
            included: list[int], controls: _Controls) -> bytes:
    base = base_url.rstrip("/")
    contents = _fetch_content(conn, match_rids + included)
    entries = []
    for rids, mode in ((match_rids, "match"), (included, "include")):
        for rid in rids:
            found = contents.get(rid)
            if found and found[2] is not None:
                entries.append(_entry(base, found[0], found[1], found[2], mode, controls))
    head = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")},
        "type": "searchset",
    }
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    out = orjson.dumps(head)
    if not entries:
        return out
    return out[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


# ---------------------------------------------------------------- other entry points


def find_matches(conn: Connection, res_type: str, query_string: str, access: AccessConstraint | None = None) -> list[tuple[int, str]]:
    """(rid, id) of the current resources of res_type matching a query string (conditional
    create/update/delete, conditional references). Unknown parameters raise SearchError."""
    if not structure.is_resource_type(res_type):
        raise SearchError(400, f"Unknown resource type '{res_type}'")
    params = parse_qsl(query_string.lstrip("?"), keep_blank_values=True)
    ctx = Context("", access)
    sql = Sql()
    planner = Planner(ctx, sql)
    filters = [(n, v) for n, v in params if n not in CONTROL]
    if not filters:
        raise SearchError(400, "A conditional operation needs at least one search parameter")
    conds = _base_conditions(planner, [res_type], SearchRequest(res_type, filters, ""), filters)
    rows = conn.exec_driver_sql(f"SELECT r.rid, r.res_id FROM resource r WHERE {' AND '.join(conds)} ORDER BY r.rid", sql.args)
    return [(row[0], row[1]) for row in rows]


def everything(conn: Connection, patient_id: str | None, params: Sequence[tuple[str, str]], base_url: str,
               access: AccessConstraint | None = None) -> bytes:
    """Patient/[id]/$everything (or Patient/$everything for every visible patient): the patients,
    their compartments and the resources those reference, paged by rid."""
    reg = registry()
    ctx = Context(base_url, access)
    sql = Sql()
    planner = Planner(ctx, sql)
    count, cursor, types, kept = DEFAULT_COUNT, None, None, []
    since = start = end = None
    for name, value in params:
        if name == "_count":
            if not value.isdigit():
                raise SearchError(400, "_count must be a non-negative integer", "_count")
            count = min(int(value), MAX_COUNT)
        elif name == "_cursor":
            cursor = _decode_cursor(value)
            continue
        elif name == "_type":
            types = [t for t in value.split(",") if t]
        elif name == "_since":
            since = value
        elif name == "start":
            start = value
        elif name == "end":
            end = value
        elif name not in IGNORED_CONTROL:
            raise SearchError(400, f"Unknown parameter '{name}' for $everything", name)
        kept.append((name, value))
    def patient_ids() -> str:  # a fresh placeholder set each time it appears in the SQL text
        if patient_id is not None:
            return f"{sql.p([patient_id])}::text[]"
        visible = planner.visibility("p", ["Patient"])
        return ("ARRAY(SELECT p.res_id FROM resource p WHERE p.res_type = 'Patient' AND NOT p.deleted"
                + (f" AND {visible}" if visible else "") + ")")

    comp_pids = [p.pid for t in reg.compartments["Patient"] for p in reg.compartment_params(t)]
    members = (
        f"SELECT r.rid FROM resource r WHERE r.res_type = 'Patient' AND r.res_id = ANY({patient_ids()})"
        f" UNION SELECT c.rid FROM sp_reference c WHERE c.pid = ANY({sql.p(comp_pids)})"
        f" AND c.target_type = 'Patient' AND c.target_id = ANY({patient_ids()})"
    )
    conds = ["NOT r.deleted"]
    # members plus what they reference (practitioners, organizations, medications, ...)
    conds.append(
        "(r.rid IN (SELECT rid FROM m) OR r.rid IN (SELECT t.rid FROM sp_reference x JOIN resource t"
        " ON t.res_type = x.target_type AND t.res_id = x.target_id WHERE x.rid IN (SELECT rid FROM m)))"
    )
    if types:
        conds.append(f"r.res_type = ANY({sql.p(types)})")
    if since:
        conds.append(planner._lastupdated_pred("r", "ge" + since.lstrip("gel"), "_since"))
    if start or end:
        date_pids = [p.pid for ps in reg.by_type.values() for code in ("date",) if (p := ps.get(code)) and p.type == "date"]
        undated = f"SELECT d.rid FROM sp_date d WHERE d.pid = ANY({sql.p(date_pids)})"
        dated = f"SELECT d.rid FROM sp_date d WHERE d.pid = ANY({sql.p(date_pids)})"
        preds = []
        if start:
            preds.append(date_pred(sql, "d", "ge" + start, "start", ctx))
        if end:
            preds.append(date_pred(sql, "d", "le" + end, "end", ctx))
        conds.append(f"(r.rid NOT IN ({undated}) OR r.rid IN ({dated} AND {' AND '.join(preds)}))")
    visible = planner.visibility("r", None)
    if visible:
        conds.append(visible)
    if cursor:
        conds.append(f"r.rid > {sql.p(cursor['r'])}")
    query = f"WITH m AS ({members}) SELECT r.rid FROM resource r WHERE {' AND '.join(conds)} ORDER BY r.rid LIMIT {sql.p(count + 1)}"
    rows = [r[0] for r in conn.exec_driver_sql(query, sql.args).all()]
    has_more = len(rows) > count
    rows = rows[:count]
    link_base = base_url.rstrip("/") + (f"/Patient/{patient_id}/$everything" if patient_id else "/Patient/$everything")
    links = [("self", _url(link_base, kept + ([("_cursor", _encode_cursor([], cursor["r"], "n"))] if cursor else [])))]
    if has_more and rows:
        links.append(("next", _url(link_base, kept + [("_cursor", _encode_cursor([], rows[-1], "n"))])))
    total = len(rows) if not has_more and cursor is None else None
    return _bundle(conn, base_url, total, links, rows, [], _Controls())


def supported_params(res_type: str) -> list[dict]:
    """Search parameters of a type for the CapabilityStatement (name, type, definition, documentation)."""
    out = [{"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
            "documentation": "When the resource version last changed"}]
    for param in registry().params(res_type).values():
        if param.code == "_lastUpdated" or param.type == "special" or not param.expression and param.code != "_id":
            continue
        out.append({"name": param.code, "type": param.type, "definition": param.url, "documentation": param.description})
    return out


def parse_query_string(query_string: str) -> list[tuple[str, str]]:
    """Query string or form body -> (name, value) pairs, order kept."""
    return parse_qsl(query_string.lstrip("?"), keep_blank_values=True)


def names_of(params: Sequence[tuple[str, str]]) -> list[str]:
    return [parse_name(n).code for n, _v in params]


def split_values(value: str) -> list[str]:
    return split_or(value)
