"""The view catalog over the 100-patient Synthea set, checked against plain dict access."""

from __future__ import annotations

import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fhirlake.views import compile_view, write_rows
from fhirlake.views.ndjson import parse_line

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SYNTHEA = SHARED / "synthea" / "smart-generated-sample-data-r4-100"
CATALOG = REPO / "views"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _lines(resource_type: str) -> list[bytes]:
    with gzip.open(SYNTHEA / f"{resource_type}.ndjson.gz", "rb") as fh:
        return [line for line in fh.read().splitlines() if line.strip()]


def _resources(resource_type: str) -> list[dict]:
    return [parse_line(line) for line in _lines(resource_type)]


def _view(name: str):
    return compile_view(json.loads((CATALOG / f"{name}.json").read_text()))


def _table(name: str, resource_type: str) -> pa.Table:
    view = _view(name)
    return pa.Table.from_batches(list(view.evaluate_ndjson(_lines(resource_type))), schema=view.schema)


def _ref_id(reference: dict | None) -> str | None:
    if not reference or "reference" not in reference:
        return None
    return reference["reference"].split("/")[-1]


CATALOG_TYPES = {
    "patient": "Patient", "encounter": "Encounter", "condition": "Condition", "observation": "Observation",
    "observation_component": "Observation", "medication_request": "MedicationRequest", "procedure": "Procedure",
    "immunization": "Immunization", "allergy_intolerance": "AllergyIntolerance",
    "diagnostic_report": "DiagnosticReport", "claim": "Claim", "explanation_of_benefit": "ExplanationOfBenefit",
}


def test_catalog_lists_every_view() -> None:
    assert sorted(p.stem for p in CATALOG.glob("*.json")) == sorted(CATALOG_TYPES)
    readme = (CATALOG / "README.md").read_text()
    for name in CATALOG_TYPES:
        assert f"## {name} " in readme


@pytest.mark.parametrize("name", sorted(CATALOG_TYPES))
def test_one_row_per_resource_and_keys(name: str) -> None:
    resource_type = CATALOG_TYPES[name]
    resources = _resources(resource_type)
    table = _table(name, resource_type)
    assert table.schema == _view(name).schema
    if name == "observation_component":
        expected = sum(len(r.get("component", [])) for r in resources)
        assert table.num_rows == expected > 0
        return
    assert table.num_rows == len(resources)
    assert table.column("id").to_pylist() == [r["id"] for r in resources]
    patient_ref = "patient" if resource_type in ("Immunization", "AllergyIntolerance", "Claim",
                                                 "ExplanationOfBenefit") else "subject"
    if "patient_id" in table.column_names:
        assert table.column("patient_id").to_pylist() == [_ref_id(r.get(patient_ref)) for r in resources]


def test_patient_columns() -> None:
    resources = _resources("Patient")
    rows = _table("patient", "Patient").to_pylist()
    race_url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
    for resource, row in zip(resources, rows, strict=True):
        assert row["gender"] == resource.get("gender")
        assert row["birth_date"] == resource.get("birthDate")
        official = [n for n in resource.get("name", []) if n.get("use") == "official"]
        assert row["family_name"] == (official[0].get("family") if official else None)
        assert row["names"] == [n["family"] for n in resource.get("name", []) if "family" in n]
        assert row["address_city"] == resource.get("address", [{}])[0].get("city")
        race = [e for e in resource.get("extension", []) if e["url"] == race_url]
        omb = [x["valueCoding"]["code"] for e in race for x in e.get("extension", []) if x["url"] == "ombCategory"]
        assert row["race_code"] == (omb[0] if omb else None)
        assert row["deceased_datetime"] == resource.get("deceasedDateTime")
    assert any(r["race_code"] for r in rows) and any(r["deceased_datetime"] for r in rows)


