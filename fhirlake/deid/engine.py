"""The de-identification engine: applies a checked configuration to FHIR resources.

How rules apply (the anonymizer's semantics): rules run in configuration order and a node is
changed by the *first* rule that selects it or one of its ancestors. So `keep` before `redact`
protects, and a node already changed by an earlier rule survives a later rule on an ancestor
(redact removes everything else; substitute merges the survivor into the replacement).

How it runs: one top-down walk per resource builds the new resource. Every rule path is a small
automaton (see selectors.py); the walk carries the set of active automaton states, and the
transition for (state set, parent structure, JSON key) is computed once and cached, together
with the element's FHIR type from fhirlake.fhir.structure. Each node's effective rule is the
smallest rule index matched on the path from the root, so a resource costs one walk whatever
the number of rules. Only `where(...)` predicates are evaluated per node.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

import orjson

from fhirlake.deid import methods as m
from fhirlake.deid import predicates
from fhirlake.deid.config import DeidConfig, Rule
from fhirlake.deid.errors import DeidConfigError, DeidError, DeidInputError, DeidProcessingError
from fhirlake.deid.keys import DeidKeys
from fhirlake.deid.selectors import ANY_RESOURCE, Step, compile_selector
from fhirlake.fhir import structure

log = logging.getLogger(__name__)

NO_RULE = 1 << 30
_REMOVED = object()
# walk kinds
_PRIMITIVE, _COMPLEX, _RESOURCE, _UNKNOWN = 0, 1, 2, 3
_V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SECURITY_LABELS = {
    "REDACTED": {"system": _V3, "code": "REDACTED", "display": "redacted"},
    "ABSTRED": {"system": _V3, "code": "ABSTRED", "display": "abstracted"},
    "CRYTOHASH": {"system": _V3, "code": "CRYTOHASH", "display": "cryptographic hash function"},
    "MASKED": {"system": _V3, "code": "MASKED", "display": "masked"},
    "PERTURBED": {"code": "PERTURBED", "display": "exact value is replaced with another exact value"},
    "SUBSTITUTED": {"code": "SUBSTITUTED", "display": "exact value is replaced with a predefined value"},
}
# Fields that name the patient a resource belongs to, in order of preference.
_PATIENT_FIELDS = ("patient", "subject", "beneficiary", "individual", "for", "who", "target")


def _is_type(code: str, wanted: str) -> bool:
    """FHIRPath `is`: the type or one of its base types."""
    seen = 0
    while code and seen < 10:
        if code == wanted:
            return True
        t = structure.get_type(code)
        code = t.base if t is not None and t.base else ""
        seen += 1
    return False


class _Context:
    __slots__ = ("resource", "scope", "labels", "offset", "today")

    def __init__(self, resource: dict, scope: str, today: date) -> None:
        self.resource = resource
        self.scope = scope
        self.labels: set[str] = set()
        self.offset: int | None = None
        self.today = today


class _RuleRuntime:
    """What the walk needs about one rule, prepared once."""

    __slots__ = ("rule", "method", "replace", "cases", "other_keep", "span", "range_type", "round_to")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.method = rule.method
        s = rule.settings
        self.replace = s.get("replaceWith")
        self.cases: list[tuple[Callable, Callable]] = []
        self.other_keep = s.get("otherValues") == "keep"
        self.span = s.get("span", 0.0)
        self.range_type = s.get("rangeType", "fixed")
        self.round_to = s.get("roundTo")


class Deidentifier:
    """A compiled de-identification configuration. Thread-safe once built (caches only grow)."""

    def __init__(self, config: DeidConfig, keys: DeidKeys | None = None) -> None:
        self.config = config
        self.warnings: list[str] = []
        p = config.parameters
        self._partial_dates = p.partial_dates
        self._partial_zip = p.partial_zip_codes
        self._partial_ages = p.partial_ages
        self._restricted = p.restricted_zip3
        self._rules = [_RuleRuntime(r) for r in config.rules]
        self._branches: list[tuple[int, tuple[Step, ...]]] = []
        self._wheres: dict[tuple[int, int], Callable] = {}
        for rule in config.rules:
            for steps in compile_selector(rule.path, rule.label):
                self._check_steps(rule, steps)
                self._branches.append((rule.index, steps))
        self._compile_fhirpath()
        self._hash_key = self._key_for("cryptoHash", p.crypto_hash_key, keys)
        self._shift_key = None if p.date_shift_fixed_offset is not None else self._key_for(
            "dateShift", p.date_shift_key, keys)
        self._encrypt_key = self._key_for("encrypt", p.encrypt_key, keys, encryption=True)
        # interned automaton state sets and the transition cache
        self._sets: list[frozenset] = []
        self._set_ids: dict[frozenset, int] = {}
        self._tables: dict[tuple, dict[str, tuple]] = {}  # (state set, structure) -> key -> plan
        self._keep_default = config.default_action == "keep"
        self._hash_cache: dict[tuple[bool, str], str] = {}
        self._roots: dict[str, tuple] = {}
        self._uses_dates = any(r.method == "dateShift" for r in config.rules)

    # ---- building --------------------------------------------------------------------------
    def _check_steps(self, rule: Rule, steps: tuple[Step, ...]) -> None:
        root = steps[0].arg
        if root != ANY_RESOURCE and not structure.is_resource_type(root):
            self.warnings.append(f"{rule.label}: {root!r} is not an R4 resource type; the rule never applies")
        for st in steps:
            if st.kind in ("bytype", "type") and structure.get_type(st.arg) is None:
                self.warnings.append(f"{rule.label}: {st.arg!r} is not an R4 type; the rule never applies")

    def _compile_fhirpath(self) -> None:
        from fhirlake.fhir.fhirpath import FhirPathError

        for b, (rule_index, steps) in enumerate(self._branches):
            for pos, st in enumerate(steps):
                if st.kind == "where":
                    label = self.config.rules[rule_index].label
                    try:
                        self._wheres[(b, pos)] = predicates.compile_expression(st.arg)
                    except FhirPathError as exc:
                        raise DeidConfigError(f"{label}: invalid FHIRPath in where(): {exc}") from None
        for rt in self._rules:
            if rt.method != "generalize":
                continue
            for cond, expr in rt.rule.settings["cases"].items():
                try:
                    rt.cases.append((predicates.compile_expression(cond), predicates.compile_expression(expr)))
                except FhirPathError as exc:
                    raise DeidConfigError(f"{rt.rule.label}: invalid FHIRPath in generalize case: {exc}") from None

    def _key_for(self, method: str, configured: str, keys: DeidKeys | None, encryption: bool = False):
        users = [r for r in self.config.rules if r.method == method]
        if not users:
            return None
        if configured:
            try:
                return m.encryption_key(configured) if encryption else configured.encode("utf-8")
            except DeidConfigError as exc:
                raise DeidConfigError(f"{users[0].label}: {exc}") from None
        if keys is None:
            raise DeidConfigError(
                f"{users[0].label}: {method} needs a key: give DeidKeys (FHIRLAKE_DEID_KEY) or a {method}Key parameter"
            )
        return keys.key_for(method)

    # ---- the automaton ---------------------------------------------------------------------
    def _intern(self, states: frozenset) -> int:
        sid = self._set_ids.get(states)
        if sid is None:
            sid = len(self._sets)
            self._sets.append(states)
            self._set_ids[states] = sid
        return sid

    def _closure(self, pending: list, type_code: str, name: str | None):
        """Advance states at one node: (states kept for the children, own rule, where-states)."""
        kept: set = set()
        own = NO_RULE
        wheres: list = []
        seen: set = set()
        branches = self._branches
        while pending:
            state = pending.pop()
            if state in seen:
                continue
            seen.add(state)
            b, pos = state
            rule_index, steps = branches[b]
            if pos == len(steps):
                own = min(own, rule_index)
                continue
            st = steps[pos]
            kind = st.kind
            if kind == "root":
                if st.arg == ANY_RESOURCE or st.arg == type_code:
                    pending.append((b, pos + 1))
            elif kind == "type":
                if _is_type(type_code, st.arg):
                    pending.append((b, pos + 1))
            elif kind == "where":
                wheres.append(state)
            elif kind == "bytype":
                kept.add(state)
                if type_code == st.arg:
                    pending.append((b, pos + 1))
            elif kind == "byname":
                kept.add(state)
                if name == st.arg:
                    pending.append((b, pos + 1))
            else:  # child
                kept.add(state)
        return self._intern(frozenset(kept)), own, tuple(wheres)

    def _step_into(self, set_id: int, name: str, key: str) -> list:
        pre = []
        branches = self._branches
        for b, pos in self._sets[set_id]:
            st = branches[b][1][pos]
            if st.kind == "child":
                if st.arg == name or st.arg == key:
                    pre.append((b, pos + 1))
            else:  # bytype / byname search every descendant
                pre.append((b, pos))
        return pre

    def _transition(self, set_id: int, struct: str | None, key: str) -> tuple:
        base = key[1:] if key[0] == "_" else key
        found = structure.child_element(struct, base) if struct else None
        if found is None:
            type_code, child_struct, name, kind = "", None, base, _UNKNOWN
        else:
            el, type_code = found
            name = el.name
            if type_code == "Resource":
                kind, child_struct = _RESOURCE, None
            elif structure.is_primitive_type(type_code) or type_code.startswith("http://hl7.org/fhirpath"):
                kind, child_struct = _PRIMITIVE, None
                if base is not key:  # `_birthDate`: the primitive's id/extension
                    kind, child_struct = _COMPLEX, "Element"
            else:
                kind, child_struct = _COMPLEX, structure.next_parent(el, type_code)
        child_set, own, wheres = self._closure(self._step_into(set_id, name, key), type_code, name)
        return (child_set, own, wheres, type_code, child_struct, kind)

    def _root_plan(self, resource_type: str) -> tuple:
        plan = self._roots.get(resource_type)
        if plan is None:
            start = [(b, 0) for b in range(len(self._branches))]
            plan = self._closure(start, resource_type, None)
            self._roots[resource_type] = plan
        return plan

    def _resolve_wheres(self, set_id: int, own: int, wheres: tuple, node: Any, type_code: str, ctx: _Context):
        """Evaluate where() predicates at a node; may add states and matches (uncached path)."""
        extra: list = []
        for state in wheres:
            result = predicates.evaluate(self._wheres[state], node, type_code, ctx.resource)
            if predicates.is_true(result):
                extra.append((state[0], state[1] + 1))
        if not extra:
            return set_id, own
        add_set, add_own, more = self._closure(extra, type_code, None)
        if more:
            add_set, add_own = self._resolve_wheres(add_set, add_own, more, node, type_code, ctx)
        merged = self._sets[set_id] | self._sets[add_set]
        return self._intern(merged), min(own, add_own)

    # ---- public API ------------------------------------------------------------------------
    def deidentify(self, resource: dict) -> dict | None:
        """A new, de-identified resource. On failure: raises DeidProcessingError when the
        configuration says processingErrors=raise, else returns None. Never returns input data
        that was not processed."""
        try:
            return self._deidentify_checked(resource)
        except DeidProcessingError:
            if self.config.processing_errors == "raise":
                raise
            return None

    def _deidentify_checked(self, resource: Any) -> dict:
        if not isinstance(resource, dict):
            raise DeidInputError("input is not a JSON object")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not structure.is_resource_type(rtype):
            raise DeidInputError(f"unknown resourceType {str(rtype)[:64]!r}")
        try:
            return self._resource(resource, None, date.today())
        except DeidError:
            raise
        except Exception as exc:  # a bug or a malformed value: never pass data through
            raise DeidProcessingError(f"{rtype} could not be de-identified ({type(exc).__name__})") from None

    def deidentify_ndjson(
        self, lines: Iterable[bytes | str], on_error: Callable[[int, DeidError], None] | None = None
    ) -> Iterator[bytes]:
        """De-identify NDJSON lines (blank lines skipped); yields one JSON line (with newline)
        per resource. A line that fails is never yielded: it goes to `on_error(line_number,
        error)` when given; otherwise processingErrors=raise raises and skip logs it."""
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                try:
                    resource = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise DeidInputError("line is not valid JSON") from None
                out = self._deidentify_checked(resource)
            except DeidProcessingError as exc:
                if on_error is not None:
                    on_error(number, exc)
                elif self.config.processing_errors == "raise":
                    raise DeidProcessingError(f"line {number}: {exc}") from None
                else:
                    log.warning("de-identification skipped line %d: %s", number, type(exc).__name__)
                continue
            yield orjson.dumps(out) + b"\n"

    # ---- the walk --------------------------------------------------------------------------
    def _scope(self, resource: dict) -> str:
        p = self.config.parameters
        rtype = resource.get("resourceType", "")
        rid = resource.get("id") or ""
        if p.date_shift_scope == "global":
            return ""
        if p.date_shift_scope == "resource":
            return str(rid)
        if rtype == "Patient":
            return f"Patient/{rid}"
        for field in _PATIENT_FIELDS:
            value = resource.get(field)
            for item in value if isinstance(value, list) else (value,):
                ref = item.get("reference") if isinstance(item, dict) else None
                if isinstance(ref, str):
                    patient = _patient_of(ref)
                    if patient:
                        return patient
        return f"{rtype}/{rid}"

    def _resource(self, resource: dict, parent: _Context | None, today: date) -> dict:
        rtype = resource["resourceType"]
        scope = parent.scope if parent is not None else (self._scope(resource) if self._uses_dates else "")
        ctx = _Context(resource, scope, today)
        set_id, own, wheres = self._root_plan(rtype)
        if wheres:
            set_id, own = self._resolve_wheres(set_id, own, wheres, resource, rtype, ctx)
        if own != NO_RULE and self._rules[own].method == "substitute":
            raise DeidProcessingError(f"{self._rules[own].rule.label}: a whole resource cannot be substituted")
        out = self._complex(resource, rtype, set_id, own, ctx)
        if out is _REMOVED:
            out = {}
        out = {"resourceType": rtype, **{k: v for k, v in out.items() if k != "resourceType"}}
        if ctx.labels and self.config.add_security_labels:
            meta = out.setdefault("meta", {})
            security = meta.setdefault("security", [])
            present = {(s.get("system"), s.get("code")) for s in security if isinstance(s, dict)}
            for code in sorted(ctx.labels):
                label = SECURITY_LABELS[code]
                if (label.get("system"), code) not in present:
                    security.append(dict(label))
        return out

    def _complex(self, node: dict, struct: str | None, set_id: int, eff: int, ctx: _Context):
        out: dict = {}
        table = self._tables.get((set_id, struct))
        if table is None:
            table = self._tables[(set_id, struct)] = {}
        keep_default = self._keep_default
        for key, value in node.items():
            plan = table.get(key)
            if plan is None:
                if key == "resourceType":
                    continue
                plan = table[key] = self._transition(set_id, struct, key)
            # fast path: a primitive no rule touches (most of a resource)
            if plan[5] == _PRIMITIVE and plan[1] == NO_RULE and eff == NO_RULE and not plan[2] and keep_default:
                if type(value) is list:
                    ext = node.get("_" + key)
                    if isinstance(ext, list):
                        self._primitive_array(out, node, key, value, ext, plan, table, set_id, struct, eff, ctx)
                    else:
                        out[key] = list(value)
                else:
                    out[key] = value
                continue
            if key[0] == "_" and isinstance(value, list) and isinstance(node.get(key[1:]), list):
                continue  # handled together with its primitive array
            if type(value) is list:
                ext = node.get("_" + key) if plan[5] == _PRIMITIVE else None
                if isinstance(ext, list):
                    self._primitive_array(out, node, key, value, ext, plan, table, set_id, struct, eff, ctx)
                    continue
                kept = []
                for item in value:
                    result = self._value(item, plan, eff, ctx, struct, key)
                    if result is not _REMOVED:
                        kept.append(result)
                if kept:
                    out[key] = kept
            else:
                result = self._value(value, plan, eff, ctx, struct, key)
                if result is not _REMOVED:
                    out[key] = result
        return out if out else _REMOVED

    def _primitive_array(self, out, node, key, value, ext, plan, table, set_id, struct, eff, ctx) -> None:
        """`given` and `_given` change together, index by index (nulls keep them aligned)."""
        ext_key = "_" + key
        eplan = table.get(ext_key)
        if eplan is None:
            eplan = table[ext_key] = self._transition(set_id, struct, ext_key)
        results = [self._value(item, plan, eff, ctx, struct, key) if item is not None else _REMOVED
                   for item in value]
        eres = [self._value(item, eplan, eff, ctx, struct, ext_key) if item is not None else _REMOVED
                for item in ext]
        size = max(len(results), len(eres))
        results += [_REMOVED] * (size - len(results))
        eres += [_REMOVED] * (size - len(eres))
        keep = [i for i in range(size) if results[i] is not _REMOVED or eres[i] is not _REMOVED]
        vals = [None if results[i] is _REMOVED else results[i] for i in keep]
        exts = [None if eres[i] is _REMOVED else eres[i] for i in keep]
        if any(v is not None for v in vals):
            out[key] = vals
        if any(e is not None for e in exts):
            out[ext_key] = exts

    def _value(self, value: Any, plan: tuple, eff: int, ctx: _Context, struct: str | None, key: str):
        set_id, own, wheres, type_code, child_struct, kind = plan
        if kind == _RESOURCE:
            if not isinstance(value, dict) or not structure.is_resource_type(str(value.get("resourceType"))):
                raise DeidInputError("a nested resource without a known resourceType")
            return self._resource(value, ctx if key == "contained" else None, ctx.today)
        if wheres:
            set_id, own = self._resolve_wheres(set_id, own, wheres, value, type_code, ctx)
        rule = own if own < eff else eff
        if kind == _UNKNOWN and rule == NO_RULE and self.config.unknown_elements == "redact":
            ctx.labels.add("REDACTED")
            return _REMOVED
        if type(value) is dict:
            if rule != NO_RULE:
                rt = self._rules[rule]
                method = rt.method
                if method == "substitute":
                    remnant = self._complex(value, child_struct, set_id, rule, ctx)
                    if own < eff:  # this node is where the substitute rule applies
                        ctx.labels.add("SUBSTITUTED")
                        return _merge(copy.deepcopy(rt.replace), remnant)
                    return remnant
                if method == "redact" and type_code == "Age" and self._partial_ages and own < eff:
                    if m.age_over_limit(value):
                        ctx.labels.add("REDACTED")
                        return _REMOVED
                    return copy.deepcopy(value)
            elif self.config.default_action == "redact":
                pass  # primitives below are removed one by one; protected subtrees survive
            return self._complex(value, child_struct, set_id, rule, ctx)
        if type(value) is list:  # nested arrays do not occur in FHIR JSON
            raise DeidInputError("an array inside an array")
        if rule == NO_RULE:
            if self.config.default_action == "keep":
                return value
            ctx.labels.add("REDACTED")
            return _REMOVED
        return self._primitive(value, type_code, self._rules[rule], own < eff, ctx, struct, key)

    def _primitive(self, value: Any, type_code: str, rt: _RuleRuntime, is_root: bool, ctx: _Context,
                   struct: str | None, key: str):
        method = rt.method
        if method == "keep":
            return value
        if method == "redact":
            return self._redact(value, type_code, ctx, struct, key)
        if method == "cryptoHash":
            ctx.labels.add("CRYTOHASH")
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            is_ref = struct == "Reference" and key == "reference"
            cache = self._hash_cache
            hashed = cache.get((is_ref, text))
            if hashed is None:
                hashed = m.hash_reference(self._hash_key, text) if is_ref else m.crypto_hash(self._hash_key, text)
                if len(cache) > 200_000:  # bounded: ids repeat within a patient's resources
                    cache.clear()
                cache[(is_ref, text)] = hashed
            return hashed
        if method == "dateShift":
            if type_code not in m.DATE_TYPES or not isinstance(value, str):
                return value
            shifted = m.shift_date(value, self._offset(ctx), ctx.today, self._partial_dates)
            if shifted is None:
                ctx.labels.add("REDACTED")
                return _REMOVED
            ctx.labels.add("PERTURBED" if len(shifted) >= 10 else "ABSTRED")
            return shifted
        if method == "encrypt":
            ctx.labels.add("MASKED")
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            return m.encrypt(self._encrypt_key, text)
        if method == "perturb":
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and (type_code in m.NUMERIC_TYPES or key == "value"):
                ctx.labels.add("PERTURBED")
                return m.perturb(value, type_code, rt.span, rt.range_type, rt.round_to)
            return value
        if method == "generalize":
            return self._generalize(value, type_code, rt, ctx)
        if method == "substitute":
            if is_root:
                ctx.labels.add("SUBSTITUTED")
                return copy.deepcopy(rt.replace)
            return _REMOVED
        raise DeidProcessingError(f"{rt.rule.label}: unknown method")

    def _redact(self, value: Any, type_code: str, ctx: _Context, struct: str | None, key: str):
        if self._partial_dates and type_code in m.DATE_TYPES and isinstance(value, str):
            year = m.partial_date(value, ctx.today)
            if year is not None:
                ctx.labels.add("ABSTRED")
                return year
        elif self._partial_zip and key == "postalCode" and struct == "Address" and isinstance(value, str):
            ctx.labels.add("ABSTRED")
            return m.partial_zip(value, self._restricted)
        ctx.labels.add("REDACTED")
        return _REMOVED

    def _generalize(self, value: Any, type_code: str, rt: _RuleRuntime, ctx: _Context):
        for cond, expr in rt.cases:
            if predicates.is_true(predicates.evaluate(cond, value, type_code, ctx.resource)):
                ctx.labels.add("ABSTRED")
                return predicates.to_json(predicates.evaluate(expr, value, type_code, ctx.resource), type_code)
        if rt.other_keep:
            return value
        ctx.labels.add("REDACTED")
        return _REMOVED

    def _offset(self, ctx: _Context) -> int:
        if ctx.offset is None:
            fixed = self.config.parameters.date_shift_fixed_offset
            ctx.offset = fixed if fixed is not None else m.date_shift_days(
                self._shift_key, ctx.scope, self.config.parameters.date_shift_range)
        return ctx.offset

    def __repr__(self) -> str:
        return f"Deidentifier({self.config.name!r}, {len(self.config.rules)} rules)"


def _patient_of(reference: str) -> str | None:
    """'Patient/<id>' for a reference to a patient (relative, absolute or urn:uuid)."""
    if reference.startswith("urn:uuid:"):
        return "Patient/" + reference[9:]
    parts = reference.split("/_history/")[0].split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return "Patient/" + parts[-1]
    return None


def _merge(replacement: Any, remnant: Any) -> Any:
    """Put the parts an earlier rule already processed back into a substituted value."""
    if remnant is _REMOVED or not isinstance(replacement, dict) or not isinstance(remnant, dict):
        return replacement
    for key, value in remnant.items():
        if key in replacement and isinstance(replacement[key], dict) and isinstance(value, dict):
            replacement[key] = _merge(replacement[key], value)
        else:
            replacement[key] = value
    return replacement
