"""Pseudonyms and date offsets are stable per patient and per key; bad input never passes."""

from __future__ import annotations

import gzip
from datetime import date

import orjson
import pytest

from fhirlake.deid import (
    Deidentifier,
    DeidInputError,
    DeidKeys,
    DeidProcessingError,
    load_config,
    load_profile,
)
from tests.deid.conftest import SYNTHEA, TEST_SECRET

FOLDER = SYNTHEA / "smart-generated-sample-data-r4-100"


def _lines(name: str, limit: int = 400) -> list[bytes]:
    return gzip.decompress((FOLDER / f"{name}.ndjson.gz").read_bytes()).splitlines()[:limit]


def _run(engine, lines):
    return [orjson.loads(x) for x in engine.deidentify_ndjson(lines)]


def test_same_patient_same_pseudonym_and_offset_across_resources_and_runs(keys):
    engine = Deidentifier(load_profile("safe-harbor"), keys)
    patients = [orjson.loads(x) for x in _lines("Patient", 100)]
    encounters = [orjson.loads(x) for x in _lines("Encounter", 3000)]
    observations = [orjson.loads(x) for x in _lines("Observation", 3000)]
    by_id = {p["id"]: p for p in patients}
    out_patients = {p["id"]: p for p in _run(engine, _lines("Patient", 100))}
    for p in patients:  # hashed Patient.id is what references point to
        assert engine.deidentify(p)["id"] in out_patients
    # Observation.subject joins to the hashed Patient.id, and the patient's offset is shared
    offsets: dict[str, set[int]] = {}
    for original in encounters + observations:
        pid = original["subject"]["reference"].split("/")[1]
        out = engine.deidentify(original)
        ref = out["subject"]["reference"]
        assert ref.startswith("Patient/") and ref[8:] in out_patients
        assert engine.deidentify(by_id[pid])["id"] == ref[8:] if pid in by_id else True
        field = "effectiveDateTime" if original["resourceType"] == "Observation" else None
        if field and field in out:
            delta = (date.fromisoformat(out[field][:10]) - date.fromisoformat(original[field][:10])).days
            offsets.setdefault(ref, set()).add(delta)
        if original["resourceType"] == "Encounter" and "period" in out:  # > 89 years ago: removed
            start = original["period"]["start"]
            delta = (date.fromisoformat(out["period"]["start"][:10]) - date.fromisoformat(start[:10])).days
            offsets.setdefault(ref, set()).add(delta)
    assert len(offsets) > 10
    assert all(len(v) == 1 and 0 < abs(next(iter(v))) <= 50 for v in offsets.values())
    assert len({next(iter(v)) for v in offsets.values()}) > 5  # patients get different offsets
    # a second engine with the same key gives the same answers
    again = Deidentifier(load_profile("safe-harbor"), DeidKeys(TEST_SECRET))
    assert _run(again, _lines("Encounter", 50)) == _run(engine, _lines("Encounter", 50))


def test_different_key_gives_different_pseudonyms_and_offsets(keys):
    a = Deidentifier(load_profile("safe-harbor"), keys)
    b = Deidentifier(load_profile("safe-harbor"), DeidKeys("another-secret-0123456789abcdef"))
    patients = [orjson.loads(x) for x in _lines("Patient", 30)]
    out_a = [a.deidentify(p) for p in patients]
    out_b = [b.deidentify(p) for p in patients]
    assert all(x["id"] != y["id"] for x, y in zip(out_a, out_b, strict=True))
    enc = [orjson.loads(x) for x in _lines("Encounter", 30)]
    shifted_a = [a.deidentify(e).get("period", {}).get("start") for e in enc]
    shifted_b = [b.deidentify(e).get("period", {}).get("start") for e in enc]
    assert sum(x != y for x, y in zip(shifted_a, shifted_b, strict=True) if x) > 20


def test_safe_harbor_birth_date_is_year_only(keys):
    engine = Deidentifier(load_profile("safe-harbor"), keys)
    for line in _lines("Patient", 100):
        original = orjson.loads(line)
        out = engine.deidentify(original)
        born = original["birthDate"]
        if date.today().year - int(born[:4]) > 89:
            assert "birthDate" not in out
        else:
            assert out["birthDate"] == born[:4]


@pytest.mark.parametrize(
    ("line", "error"),
    [(b"{not json", "not valid JSON"), (b'{"resourceType": "Foo", "id": "1"}', "unknown resourceType"),
     (b"[1, 2]", "not a JSON object"), (b'{"id": "x"}', "unknown resourceType"),
     (b'{"resourceType": "Encounter", "period": {"start": "17/05/1980"}}', "not a valid FHIR date")],
)
def test_bad_input_lines_are_reported_and_never_passed(line, error, keys):
    engine = Deidentifier(load_profile("safe-harbor"), keys)
    good = b'{"resourceType": "Patient", "id": "a", "name": [{"family": "Zed"}]}'
    errors = []
    out = list(engine.deidentify_ndjson([good, line, b"", good], on_error=lambda n, e: errors.append((n, e))))
    assert len(out) == 2 and all(b"Zed" not in x for x in out)
    assert [n for n, _ in errors] == [2] and error in str(errors[0][1])
    assert isinstance(errors[0][1], DeidProcessingError)
    with pytest.raises(DeidProcessingError, match="line 2"):  # processingErrors=raise without a callback
        list(engine.deidentify_ndjson([good, line]))


def test_skip_policy_returns_none_and_raise_policy_raises(keys):
    rules = [{"path": "nodesByType('HumanName').family", "method": "generalize", "cases": {"$this >= 0": "1"}}]
    patient = {"resourceType": "Patient", "name": [{"family": "Zed"}]}
    skip = Deidentifier(load_config({"fhirPathRules": rules, "processingErrors": "skip"}), keys)
    assert skip.deidentify(patient) is None
    assert list(skip.deidentify_ndjson([orjson.dumps(patient)])) == []
    raising = Deidentifier(load_config({"fhirPathRules": rules}), keys)
    with pytest.raises(DeidProcessingError) as info:
        raising.deidentify(patient)
    assert "Zed" not in str(info.value)
    with pytest.raises(DeidInputError):
        raising.deidentify({"resourceType": "NotAType"})
