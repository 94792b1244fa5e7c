"""AccessContext decisions: interactions vs scopes, patient compartment writes, query-restricted writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fhirlake.auth import AccessContext, ForbiddenError, parse_scopes
from fhirlake.auth.compartment import compartment_paths, in_patient_compartment

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "data" / "synthea" / "msft-anonymization-samples-r4"


def _load(resource_type: str) -> list[dict]:
    with gzip.open(SAMPLES / f"{resource_type}.ndjson.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def ctx(scopes: str, patient: str | None = None) -> AccessContext:
    return AccessContext(scopes=parse_scopes(scopes), client_id="c", patient_id=patient)


REQUIRE_TABLE = [
    # scopes, patient, interaction, type, allowed
    ("patient/Observation.read", "p1", "read", "Observation", True),
    ("patient/Observation.read", "p1", "search", "Observation", True),
    ("patient/Observation.read", "p1", "create", "Observation", False),
    ("patient/Observation.read", "p1", "read", "Condition", False),
    ("patient/Observation.read", None, "read", "Observation", False),  # patient scope without patient context
    ("patient/Observation.write", "p1", "update", "Observation", True),
    ("patient/Observation.write", "p1", "patch", "Observation", True),
    ("patient/Observation.write", "p1", "read", "Observation", False),
    ("patient/*.r", "p1", "read", "Encounter", True),
    ("patient/*.r", "p1", "search", "Encounter", False),
    ("patient/*.s", "p1", "history", "Encounter", False),
    ("patient/*.s", "p1", "history-type", "Encounter", True),
    ("patient/*.rs", "p1", "export", "Patient", False),  # bulk export needs system/ or user/
    ("system/*.rs", None, "export", "Patient", True),
    ("system/*.r", None, "export", "Patient", False),
    ("user/*.read", None, "export", "Patient", True),
    ("system/*.rs", None, "audit-read", "AuditEvent", False),  # wildcard does not cover the audit trail
    ("system/*.rs", None, "read", "AuditEvent", False),
    ("system/AuditEvent.rs", None, "audit-read", "AuditEvent", True),
    ("patient/AuditEvent.rs", "p1", "audit-read", "AuditEvent", False),
    ("system/*.rs", None, "deid-export", "Patient", False),
    ("system/*.rs fhirlake/deid-export", None, "deid-export", "Patient", True),
    ("system/*.cruds", None, "delete", "Observation", True),
    ("system/*.cruds", None, "frobnicate", "Observation", False),  # unknown interaction refused
    ("openid fhirUser launch/patient", "p1", "read", "Patient", False),
    ("patient/Observation.rs?category=laboratory", "p1", "search", "Observation", True),
]


@pytest.mark.parametrize(("scopes", "patient", "interaction", "rtype", "allowed"), REQUIRE_TABLE)
def test_require(scopes: str, patient: str | None, interaction: str, rtype: str, allowed: bool) -> None:
    context = ctx(scopes, patient)
    assert context.allows(interaction, rtype) is allowed
    if allowed:
        context.require(interaction, rtype)
    else:
        with pytest.raises(ForbiddenError):
            context.require(interaction, rtype)


def test_unrestricted() -> None:
    context = AccessContext.unrestricted()
    assert context.allows("delete", "AuditEvent")
    assert context.can_write_resource("Observation", {"resourceType": "Observation"})


def test_compartment_definition_compiles() -> None:
    paths = compartment_paths()
    assert ("subject",) in paths["Observation"]
    assert ("participant", "actor") in paths["Appointment"]
    assert "Patient" in paths and "Organization" not in paths


def test_synthea_resources_are_in_their_patients_compartment() -> None:
    patients = {p["id"] for p in _load("Patient")}
    other = sorted(patients)[0]
    checked = 0
    for rtype in ("Observation", "Condition", "Encounter", "Immunization", "Claim", "CarePlan", "Procedure"):
        for resource in _load(rtype):
            owner = None
            for key in ("subject", "patient"):
                ref = (resource.get(key) or {}).get("reference", "")
                if ref.startswith("Patient/"):
                    owner = ref.split("/")[1]
            assert owner in patients
            assert in_patient_compartment(resource, owner)
            assert in_patient_compartment(resource, other) is (owner == other)
            checked += 1
    assert checked > 1000
    for org in _load("Organization"):
        assert not in_patient_compartment(org, other)


def test_patient_context_writes_stay_in_compartment() -> None:
    observations = _load("Observation")
    mine = observations[0]
    owner = mine["subject"]["reference"].split("/")[1]
    theirs = next(o for o in observations if o["subject"]["reference"] != f"Patient/{owner}")
    context = ctx("patient/Observation.cud", owner)
    assert context.can_write_resource("Observation", mine, "create")
    assert not context.can_write_resource("Observation", theirs, "create")
    assert not context.can_write_resource("Condition", mine, "create")  # type mismatch
    moved = dict(mine, subject={"reference": theirs["subject"]["reference"]})
    assert not context.can_write_resource("Observation", moved, "update")
    with pytest.raises(ForbiddenError):
        context.require_write("Observation", theirs, "update")
    assert not ctx("patient/Observation.rs", owner).can_write_resource("Observation", mine, "create")
    # absolute reference to this server counts; to another server it does not
    absolute = dict(mine, subject={"reference": f"https://fhir.example.org/r4/Patient/{owner}"})
    here = AccessContext(
        scopes=parse_scopes("patient/Observation.c"), patient_id=owner, base_url="https://fhir.example.org/r4"
    )
    assert here.can_write_resource("Observation", absolute, "create")
    assert not context.can_write_resource("Observation", absolute, "create")


def test_patient_resource_itself() -> None:
    context = ctx("patient/Patient.u", "p1")
    assert context.can_write_resource("Patient", {"resourceType": "Patient", "id": "p1"})
    assert not context.can_write_resource("Patient", {"resourceType": "Patient", "id": "p2"})


def test_query_restricted_writes() -> None:
    observations = _load("Observation")
    lab = next(
        o
        for o in observations
        if any(c["code"] == "laboratory" for cat in o.get("category", []) for c in cat["coding"])
    )
    vital = next(
        o
        for o in observations
        if any(c["code"] == "vital-signs" for cat in o.get("category", []) for c in cat["coding"])
    )
    system = "http://terminology.hl7.org/CodeSystem/observation-category"
    for scope in (
        "system/Observation.cu?category=laboratory",
        f"system/Observation.cu?category={system}|laboratory",
    ):
        context = ctx(scope)
        assert context.can_write_resource("Observation", lab, "create")
        assert not context.can_write_resource("Observation", vital, "create")
    assert not ctx("system/Observation.cu?category=other|laboratory").can_write_resource(
        "Observation", lab, "create"
    )
    assert ctx("system/Observation.cu?category=vital-signs,laboratory").can_write_resource(
        "Observation", vital, "create"
    )
    # a parameter this check cannot evaluate refuses (never allows by accident)
    assert not ctx("system/Observation.cu?value-quantity=5").can_write_resource("Observation", lab, "create")
    assert ctx("system/Observation.cu?category=vital-signs system/Observation.cu").can_write_resource(
        "Observation", lab, "create"
    )


def test_access_constraint_patient_scopes() -> None:
    context = ctx("launch/patient patient/Observation.rs patient/Patient.rs patient/Medication.rs", "p1")
    constraint = context.access_constraint("Observation")
    assert constraint is not None and constraint.patient_id == "p1"
    assert constraint.shared_types == frozenset({"Medication"})  # named explicitly, outside the compartment
    assert "Observation" not in constraint.filters and "Patient" not in constraint.filters
    assert constraint.filters["Condition"] == [] and constraint.filters["Practitioner"] == []  # hidden
    read_constraint = context.access_constraint("Patient", "read")
    assert read_constraint is not None and read_constraint.patient_id == "p1"
    with pytest.raises(ForbiddenError):
        context.access_constraint("Condition")
    wildcard = ctx("patient/*.rs", "p1").access_constraint("Encounter")
    assert (
        wildcard is not None
        and wildcard.shared_types == frozenset()
        and wildcard.filters == {"AuditEvent": []}
    )


def test_access_constraint_query_restricted() -> None:
    context = ctx(
        "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs", "p1"
    )
    constraint = context.access_constraint("Observation")
    assert constraint is not None and constraint.patient_id == "p1"
    assert constraint.filters["Observation"] == [[("category", "laboratory")], [("category", "vital-signs")]]
    lifted = ctx("patient/Observation.rs?category=laboratory patient/Observation.rs", "p1").access_constraint(
        "Observation"
    )
    assert lifted is not None and "Observation" not in lifted.filters
    system = ctx("system/Observation.rs?status=final system/Patient.rs").access_constraint("Observation")
    assert system is not None and system.patient_id is None and system.shared_types == frozenset()
    assert system.filters["Observation"] == [[("status", "final")]] and "Patient" not in system.filters
    assert system.filters["Condition"] == []


def test_access_constraint_unrestricted_and_read_letter() -> None:
    assert ctx("system/*.*").access_constraint("Observation") is not None  # AuditEvent stays hidden
    assert ctx("system/*.* system/AuditEvent.rs").access_constraint("Observation") is None
    assert AccessContext.unrestricted().access_constraint("Observation") is None
    reader = ctx("patient/Observation.r", "p1")
    assert reader.access_constraint("Observation", "read") is not None
    with pytest.raises(ForbiddenError):
        reader.access_constraint("Observation", "search")
