"""Structural validation: official examples and Synthea data pass, bad inputs give the right issue."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from fhir_model_data import official_examples, read_ndjson

from fhirlake.fhir.validation import MAX_DEPTH, ValidationIssue, validate_resource

# Questionnaire-qs1.json is itself invalid: 32 nested items lack linkId (1..1 in R4).
# It is checked on its own below instead of in the all-valid list.
INVALID_EXAMPLES = {"Questionnaire-qs1.json"}


@pytest.mark.parametrize("name", sorted(set(official_examples()) - INVALID_EXAMPLES))
def test_official_example_is_valid(name: str) -> None:
    assert validate_resource(official_examples()[name]) == []


def _items_without_link_id(items: list[dict], path: str) -> list[str]:
    missing = []
    for i, item in enumerate(items):
        here = f"{path}.item[{i}]"
        if "linkId" not in item:
            missing.append(f"{here}.linkId")
        missing += _items_without_link_id(item.get("item", []), here)
    return missing


def test_questionnaire_qs1_misses_link_ids() -> None:
    example = official_examples()["Questionnaire-qs1.json"]
    issues = validate_resource(example)
    expected = _items_without_link_id(example["item"], "Questionnaire")
    assert len(expected) == 32
    assert [(i.code, i.expression) for i in issues] == [("required", e) for e in expected]


def test_synthea_file_is_valid(synthea_file: Path) -> None:
    resources = read_ndjson(synthea_file)
    assert resources
    invalid = {r.get("id"): validate_resource(r) for r in resources}
    assert {k: v for k, v in invalid.items() if v} == {}


def _patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Doe", "given": ["Ann", "Lee"]}],
        "gender": "female",
        "birthDate": "1970-01-31",
        "contact": [{"name": {"text": "Bob"}}],
    }


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 72, "unit": "/min"},
        "component": [{"code": {"text": "x"}, "valueInteger": 3}],
    }


def _nested(depth: int) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": "leaf", "type": "display"}
    for level in range(depth):
        item = {"linkId": f"l{level}", "type": "group", "item": [item]}
    return {"resourceType": "Questionnaire", "status": "draft", "item": [item]}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return out


# (case, resource, expected issue code, expected expression)
BAD_INPUTS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown element", _with(_patient(), colour="red"), "structure", "Patient.colour"),
    ("unknown nested element", _with(_patient(), name=[{"family": "Doe", "nick": "A"}]),
     "structure", "Patient.name[0].nick"),
    ("unknown resource type", {"resourceType": "Nonsense"}, "invalid", "Resource"),
    ("missing resourceType", {"id": "x"}, "required", "Resource"),
    ("object for primitive", _with(_patient(), gender={"code": "female"}), "structure", "Patient.gender"),
    ("string for boolean", _with(_patient(), active="true"), "value", "Patient.active"),
    ("string for object", _with(_observation(), code="8867-4"), "structure", "Observation.code"),
    ("bad date", _with(_patient(), birthDate="1970-13-01"), "value", "Patient.birthDate"),
    ("impossible date", _with(_patient(), birthDate="2021-02-30"), "value", "Patient.birthDate"),
    ("dateTime without zone", _with(_observation(), effectiveDateTime="2020-01-01T10:00:00"),
     "value", "Observation.effectiveDateTime"),
    ("bad instant", _with(_observation(), issued="2020-01-01"), "value", "Observation.issued"),
    ("bad id", _with(_patient(), id="has space"), "value", "Patient.id"),
    ("code with trailing space", _with(_patient(), gender="female "), "value", "Patient.gender"),
    ("missing required", _with(_observation(), status=...), "required", "Observation.status"),
    ("missing required in backbone", _with(_observation(), component=[{"valueInteger": 3}]),
     "required", "Observation.component[0].code"),
    ("two choice variants", _with(_observation(), valueString="72"), "structure", "Observation.valueString"),
    ("bad choice suffix", _with(_observation(), valueQuantity=..., valueMoney={"value": 1}),
     "structure", "Observation.valueMoney"),
    ("array for singleton", _with(_patient(), gender=["female"]), "structure", "Patient.gender"),
    ("singleton for array", _with(_patient(), name={"family": "Doe"}), "structure", "Patient.name"),
    ("empty string", _with(_patient(), name=[{"family": ""}]), "value", "Patient.name[0].family"),
    ("empty array", _with(_patient(), name=[]), "structure", "Patient.name"),
    ("empty object", _with(_patient(), contact=[{}]), "structure", "Patient.contact[0]"),
    ("null in array", _with(_patient(), name=[{"given": ["Ann", None]}]), "structure", "Patient.name[0].given[1]"),
    ("integer out of range", _with(_observation(), component=[{"code": {"text": "x"}, "valueInteger": 2**31}]),
     "value", "Observation.component[0].valueInteger"),
    ("decimal as string", _with(_observation(), valueQuantity={"value": "72"}), "value",
     "Observation.valueQuantity.value"),
    ("positiveInt zero", {"resourceType": "Bundle", "type": "searchset", "total": -1}, "value", "Bundle.total"),
    ("resourceType inside datatype", _with(_patient(), name=[{"resourceType": "HumanName", "family": "D"}]),
     "structure", "Patient.name[0].resourceType"),
    ("bad primitive extension", _with(_patient(), _birthDate={"extension": [{"valueString": "x"}]}),
     "required", "Patient.birthDate.extension[0].url"),
    ("unknown key in primitive extension", _with(_patient(), _gender={"value": "x"}),
     "structure", "Patient.gender.value"),
    ("underscore of complex element", _with(_patient(), _name=[{"id": "a"}]), "structure", "Patient._name"),
    ("invalid contained resource", _with(_observation(), contained=[{"resourceType": "Patient", "gender": 1}]),
     "value", "Observation.contained[0].gender"),
    ("invalid bundle entry", {"resourceType": "Bundle", "type": "collection",
                              "entry": [{"resource": {"resourceType": "Patient", "active": "no"}}]},
     "value", "Bundle.entry[0].resource.active"),
    ("too deep", _nested(MAX_DEPTH), "too-costly", ""),
    ("bad uri", _with(_observation(), code={"coding": [{"system": "http://x y"}]}), "value",
     "Observation.code.coding[0].system"),
    ("bad base64", {"resourceType": "Binary", "contentType": "text/plain", "data": "@@@@"}, "value", "Binary.data"),
]


@pytest.mark.parametrize("case,resource,code,expression", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_issue(case: str, resource: dict, code: str, expression: str) -> None:
    issues = validate_resource(resource)
    assert issues, case
    assert all(isinstance(i, ValidationIssue) and i.severity == "error" for i in issues)
    if case == "too deep":
        assert [i.code for i in issues] == ["too-costly"]
        assert issues[0].expression.startswith("Questionnaire.item[0].item[0]")
        return
    assert [(i.code, i.expression) for i in issues] == [(code, expression)], issues


def test_good_inputs_are_valid() -> None:
    assert validate_resource(_patient()) == []
    assert validate_resource(_observation()) == []
    assert validate_resource(_nested(20)) == []
    extension_only = _with(_patient(), name=[{"given": ["Ann", None], "_given": [None, {"extension": [
        {"url": "http://example.org/x", "valueBoolean": True}]}]}])
    assert validate_resource(extension_only) == []
    assert validate_resource(_with(_patient(), birthDate=..., _birthDate={"id": "b"})) == []


def test_expected_type() -> None:
    assert validate_resource(_patient(), expected_type="Patient") == []
    issues = validate_resource(_patient(), expected_type="Observation")
    assert [(i.code, i.expression) for i in issues] == [("invalid", "Patient")]


def test_not_an_object() -> None:
    assert [i.code for i in validate_resource([1, 2])] == ["structure"]  # type: ignore[arg-type]


def test_issue_as_operation_outcome() -> None:
    issue = validate_resource(_with(_patient(), colour="red"))[0]
    assert issue.to_operation_outcome_issue()["expression"] == ["Patient.colour"]


# Never valid in any position of a resource ...
ALWAYS_INVALID = [None, [], {}, [None], [{}], "", {"x": 1}, [[1]], {"resourceType": "Patient"}]
# ... and valid in some positions only.
SOMETIMES_VALID = [1.5, -1, True, " x", "x", ["x"], {"text": "x"}]


def _leaf_paths(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))] + [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))] + [path]
    return [path]


def _replaced(resource: dict, path: tuple, new: Any) -> dict:
    out = copy.deepcopy(resource)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return out


@pytest.mark.parametrize("base", [_patient(), _observation()], ids=["Patient", "Observation"])
def test_garbage_anywhere_is_reported_not_raised(base: dict) -> None:
    for path in _leaf_paths(base):
        if not path or path == ("resourceType",):
            continue
        for junk in ALWAYS_INVALID:
            assert validate_resource(_replaced(base, path, junk)), (path, junk)
        for junk in SOMETIMES_VALID:
            assert isinstance(validate_resource(_replaced(base, path, junk)), list)
