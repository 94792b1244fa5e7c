"""Plan search parameters into SQL conditions over the typed index tables.

Every condition is a SQL fragment on a ``resource`` row alias (``<alias>.rid`` etc.) with its
values bound as named ``%(pN)s`` parameters collected in a :class:`Sql` builder. Parameters of
one name with comma-separated values become one subquery with OR'ed predicates (one index scan);
repeated names become separate conditions (AND).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fhirlake.fhir import structure
from fhirlake.search.access import AccessConstraint
from fhirlake.search.errors import SearchError
from fhirlake.search.params import split_escaped, split_or, split_prefix, token_parts, unescape
from fhirlake.search.registry import SearchParam, registry
from fhirlake.search.rows import parse_reference
from fhirlake.search.values import date_range, decimal_precision_range, normalize_string

TABLE_OF_TYPE = {
    "token": "sp_token",
    "string": "sp_string",
    "date": "sp_date",
    "number": "sp_number",
    "quantity": "sp_number",
    "reference": "sp_reference",
    "uri": "sp_uri",
}
UNSUPPORTED_MODIFIERS = {"in", "not-in"}


class Sql:
    """Collects bound values while SQL text is generated. Placeholders are named, so fragments
    may be generated in any order and spliced together."""

    def __init__(self) -> None:
        self.args: dict[str, object] = {}
        self._alias = 0

    def p(self, value: object) -> str:
        name = f"p{len(self.args)}"
        self.args[name] = value
        return f"%({name})s"

    def alias(self, stem: str) -> str:
        self._alias += 1
        return f"{stem}{self._alias}"


@dataclass
class Context:
    base_url: str
    access: AccessConstraint | None = None
    compartment: tuple[str, str] | None = None
    lenient: bool = False
    ignored: list[str] = field(default_factory=list)

    def fail(self, name: str, message: str, status: int = 400) -> None:
        """Raise for a bad parameter, or, when lenient, record it as ignored."""
        if self.lenient and status == 400:
            self.ignored.append(name)
            raise _Ignored(name)
        raise SearchError(status, message, name)


class _Ignored(Exception):
    pass


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pids(params: Sequence[SearchParam], suffix: str | None = None) -> list[int]:
    return [p.sub_pid(suffix) if suffix else p.pid for p in params]


def _pid_test(sql: Sql, col: str, pids: list[int]) -> str:
    if len(pids) == 1:
        return f"{col} = {sql.p(pids[0])}"
    return f"{col} = ANY({sql.p(pids)})"


# ---------------------------------------------------------------- value predicates per type


def _token_pred(sql: Sql, t: str, value: str, name: str, ctx: Context) -> str:
    has_system, system, code = token_parts(value)
    if not has_system:
        return f"{t}.code = {sql.p(code)}"
    if system is None and code is None:
        ctx.fail(name, f"Malformed token value '{value}' for parameter '{name}'")
    if system is None:
        return f"({t}.system IS NULL AND {t}.code = {sql.p(code)})"
    if code is None:
        return f"{t}.system = {sql.p(system)}"
    return f"({t}.system = {sql.p(system)} AND {t}.code = {sql.p(code)})"


def _of_type_pred(sql: Sql, t: str, value: str, name: str, ctx: Context) -> str:
    pieces = [unescape(x) for x in split_escaped(value, "|")]
    if len(pieces) != 3 or not pieces[1] or not pieces[2]:
        ctx.fail(name, f"'{name}' needs system|code|value")
    system, code, ident = pieces
    cond = f"{t}.code = {sql.p(code + '|' + ident)}"
    return f"({t}.system = {sql.p(system)} AND {cond})" if system else cond


def _string_pred(sql: Sql, t: str, value: str, modifier: str | None) -> str:
    raw = unescape(value)
    norm = normalize_string(raw)[:255]
    if modifier == "exact":
        return f"({t}.norm = {sql.p(norm)} AND {t}.exact = {sql.p(raw)})"
    if modifier == "contains":
        return f"{t}.norm LIKE {sql.p('%' + _like_escape(norm) + '%')}"
    return f"{t}.norm LIKE {sql.p(_like_escape(norm) + '%')}"


def date_pred(sql: Sql, t: str, value: str, name: str, ctx: Context) -> str:
    prefix, rest = split_prefix(value)
    rng = date_range(rest)
    if rng is None:
        ctx.fail(name, f"Malformed date '{value}' for parameter '{name}'")
        raise AssertionError
    lo, hi = sql.p(rng[0]), sql.p(rng[1])
    contained = f"({t}.lo >= {lo} AND {t}.hi <= {hi})"
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return f"NOT {contained}"
    if prefix == "gt":
        return f"{t}.hi > {hi}"
    if prefix == "lt":
        return f"{t}.lo < {lo}"
    if prefix == "ge":
        return f"({t}.hi > {hi} OR {contained})"
    if prefix == "le":
        return f"({t}.lo < {lo} OR {contained})"
    if prefix == "sa":
        return f"{t}.lo >= {hi}"
    if prefix == "eb":
        return f"{t}.hi <= {lo}"
    # ap: overlap with the search range widened by 10% of its distance from now
    now = datetime.now(UTC)
    slack = max(abs(now - rng[0]), abs(now - rng[1])) / 10 + timedelta(seconds=0)
    return f"({t}.lo < {sql.p(rng[1] + slack)} AND {t}.hi > {sql.p(rng[0] - slack)})"


def _number_pred(sql: Sql, t: str, value: str, name: str, ctx: Context, quantity: bool) -> str:
    pieces = [unescape(x) for x in split_escaped(value, "|")] if quantity else [value]
    prefix, number = split_prefix(pieces[0])
    parsed = decimal_precision_range(number)
    if parsed is None or len(pieces) not in (1, 3):
        ctx.fail(name, f"Malformed number '{value}' for parameter '{name}'")
        raise AssertionError
    v, slo, shi = parsed
    conds = []
    if prefix == "eq":
        conds.append(f"{t}.lo >= {sql.p(slo)} AND {t}.hi < {sql.p(shi)}")
    elif prefix == "ne":
        conds.append(f"NOT ({t}.lo >= {sql.p(slo)} AND {t}.hi < {sql.p(shi)})")
    elif prefix == "ap":
        margin = abs(v) / Decimal(10)
        conds.append(f"{t}.lo <= {sql.p(v + margin)} AND {t}.hi >= {sql.p(v - margin)}")
    else:
        col, op = {"gt": ("hi", ">"), "lt": ("lo", "<"), "ge": ("hi", ">="), "le": ("lo", "<="),
                   "sa": ("lo", ">"), "eb": ("hi", "<")}[prefix]
        conds.append(f"{t}.{col} {op} {sql.p(v)}")
    if len(pieces) == 3:
        system, code = pieces[1], pieces[2]
        if system:
            conds.append(f"{t}.system = {sql.p(system)}")
        if code:
            c = sql.p(code)
            conds.append(f"({t}.code = {c} OR {t}.unit = {sql.p(code)})" if not system else f"{t}.code = {c}")
    return "(" + " AND ".join(conds) + ")"


def _uri_pred(sql: Sql, t: str, value: str, modifier: str | None) -> str:
    raw = unescape(value)
    if modifier == "below":
        return f"{t}.uri LIKE {sql.p(_like_escape(raw) + '%')}"
    if modifier == "above":
        prefixes = []
        cut = raw
        while cut and "/" in cut:
            prefixes.append(cut)
            cut = cut.rsplit("/", 1)[0]
        return f"{t}.uri = ANY({sql.p(prefixes or [raw])})"
    return f"{t}.uri = {sql.p(raw)}"


def _reference_pred(sql: Sql, t: str, value: str, type_modifier: str | None, ctx: Context) -> str:
    raw = unescape(value)
    base = ctx.base_url.rstrip("/") + "/"
    if raw.startswith(base):
        raw = raw[len(base):]
    if "://" in raw or raw.startswith("urn:"):
        if "|" in raw:
            return f"{t}.url = {sql.p(raw)}"
        return f"({t}.url = {sql.p(raw)} OR {t}.url LIKE {sql.p(_like_escape(raw) + '|%')})"
    target_type, target_id = parse_reference(raw)
    if target_type is None:
        target_id = raw
        target_type = type_modifier
    elif type_modifier and type_modifier != target_type:
        return "false"
    cond = f"{t}.target_id = {sql.p(target_id)}"
    if target_type:
        cond += f" AND {t}.target_type = {sql.p(target_type)}"
    return f"({cond})"


# ---------------------------------------------------------------- parameter conditions


@dataclass
class ParsedName:
    code: str
    modifier: str | None
    chain: str | None  # rest of a chained name after the first '.'


def parse_name(name: str) -> ParsedName:
    head, dot, rest = name.partition(".")
    code, _colon, modifier = head.partition(":")
    return ParsedName(code, modifier or None, rest if dot else None)


class Planner:
    def __init__(self, ctx: Context, sql: Sql) -> None:
        self.ctx = ctx
        self.sql = sql
        self.reg = registry()

    # -- entry points

    def conditions(self, alias: str, types: list[str], params: Sequence[tuple[str, str]]) -> list[str]:
        """AND-ed conditions for the given (name, value) pairs; names must not be control params."""
        out = []
        for name, value in params:
            try:
                out.append(self.condition(alias, types, name, value))
            except _Ignored:
                continue
        return out

    def condition(self, alias: str, types: list[str], name: str, value: str) -> str:
        ctx = self.ctx
        if name.startswith("_has:"):
            return self._has(alias, types, name, value)
        parsed = parse_name(name)
        if parsed.modifier in UNSUPPORTED_MODIFIERS:
            ctx.fail(name, f"Modifier ':{parsed.modifier}' needs terminology services, which this server does not offer")
        if parsed.code == "_id" and parsed.chain is None:
            return self._id_condition(alias, name, parsed, value)
        if parsed.code == "_lastUpdated" and parsed.chain is None:
            if parsed.modifier == "missing":
                return "false" if value == "true" else "true"
            if parsed.modifier:
                ctx.fail(name, f"Unknown modifier on '{parsed.code}'")
            preds = [self._lastupdated_pred(alias, v, name) for v in split_or(value)]
            return "(" + " OR ".join(preds) + ")"
        params = [p for t in types if (p := self.reg.get(t, parsed.code)) is not None]
        if not params:
            ctx.fail(name, f"Unknown search parameter '{parsed.code}' for {', '.join(types) or 'this search'}")
        if len(params) != len(types) and len(types) > 1:
            ctx.fail(name, f"Parameter '{parsed.code}' is not defined for every type searched")
        ptype = params[0].type
        if ptype == "special" or (params[0].expression is None):
            ctx.fail(name, f"Search parameter '{parsed.code}' is not supported")
        if parsed.chain is not None:
            if ptype != "reference":
                ctx.fail(name, f"'{parsed.code}' is not a reference parameter and cannot be chained")
            return self._chain(alias, params, parsed, name, value)
        if parsed.modifier == "missing":
            return self._missing(alias, params, ptype, name, value)
        if ptype == "composite":
            return self._composite(alias, params, name, value)
        return self._value_condition(alias, params, ptype, parsed.modifier, name, value)

    # -- helpers

    def _id_condition(self, alias: str, name: str, parsed: ParsedName, value: str) -> str:
        if parsed.modifier == "missing":
            return "false" if value == "true" else "true"
        if parsed.modifier not in (None, "not", "exact"):
            self.ctx.fail(name, f"Unknown modifier ':{parsed.modifier}' on '_id'")
        ids = [unescape(v) for v in split_or(value)]
        cond = f"{alias}.res_id = ANY({self.sql.p(ids)})"
        return f"NOT ({cond})" if parsed.modifier == "not" else cond

    def _lastupdated_pred(self, alias: str, value: str, name: str) -> str:
        prefix, rest = split_prefix(value)
        rng = date_range(rest)
        if rng is None:
            self.ctx.fail(name, f"Malformed date '{value}' for parameter '{name}'")
            raise AssertionError
        p = self.sql.p
        col = f"{alias}.last_updated"
        return {
            "eq": f"({col} >= {p(rng[0])} AND {col} < {p(rng[1])})",
            "ne": f"NOT ({col} >= {p(rng[0])} AND {col} < {p(rng[1])})",
            "gt": f"{col} >= {p(rng[1])}", "sa": f"{col} >= {p(rng[1])}",
            "lt": f"{col} < {p(rng[0])}", "eb": f"{col} < {p(rng[0])}",
            "ge": f"{col} >= {p(rng[0])}", "le": f"{col} < {p(rng[1])}",
            "ap": f"({col} >= {p(rng[0] - timedelta(days=1))} AND {col} < {p(rng[1] + timedelta(days=1))})",
        }[prefix]

    def _missing(self, alias: str, params: list[SearchParam], ptype: str, name: str, value: str) -> str:
        if value not in ("true", "false"):
            self.ctx.fail(name, f"':missing' takes true or false, not '{value}'")
        if ptype == "composite":
            table, pids = "sp_token", _pids(params, "c0")
        else:
            table, pids = TABLE_OF_TYPE[ptype], _pids(params)
        exists = f"EXISTS (SELECT 1 FROM {table} m WHERE m.rid = {alias}.rid AND {_pid_test(self.sql, 'm.pid', pids)})"
        return f"NOT {exists}" if value == "true" else exists

    def _value_condition(self, alias: str, params: list[SearchParam], ptype: str, modifier: str | None,
                         name: str, value: str) -> str:
        sql, ctx = self.sql, self.ctx
        values = split_or(value)
        if any(v == "" for v in values):
            ctx.fail(name, f"Empty value for parameter '{name}'")
        negate = False
        table = TABLE_OF_TYPE[ptype]
        pids = _pids(params)
        t = sql.alias("x")
        if ptype == "token":
            if modifier == "text":
                table, pids = "sp_string", _pids(params, "text")
                preds = [_string_pred(sql, t, v, None) for v in values]
            elif modifier == "of-type":
                pids = _pids(params, "of-type")
                preds = [_of_type_pred(sql, t, v, name, ctx) for v in values]
            elif modifier in (None, "not"):
                negate = modifier == "not"
                preds = [_token_pred(sql, t, v, name, ctx) for v in values]
            else:
                ctx.fail(name, f"Unknown modifier ':{modifier}' for token parameter '{params[0].code}'")
        elif ptype == "string":
            if modifier not in (None, "exact", "contains"):
                ctx.fail(name, f"Unknown modifier ':{modifier}' for string parameter '{params[0].code}'")
            preds = [_string_pred(sql, t, v, modifier) for v in values]
        elif ptype == "date":
            if modifier:
                ctx.fail(name, f"Unknown modifier ':{modifier}' for date parameter '{params[0].code}'")
            preds = [date_pred(sql, t, v, name, ctx) for v in values]
        elif ptype in ("number", "quantity"):
            if modifier:
                ctx.fail(name, f"Unknown modifier ':{modifier}' for {ptype} parameter '{params[0].code}'")
            preds = [_number_pred(sql, t, v, name, ctx, ptype == "quantity") for v in values]
        elif ptype == "uri":
            if modifier not in (None, "below", "above"):
                ctx.fail(name, f"Unknown modifier ':{modifier}' for uri parameter '{params[0].code}'")
            preds = [_uri_pred(sql, t, v, modifier) for v in values]
        elif ptype == "reference":
            if modifier == "identifier":
                table, pids = "sp_token", _pids(params, "identifier")
                preds = [_token_pred(sql, t, v, name, ctx) for v in values]
            elif modifier is None or structure.is_resource_type(modifier):
                preds = [_reference_pred(sql, t, v, modifier, ctx) for v in values]
            else:
                ctx.fail(name, f"Unknown modifier ':{modifier}' for reference parameter '{params[0].code}'")
        else:
            ctx.fail(name, f"Search parameter type '{ptype}' is not supported")
        body = " OR ".join(preds) if len(preds) > 1 else preds[0]
        sub = f"SELECT {t}.rid FROM {table} {t} WHERE {_pid_test(sql, t + '.pid', pids)} AND ({body})"
        return f"{alias}.rid {'NOT IN' if negate else 'IN'} ({sub})"

    def _composite(self, alias: str, params: list[SearchParam], name: str, value: str) -> str:
        sql, ctx = self.sql, self.ctx
        components = params[0].components
        alternatives = []
        for alt in split_or(value):
            parts = split_escaped(alt, "$")
            if len(parts) != len(components):
                ctx.fail(name, f"'{name}' needs {len(components)} '$'-separated components")
            froms, where = [], []
            first = None
            for i, (component, part) in enumerate(zip(components, parts, strict=True)):
                t = sql.alias("c")
                table = TABLE_OF_TYPE[component.type]
                pids = sorted({p.component_pid(i) for p in params})
                if component.type == "token":
                    pred = _token_pred(sql, t, part, name, ctx)
                elif component.type == "string":
                    pred = _string_pred(sql, t, part, None)
                elif component.type == "date":
                    pred = date_pred(sql, t, part, name, ctx)
                elif component.type in ("number", "quantity"):
                    pred = _number_pred(sql, t, part, name, ctx, component.type == "quantity")
                elif component.type == "uri":
                    pred = _uri_pred(sql, t, part, None)
                else:
                    ctx.fail(name, f"Composite component type '{component.type}' is not supported")
                if first is None:
                    first = t
                    froms.append(f"{table} {t}")
                else:
                    froms.append(f"JOIN {table} {t} ON {t}.rid = {first}.rid AND {t}.grp = {first}.grp")
                where.append(f"{_pid_test(sql, t + '.pid', pids)} AND {pred}")
            alternatives.append(f"SELECT {first}.rid FROM {' '.join(froms)} WHERE {' AND '.join(where)}")
        return f"{alias}.rid IN ({' UNION ALL '.join(alternatives)})"

    def _chain(self, alias: str, params: list[SearchParam], parsed: ParsedName, name: str, value: str) -> str:
        sql = self.sql
        assert parsed.chain is not None
        rest_code = parse_name(parsed.chain).code
        if parsed.modifier and parsed.modifier not in ("missing", "identifier"):
            if not structure.is_resource_type(parsed.modifier):
                self.ctx.fail(name, f"Unknown resource type '{parsed.modifier}' in chain '{name}'")
            targets = [parsed.modifier]
        else:
            targets = sorted({t for p in params for t in p.targets})
        targets = [t for t in targets if rest_code.startswith("_") or self.reg.get(t, rest_code) is not None]
        if not targets:
            self.ctx.fail(name, f"No target type of '{parsed.code}' has a parameter '{rest_code}'")
        ref, tgt = sql.alias("ref"), sql.alias("t")
        inner = self.condition(tgt, targets, parsed.chain, value)
        visible = self.visibility(tgt, targets)
        return (
            f"{alias}.rid IN (SELECT {ref}.rid FROM sp_reference {ref}"
            f" JOIN resource {tgt} ON {tgt}.res_type = {ref}.target_type AND {tgt}.res_id = {ref}.target_id"
            f" WHERE {_pid_test(sql, ref + '.pid', _pids(params))} AND {ref}.target_type = ANY({sql.p(targets)})"
            f" AND NOT {tgt}.deleted AND {inner}{' AND ' + visible if visible else ''})"
        )

    def _has(self, alias: str, types: list[str], name: str, value: str) -> str:
        sql = self.sql
        pieces = name.split(":", 3)
        if len(pieces) < 4:
            self.ctx.fail(name, f"'_has' needs the form _has:Type:reference:parameter, not '{name}'")
        _has, source_type, ref_code, rest = pieces
        ref_param = self.reg.get(source_type, ref_code)
        if ref_param is None or ref_param.type != "reference":
            self.ctx.fail(name, f"'{source_type}' has no reference parameter '{ref_code}'")
            raise AssertionError
        ref, src = sql.alias("hr"), sql.alias("s")
        inner = self.condition(src, [source_type], rest, value)
        visible = self.visibility(src, [source_type])
        return (
            f"{alias}.res_id IN (SELECT {ref}.target_id FROM sp_reference {ref}"
            f" JOIN resource {src} ON {src}.rid = {ref}.rid"
            f" WHERE {ref}.pid = {sql.p(ref_param.pid)} AND {ref}.target_type = {alias}.res_type"
            f" AND {inner}{' AND ' + visible if visible else ''})"
        )

    # -- compartments and access

    def compartment_condition(self, alias: str, types: list[str], comp_type: str, comp_id: str) -> str:
        """Membership of the resource in compartment comp_type/comp_id (e.g. Patient/123)."""
        sql = self.sql
        comps = self.reg.compartments.get(comp_type)
        if comps is None:
            raise SearchError(400, f"Unknown compartment type '{comp_type}'")
        pids = [p.pid for t in types for p in self.reg.compartment_params(t, comp_type)]
        conds = []
        if comp_type in types:
            conds.append(f"({alias}.res_type = {sql.p(comp_type)} AND {alias}.res_id = {sql.p(comp_id)})")
        if pids:
            r = sql.alias("cm")
            conds.append(
                f"{alias}.rid IN (SELECT {r}.rid FROM sp_reference {r} WHERE {_pid_test(sql, r + '.pid', pids)}"
                f" AND {r}.target_id = {sql.p(comp_id)} AND {r}.target_type = {sql.p(comp_type)})"
            )
        return "(" + " OR ".join(conds) + ")" if conds else "false"

    def visibility(self, alias: str, types: list[str] | None) -> str:
        """The access constraint as a condition on alias (empty string when unrestricted).
        types=None means the alias may be of any type (included resources)."""
        access = self.ctx.access
        if access is None:
            return ""
        conds = []
        if access.patient_id is not None:
            candidate_types = types if types is not None else list(self.reg.compartments["Patient"])
            member_types = [t for t in candidate_types if t == "Patient" or self.reg.compartment_params(t, "Patient")]
            parts = []
            if member_types:
                parts.append(self.compartment_condition(alias, member_types, "Patient", access.patient_id))
            shared = sorted(access.shared_types) if types is None else [t for t in types if t in access.shared_types]
            if shared:
                parts.append(f"{alias}.res_type = ANY({self.sql.p(shared)})")
            conds.append("(" + " OR ".join(parts) + ")" if parts else "false")
        for res_type, alternatives in access.filters.items():
            if types is not None and res_type not in types:
                continue
            alt_sql = []
            for alt in alternatives:
                inner = self.conditions(alias, [res_type], alt)
                alt_sql.append("(" + " AND ".join(inner or ["true"]) + ")")
            conds.append(
                f"({alias}.res_type <> {self.sql.p(res_type)} OR {' OR '.join(alt_sql) or 'false'})"
            )
        return " AND ".join(conds)
