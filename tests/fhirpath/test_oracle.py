"""fhirpathpy as a test oracle: same answers on real data for search-parameter expressions."""

from __future__ import annotations

import gzip
import json
import tarfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import fhirpathpy  # the oracle: a dev dependency (pyproject [dev])
import orjson
import pytest
from fhirpathpy.models import models

from fhirlake.fhir.fhirpath import FhirDate, FhirDateTime, FhirTime, Quantity, compile_path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
OBSERVATIONS = SHARED / "synthea" / "smart-generated-sample-data-r4-100" / "Observation.ndjson.gz"
EXAMPLES = SHARED / "fhir-r4" / "examples.tar.gz"
SEARCH_PARAMETERS = REPO / "fhirlake" / "resources" / "search-parameters.json"

OBSERVATION_EXPRESSIONS = [
    "Observation.code",
    "Observation.subject.reference",
    "(Observation.value as Quantity) | (Observation.value as SampledData)",
    "Observation.effective",
    "Observation.category.coding.where(system = 'http://terminology.hl7.org/CodeSystem/observation-category').code",
    "Observation.component.code.coding.code",
    # (fhirpathpy raises on `as` over several components; we filter, which search indexing needs)
    "(Observation.component.value.ofType(Quantity)).value",
    "Observation.value.ofType(Quantity).where(value > 100).unit",
    "Observation.valueCodeableConcept.coding.exists() or Observation.value.exists()",
    "Observation.effective.ofType(dateTime) >= @2015-01-01",
]


def _normalize(value: Any) -> Any:
    """Both engines' outputs in one form (fhirpathpy reads JSON decimals as Decimal)."""
    if isinstance(value, (FhirDate, FhirDateTime, FhirTime)):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Quantity):
        return ("Quantity", float(value.value), value.unit)
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if type(value).__name__.startswith("FP_"):
        return str(value)
    return value


def _same(ours: list, theirs: list) -> bool:
    return json.dumps(_normalize(ours), sort_keys=True, default=str) == json.dumps(
        _normalize(theirs), sort_keys=True, default=str)


@pytest.fixture(scope="module")
def observations() -> list[dict]:
    with gzip.open(OBSERVATIONS, "rb") as f:
        return [orjson.loads(line) for line, _ in zip(f, range(2500), strict=False)]


@pytest.mark.parametrize("expression", OBSERVATION_EXPRESSIONS)
def test_synthea_observations_match_fhirpathpy(expression: str, observations: list[dict]) -> None:
    ours = compile_path(expression)
    theirs = fhirpathpy.compile(expression, models["r4"])
    non_empty = 0
    for resource in observations:
        mine = ours(resource, {"resource": resource})
        assert _same(mine, theirs(resource)), (resource["id"], mine)
        non_empty += bool(mine)
    assert non_empty > 0  # the expression exercises the data


def test_every_search_parameter_matches_fhirpathpy_on_official_examples() -> None:
    """All 1,372 R4 search-parameter expressions on the 706 official examples (first 2 per type)."""
    bundle = orjson.loads(SEARCH_PARAMETERS.read_bytes())
    by_type: dict[str, list[dict]] = {}
    with tarfile.open(EXAMPLES) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".json"):
                resource = orjson.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                bucket = by_type.setdefault(resource["resourceType"], [])
                if len(bucket) < 2:
                    bucket.append(resource)
    compared = mismatches = 0
    for entry in bundle["entry"]:
        sp = entry["resource"]
        expression = sp.get("expression")
        if not expression:
            continue
        ours = compile_path(expression)
        theirs = fhirpathpy.compile(expression, models["r4"])
        for base in sp["base"]:
            for resource in by_type.get(base, []):
                try:
                    expected = theirs(resource)
                except Exception:  # fhirpathpy lacks resolve() and some functions: nothing to compare
                    continue
                compared += 1
                if not _same(ours(resource, {"resource": resource}), expected):
                    mismatches += 1
    assert compared > 1000
    assert mismatches == 0
