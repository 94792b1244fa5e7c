"""AccessContext constraints applied by the real search engine over real Synthea data:
a patient-context token reaches nothing outside its patient's compartment, on any search path."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine

from fhirlake.auth import AccessContext, parse_scopes
from fhirlake.auth.compartment import in_patient_compartment
from fhirlake.search.service import SearchRequest, everything, search
from fhirlake.services.loader import load_folder

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "data" / "synthea" / "msft-anonymization-samples-r4"
BASE = "https://fhir.example.org/r4"


def _load(resource_type: str) -> list[dict]:
    with gzip.open(SAMPLES / f"{resource_type}.ndjson.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def loaded(engine: Engine) -> Iterator[Engine]:
    load_folder(engine, SAMPLES)
    yield engine


def _ids(p: dict) -> str:
    return p["id"]


PATIENTS = sorted(_load("Patient"), key=_ids)
ME, OTHER = PATIENTS[0], PATIENTS[1]


def run(engine: Engine, ctx: AccessContext, rtype: str, params: list[tuple[str, str]]) -> list[dict]:
    request = SearchRequest(rtype, [*params, ("_count", "1000")], BASE, access=ctx.access_constraint(rtype))
    with engine.connect() as conn:
        bundle = orjson.loads(search(conn, request))
    return [e["resource"] for e in bundle.get("entry", [])]


def patient_ctx(scopes: str = "patient/*.rs") -> AccessContext:
    return AccessContext(scopes=parse_scopes(scopes), client_id="app", patient_id=ME["id"])


def assert_mine(resources: list[dict]) -> None:
    for resource in resources:
        assert in_patient_compartment(resource, ME["id"]), (resource["resourceType"], resource["id"])


def test_patient_token_sees_only_its_compartment(loaded: Engine) -> None:
    ctx = patient_ctx()
    mine = [o for o in _load("Observation") if o["subject"]["reference"] == f"Patient/{ME['id']}"]
    found = run(
        loaded,
        ctx,
        "Observation",
        [("_include", "Observation:subject"), ("_include", "Observation:performer")],
    )
    assert_mine(found)
    assert sorted(r["id"] for r in found if r["resourceType"] == "Observation") == sorted(
        o["id"] for o in mine
    )
    assert [r["id"] for r in found if r["resourceType"] == "Patient"] == [ME["id"]]
    assert run(loaded, ctx, "Observation", [("subject", f"Patient/{OTHER['id']}")]) == []
    assert run(loaded, ctx, "Observation", [("subject.family", OTHER["name"][0]["family"])]) == []
    assert [p["id"] for p in run(loaded, ctx, "Patient", [])] == [ME["id"]]
    has = run(loaded, ctx, "Patient", [("_has:Observation:subject:status", "final")])
    assert [p["id"] for p in has] == [ME["id"]]
    assert run(loaded, ctx, "Practitioner", []) == []  # outside the compartment, not named by a scope
    revinclude = run(loaded, ctx, "Patient", [("_revinclude", "Encounter:subject")])
    assert_mine(revinclude)
    assert len(revinclude) > 1
    with loaded.connect() as conn:
        bundle = orjson.loads(
            everything(conn, OTHER["id"], [("_count", "1000")], BASE, ctx.access_constraint("Patient"))
        )
    assert_mine([e["resource"] for e in bundle.get("entry", [])])


def test_query_restricted_patient_scope(loaded: Engine) -> None:
    ctx = patient_ctx("patient/Observation.rs?category=laboratory")
    found = run(loaded, ctx, "Observation", [])
    assert found and all(
        any(c.get("code") == "laboratory" for cat in o.get("category", []) for c in cat.get("coding", []))
        for o in found
    )
    assert_mine(found)


def test_system_scope_hides_unscoped_include_targets(loaded: Engine) -> None:
    ctx = AccessContext(scopes=parse_scopes("system/Observation.rs"), client_id="pipeline")
    found = run(loaded, ctx, "Observation", [("_include", "Observation:subject"), ("_count", "50")])
    assert found and {r["resourceType"] for r in found} == {"Observation"}
