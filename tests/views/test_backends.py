"""The vectorized and closure back ends give identical rows (catalog over Synthea, edge cases)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from fhirlake.views import ViewDefinitionError, compile_view
from fhirlake.views.ndjson import evaluate_lines_with_closures

REPO = Path(__file__).resolve().parents[2]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea" / "smart-generated-sample-data-r4-100"
CATALOG = REPO / "views"
# Views the vectorized back end must cover (the patient view uses join() and stays with the closures).
VECTORIZED = {"observation", "observation_component", "encounter", "condition", "claim", "explanation_of_benefit",
              "diagnostic_report", "medication_request", "procedure", "immunization", "allergy_intolerance"}


def _both(view, lines: list[bytes]) -> tuple[pa.Table, pa.Table]:
    fast = pa.Table.from_batches(list(view.evaluate_ndjson(lines, batch_size=3000)), schema=view.schema)
    slow = pa.Table.from_batches(list(evaluate_lines_with_closures(view, lines, 3000)), schema=view.schema)
    return fast, slow


@pytest.mark.parametrize("path", sorted(CATALOG.glob("*.json")), ids=lambda p: p.stem)
def test_catalog_backends_agree(path: Path) -> None:
    view = compile_view(json.loads(path.read_text()))
    assert (view.fast_plan() is not None) == (path.stem in VECTORIZED)
    with gzip.open(SYNTHEA / f"{view.resource_type}.ndjson.gz", "rb") as fh:
        lines = fh.read().splitlines()
    fast, slow = _both(view, lines)
    assert fast.num_rows > 0
    assert fast.equals(slow)


VIEW = {
    "resource": "Observation",
    "select": [
        {"column": [{"name": "id", "path": "getResourceKey()", "type": "string"},
                    {"name": "patient", "path": "subject.getReferenceKey(Patient)", "type": "string"},
                    {"name": "v", "path": "value.ofType(Quantity).value", "type": "decimal"},
                    {"name": "low", "path": "referenceRange.low.value", "type": "decimal", "collection": True}]},
    ],
}
LINES = [
    b'{"resourceType":"Observation","id":"a","subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.50},'
    b'"referenceRange":[{"low":{"value":1e2}},{"low":{"value":-0.000}}],"note":[{"text":"\\"value\\":2.5"}]}',
    b'{"resourceType":"Patient","id":"p1"}',
    b'{"resourceType":"Observation","id":"b","subject":{"reference":"http://x/fhir/Patient/p2/_history/3"},'
    b'"valueQuantity":{"value":12345678901234567890.123456789}}',
    b'{"resourceType":"Observation","id":"c","subject":{"reference":"Group/g1"},"valueString":"x"}',
]


def test_decimals_keep_their_exact_text_and_keys_resolve() -> None:
    view = compile_view(VIEW)
    assert view.fast_plan() is not None
    fast, slow = _both(view, LINES)
    assert fast.equals(slow)
    assert fast.to_pylist() == [
        {"id": "a", "patient": "p1", "v": "1.50", "low": ["1e2", "-0.000"]},
        {"id": "b", "patient": "p2", "v": "12345678901234567890.123456789", "low": []},
        {"id": "c", "patient": None, "v": None, "low": []},
    ]


def test_invalid_data_falls_back_to_the_closures() -> None:
    view = compile_view(VIEW)
    bad = LINES + [b'{"resourceType":"Observation","id":"d","subject":"Patient/p1"}']  # not a Reference
    fast, slow = _both(view, bad)
    assert fast.equals(slow) and fast.num_rows == 4
    text_decimal = [b'{"resourceType":"Observation","id":"e","valueQuantity":{"value":"1.5"}}']
    with pytest.raises(ViewDefinitionError, match="not a decimal"):
        list(view.evaluate_ndjson(text_decimal))
    with pytest.raises(ViewDefinitionError, match="not a decimal"):
        list(evaluate_lines_with_closures(view, text_decimal, 10))


def test_several_values_in_a_single_column_fail_in_both_back_ends() -> None:
    view = compile_view({"resource": "Observation", "select": [
        {"column": [{"name": "c", "path": "code.coding.code", "type": "code"}]}]})
    assert view.fast_plan() is not None
    lines = [b'{"resourceType":"Observation","code":{"coding":[{"code":"1"},{"code":"2"}]}}']
    with pytest.raises(ViewDefinitionError, match="collection"):
        list(view.evaluate_ndjson(lines))
    with pytest.raises(ViewDefinitionError, match="collection"):
        list(evaluate_lines_with_closures(view, lines, 10))
