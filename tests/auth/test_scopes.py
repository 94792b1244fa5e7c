"""Scope parsing (v1, v2, wildcards, query restrictions) and escalation-proof intersection."""

from __future__ import annotations

import pytest

from fhirlake.auth import AccessContext, ScopeError, intersect_scopes, parse_scopes
from fhirlake.auth.scopes import format_scopes, parse_scope

PARSE_TABLE = [
    # raw, context, type, canonical permissions, query
    ("patient/Observation.read", "patient", "Observation", "rs", ()),
    ("patient/Observation.write", "patient", "Observation", "cud", ()),
    ("patient/Observation.*", "patient", "Observation", "cruds", ()),
    ("user/*.read", "user", "*", "rs", ()),
    ("system/*.*", "system", "*", "cruds", ()),
    ("system/*.rs", "system", "*", "rs", ()),
    ("patient/Condition.cruds", "patient", "Condition", "cruds", ()),
    ("patient/Condition.cd", "patient", "Condition", "cd", ()),
    ("user/Encounter.s", "user", "Encounter", "s", ()),
    (
        "patient/Observation.rs?category=laboratory",
        "patient",
        "Observation",
        "rs",
        (("category", "laboratory"),),
    ),
    (
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
        "patient",
        "Observation",
        "rs",
        (("category", "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"),),
    ),
    (
        "user/Observation.rs?status=final&category=laboratory",
        "user",
        "Observation",
        "rs",
        (("category", "laboratory"), ("status", "final")),
    ),
    ("system/Patient.rs?_tag=a%7Cb", "system", "Patient", "rs", (("_tag", "a|b"),)),
]


@pytest.mark.parametrize(("raw", "context", "rtype", "perms", "query"), PARSE_TABLE)
def test_parse_resource_scopes(raw: str, context: str, rtype: str, perms: str, query: tuple) -> None:
    scope = parse_scope(raw, strict=True)
    assert (scope.context, scope.resource_type, scope.permissions, scope.query) == (
        context,
        rtype,
        perms,
        query,
    )
    assert scope.raw == raw


@pytest.mark.parametrize(
    "raw",
    ["openid", "fhirUser", "launch/patient", "launch", "offline_access", "profile", "fhirlake/deid-export"],
)
def test_non_resource_scopes_grant_nothing(raw: str) -> None:
    scope = parse_scope(raw, strict=True)
    assert not scope.is_resource_scope
    ctx = AccessContext(scopes=(scope,), patient_id="p1")
    assert not ctx.allows("read", "Patient")


@pytest.mark.parametrize(
    "raw",
    [
        "patient/Observation.sr",  # v2 letters out of order
        "patient/Observation.rr",  # repeated
        "patient/Observation.x",
        "patient/Observation.readwrite",
        "admin/Observation.read",  # unknown context
        "patient/observation.read",  # type must start upper-case
        "patient/Observation.rs?category",  # query without value
        "patient/Observation.",
    ],
)
def test_malformed_scopes(raw: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(raw, strict=True)
    lenient = parse_scope(raw)
    assert not lenient.is_resource_scope  # an external server's odd scope grants nothing


def test_parse_scopes_string_and_list() -> None:
    assert [s.raw for s in parse_scopes("openid  patient/*.rs patient/*.rs")] == ["openid", "patient/*.rs"]
    assert [s.raw for s in parse_scopes(["a b", "c"])] == ["a", "b", "c"]
    assert parse_scopes(None) == ()


INTERSECTION_TABLE = [
    # requested, registered, granted
    ("system/*.rs", "system/*.rs", "system/*.rs"),
    ("system/*.read", "system/*.rs", "system/*.read"),  # v1 spelling kept when fully granted
    ("system/*.cruds", "system/*.rs", "system/*.rs"),  # escalation: write letters dropped
    ("system/*.*", "system/*.read", "system/*.rs"),
    ("system/Observation.rs", "system/*.rs", "system/Observation.rs"),
    ("system/*.rs", "system/Observation.rs system/Patient.r", "system/Observation.rs system/Patient.r"),
    ("user/*.rs", "system/*.rs", ""),  # context never widens
    ("system/*.rs", "patient/*.rs", ""),
    ("system/Patient.rs", "system/Observation.rs", ""),
    (
        "system/Observation.rs",
        "system/Observation.rs?category=laboratory",
        "system/Observation.rs?category=laboratory",
    ),
    (
        "system/Observation.rs?status=final",
        "system/Observation.rs?category=laboratory",
        "system/Observation.rs?category=laboratory&status=final",
    ),
    ("system/AuditEvent.rs", "system/*.rs", ""),  # wildcards never cover the audit trail
    ("system/*.rs", "system/AuditEvent.rs", ""),
    ("system/AuditEvent.rs", "system/AuditEvent.rs", "system/AuditEvent.rs"),
    ("openid fhirlake/deid-export", "fhirlake/deid-export", "fhirlake/deid-export"),
    ("system/Observation.rs system/*.rs", "system/*.s", "system/Observation.s system/*.s"),
]


@pytest.mark.parametrize(("requested", "registered", "granted"), INTERSECTION_TABLE)
def test_intersection(requested: str, registered: str, granted: str) -> None:
    result = intersect_scopes(parse_scopes(requested), parse_scopes(registered, strict=True))
    assert format_scopes(result) == granted


def test_intersection_never_exceeds_registered() -> None:
    registered = parse_scopes("system/Observation.rs system/Patient.r")
    requested = parse_scopes("system/*.* user/*.* patient/*.* system/Observation.cud system/AuditEvent.rs")
    ctx = AccessContext(scopes=intersect_scopes(requested, registered), patient_id="p")
    allowed_reg = AccessContext(scopes=registered)
    for rtype in ("Observation", "Patient", "Condition", "AuditEvent"):
        for interaction in ("read", "search", "create", "update", "delete", "export"):
            if ctx.allows(interaction, rtype):
                assert allowed_reg.allows(interaction, rtype), (interaction, rtype)