def test_observation_columns() -> None:
    resources = _resources("Observation")
    rows = _table("observation", "Observation").to_pylist()
    seen_quantity = seen_concept = 0
    for resource, row in zip(resources, rows, strict=True):
        assert row["encounter_id"] == _ref_id(resource.get("encounter"))
        coding = resource["code"]["coding"][0]
        assert (row["code_system"], row["code"], row["code_display"]) == (
            coding.get("system"), coding.get("code"), coding.get("display"))
        categories = [c["code"] for cat in resource.get("category", []) for c in cat.get("coding", [])
                      if c.get("system") == OBS_CATEGORY]
        assert row["category_code"] == (categories[0] if categories else None)
        assert row["effective_datetime"] == resource.get("effectiveDateTime")
        assert row["issued"] == resource.get("issued")
        quantity = resource.get("valueQuantity")
        if quantity:
            seen_quantity += 1
            assert Decimal(row["value_quantity"]) == quantity["value"]
            assert row["value_quantity"] == str(quantity["value"])
            assert row["value_unit"] == quantity.get("unit")
        else:
            assert row["value_quantity"] is None
        concept = resource.get("valueCodeableConcept")
        if concept:
            seen_concept += 1
            assert row["value_concept_code"] == concept["coding"][0].get("code")
    assert seen_quantity > 1000 and seen_concept > 10


def test_observation_component_rows() -> None:
    resources = _resources("Observation")
    expected = [
        (r["id"], i, c["code"]["coding"][0]["code"], str(c["valueQuantity"]["value"]) if "valueQuantity" in c else None)
        for r in resources for i, c in enumerate(r.get("component", []))
    ]
    table = _table("observation_component", "Observation")
    got = list(zip(*(table.column(n).to_pylist() for n in ("id", "component_index", "component_code",
                                                             "value_quantity")), strict=True))
    assert got == expected
    assert {"8480-6", "8462-4"} <= {row[2] for row in got}  # systolic and diastolic blood pressure


def test_costs() -> None:
    claims = _resources("Claim")
    claim_rows = _table("claim", "Claim").to_pylist()
    assert [r["total_value"] for r in claim_rows] == [str(c["total"]["value"]) if "total" in c else None for c in claims]
    eobs = _resources("ExplanationOfBenefit")
    eob_rows = _table("explanation_of_benefit", "ExplanationOfBenefit").to_pylist()
    for eob, row in zip(eobs, eob_rows, strict=True):
        submitted = [t["amount"]["value"] for t in eob.get("total", [])
                     if any(c.get("code") == "submitted" for c in t["category"].get("coding", []))]
        assert row["total_submitted"] == (str(submitted[0]) if submitted else None)
        assert row["payment_amount"] == (str(eob["payment"]["amount"]["value"]) if "payment" in eob else None)
        assert row["claim_id"] == _ref_id(eob.get("claim"))


def test_join_keys_resolve() -> None:
    patient_ids = set(_table("patient", "Patient").column("id").to_pylist())
    encounter_ids = set(_table("encounter", "Encounter").column("id").to_pylist())
    obs = _table("observation", "Observation")
    assert set(obs.column("patient_id").to_pylist()) <= patient_ids
    assert set(obs.column("encounter_id").to_pylist()) - {None} <= encounter_ids
    report_results = _table("diagnostic_report", "DiagnosticReport").column("result_ids").to_pylist()
    obs_ids = set(obs.column("id").to_pylist())
    assert all(set(ids) <= obs_ids for ids in report_results) and any(report_results)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json", "parquet"])
def test_writers_round_trip(fmt: str) -> None:
    view = _view("observation")
    batches = list(view.evaluate_ndjson(_lines("Observation")[:500]))
    out = io.BytesIO()
    count = write_rows(batches, fmt, out)
    assert count == 500
    data = out.getvalue()
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(data)).schema.names == view.schema.names
    elif fmt == "csv":
        assert data.splitlines()[0].decode().replace('"', "").split(",") == view.schema.names
        assert len(data.splitlines()) == 501
    else:
        rows = json.loads(data) if fmt == "json" else [json.loads(x) for x in data.splitlines()]
        with_value = [r for r in rows if r["value_quantity"] is not None]
        assert with_value and all(isinstance(r["value_quantity"], float) for r in with_value)
