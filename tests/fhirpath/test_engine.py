"""Unit tests for what the official suite covers thinly: API contract, choice types, primitive
extensions, references, caller functions, variables, boundaries on data, type traversal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhirlake.fhir.fhirpath import (
    FhirDate,
    FhirDateTime,
    FhirPathError,
    FhirPathSyntaxError,
    FhirTime,
    Quantity,
    compile_path,
    descendants_of_type,
    parse,
)
from fhirlake.fhir.fhirpath import ast as fp_ast

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", None, "James"],
         "_given": [None, {"extension": [{"url": "http://x/nick", "valueString": "Jim"}]}, None]},
        {"use": "usual", "given": ["Jim"]},
    ],
    "birthDate": "1974-12-25",
    "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                  "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
    "deceasedBoolean": False,
    "managingOrganization": {"reference": "Organization/1"},
    "generalPractitioner": [{"reference": "Practitioner/7"}, {"reference": "#pr1"}],
    "contained": [{"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Inside"}]}],
    "contact": [{"name": {"family": "Contact", "given": ["Carla"]}}],
}

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2020-05-01T10:00:00+02:00",
    "valueQuantity": {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    "component": [
        {"code": {"text": "a"}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
        {"code": {"text": "b"}, "valueString": "high"},
    ],
}


def ev(expression: str, resource: object = PATIENT, variables: dict | None = None, **kwargs: object) -> list:
    return compile_path(expression, **kwargs)(resource, {"resource": resource, **(variables or {})})


def test_parse_gives_frozen_ast_and_syntax_errors_carry_position() -> None:
    node = parse("Patient.name.given")
    assert isinstance(node, fp_ast.Member) and node.name == "given"
    with pytest.raises(AttributeError):
        node.name = "x"  # type: ignore[misc]
    with pytest.raises(FhirPathSyntaxError) as info:
        parse("Patient.name.where(use = )")
    assert info.value.position == 25
    with pytest.raises(FhirPathSyntaxError):
        compile_path("'unterminated")


def test_compile_is_cached_and_reusable() -> None:
    assert compile_path("Patient.id") is compile_path("Patient.id")
    expr = compile_path("name.given")
    assert expr(PATIENT) == ["Peter", "James", "Jim"]
    assert expr({"resourceType": "Patient"}) == []
    assert expr(None) == []


def test_choice_types_resolve_from_the_model() -> None:
    assert ev("Observation.value.unit", OBSERVATION) == ["/min"]
    assert ev("Observation.value.ofType(Quantity).value", OBSERVATION) == [72.5]
    assert ev("(Observation.value as Quantity).code", OBSERVATION) == ["/min"]
    assert ev("Observation.value is Quantity", OBSERVATION) == [True]
    assert ev("Observation.value is string", OBSERVATION) == [False]
    assert ev("Observation.value.as(CodeableConcept)", OBSERVATION) == []
    assert ev("(Observation.component.value as Quantity).value", OBSERVATION) == [120]
    assert ev("Observation.component.value.ofType(string)", OBSERVATION) == ["high"]
    assert ev("Patient.deceased", PATIENT) == [False]
    # without a type prefix the choice is still found, from the data
    assert ev("value.unit", OBSERVATION) == ["/min"]
    assert ev("effective", OBSERVATION, base_type="Observation") == ["2020-05-01T10:00:00+02:00"]


def test_date_strings_from_data_compare_as_dates() -> None:
    assert ev("Patient.birthDate < @1975") == [True]
    assert ev("Patient.birthDate = @1974-12") == []  # different precision: unknown
    assert ev("Observation.effective > @2020-05-01T09:00:00Z", OBSERVATION) == [False]
    assert ev("Observation.effective >= @2020-05-01T08:00:00Z", OBSERVATION) == [True]
    assert ev("(Observation.effective as dateTime) + 1 day", OBSERVATION) == [
        FhirDateTime.parse("2020-05-02T10:00:00+02:00")]


def test_primitive_extensions_are_reachable() -> None:
    assert ev("Patient.name.given.extension('http://x/nick').value") == ["Jim"]
    url = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    assert ev(f"Patient.birthDate.extension('{url}').valueDateTime") == ["1974-12-25T14:35:45-05:00"]
    assert ev(f"Patient.birthDate.extension.where(url = '{url}').value") == ["1974-12-25T14:35:45-05:00"]
    assert ev("Patient.name.given.extension.url") == ["http://x/nick"]
    assert ev("Patient.name.first().given.select($this.hasValue())") == [True, False, True]
    # ordinary paths never see the wrapper or the nulls
    assert ev("Patient.name.given") == ["Peter", "James", "Jim"]
    assert ev("Patient.birthDate") == ["1974-12-25"]


def test_resolve_types_references_from_the_reference_string() -> None:
    assert ev("Patient.managingOrganization.resolve() is Organization") == [True]
    assert ev("Observation.subject.where(resolve() is Patient).reference", OBSERVATION) == ["Patient/p1"]
    assert ev("Patient.generalPractitioner.resolve().ofType(Practitioner).count()") == [2]
    assert ev("Patient.generalPractitioner.resolve().name.family") == ["Inside"]


def test_caller_functions_eager_and_lazy() -> None:
    def get_resource_key(env, focus, *args):
        return [f"{r['resourceType']}/{r['id']}" for r in focus]

    def first_matching(env, focus, predicate):
        return [x for x in focus if predicate([x]) == [True]][:1]
    first_matching.fhirpath_lazy = True  # type: ignore[attr-defined]

    functions = {"getResourceKey": get_resource_key, "firstMatching": first_matching}
    assert ev("getResourceKey()", functions=functions) == ["Patient/p1"]
    assert ev("name.firstMatching(use = 'usual').given", functions=functions) == ["Jim"]
    with pytest.raises(FhirPathError):
        compile_path("getResourceKey()")  # not known without the caller's functions


def test_variables_and_constants() -> None:
    assert ev("%resource.id") == ["p1"]
    assert ev("%rowIndex + 1", variables={"rowIndex": 4}) == [5]
    assert ev("%codes.count()", variables={"codes": ["a", "b"]}) == [2]
    assert ev("%ucum") == ["http://unitsofmeasure.org"]
    with pytest.raises(FhirPathError):
        ev("%nope")


def test_decimal_inputs_are_accepted() -> None:
    resource = {"resourceType": "Observation", "valueQuantity": {"value": Decimal("1.50"), "unit": "mg"}}
    assert ev("Observation.value.value * 2", resource) == [Decimal("3.00")]
    assert ev("Observation.value.value = 1.5", resource) == [True]
    assert ev("Observation.value.value.lowBoundary()", resource) == [Decimal("1.49500000")]


def test_boundaries_on_data_use_the_element_type() -> None:
    assert ev("Patient.birthDate.highBoundary()", {"resourceType": "Patient", "birthDate": "1970-06"}) == [
        FhirDate(1970, 6, 30)]
    low = ev("Observation.value.ofType(dateTime).lowBoundary()",
             {"resourceType": "Observation", "valueDateTime": "2010-10-10"})
    assert [str(v) for v in low] == ["2010-10-10T00:00:00.000+14:00"]
    high = ev("Observation.value.ofType(time).highBoundary()",
              {"resourceType": "Observation", "valueTime": "12:34:00"})
    assert high == [FhirTime((12, 34, 0), 999)]


def test_iteration_variables() -> None:
    assert ev("Patient.name.select($index)") == [0, 1]
    assert ev("(1 | 2 | 3).aggregate($this + $total, 0)") == [6]
    assert ev("Patient.name.where($index = 1).use") == ["usual"]


def test_quantities_and_units() -> None:
    assert ev("4 'g' = 4000 'mg'") == [True]
    assert ev("1 'kg' > 900 'g'") == [True]
    assert ev("7 days = 1 week") == [True]
    assert ev("(3 'mg' + 2 'mg')") == [Quantity(5, "mg")]


def test_three_valued_logic() -> None:
    assert ev("{} and false") == [False]
    assert ev("{} and true") == []
    assert ev("{} or true") == [True]
    assert ev("false implies {}") == [True]
    assert ev("Patient.foo.exists() xor true") == [True]


def test_errors() -> None:
    with pytest.raises(FhirPathError, match="terminology"):
        ev("Patient.maritalStatus.memberOf('http://hl7.org/fhir/ValueSet/marital-status')",
           {"resourceType": "Patient", "maritalStatus": {"text": "x"}})
    with pytest.raises(FhirPathError):
        ev("Patient.name.given.substring(0, 1).single()")
    with pytest.raises(FhirPathError):
        compile_path("Patient.name.noSuchFunction()")
    with pytest.raises(FhirPathError):
        compile_path("Patient.name.first(1)")


def test_descendants_of_type_finds_nodes_for_replacement() -> None:
    resource = {**PATIENT, "contact": [{"name": {"family": "Contact"}}]}
    hits = list(descendants_of_type(resource, "HumanName"))
    families = sorted(node.get("family", "") for node, _, _, _ in hits)
    assert families == ["", "Chalmers", "Contact", "Inside"]
    for node, parent, key, index in hits:
        assert (parent[key][index] if index is not None else parent[key]) is node
    quantities = list(descendants_of_type(OBSERVATION, "Quantity"))
    assert [key for _, _, key, _ in quantities] == ["valueQuantity", "valueQuantity"]
    assert [n for n, *_ in descendants_of_type(PATIENT, "date")] == ["1974-12-25"]
