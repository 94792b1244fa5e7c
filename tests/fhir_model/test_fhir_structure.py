"""The R4 type model against facts from the FHIR specification."""

from __future__ import annotations

import time

from fhirlake.fhir import structure


def test_resource_types_are_the_146_concrete_r4_resources() -> None:
    types = structure.resource_types()
    assert len(types) == 146 and types == sorted(types)
    assert "Patient" in types and "Resource" not in types and "DomainResource" not in types
    assert structure.is_resource_type("Observation") and not structure.is_resource_type("HumanName")


def test_type_definitions() -> None:
    assert structure.get_type("Age") == structure.TypeDef("Age", "complex-type", "Quantity", False)
    assert structure.get_type("DomainResource").abstract
    assert structure.get_type("date").kind == "primitive-type" and structure.get_type("date").regex
    assert structure.get_type("Nope") is None


def test_choice_keys_resolve_to_their_type() -> None:
    element, code = structure.child_element("Observation", "valueQuantity")
    assert (element.path, element.name, code, element.is_choice) == ("Observation.value[x]", "value", "Quantity", True)
    assert structure.child_element("Observation", "valueDateTime")[1] == "dateTime"
    assert structure.child_element("Observation", "valueMoney") is None
    assert structure.child_element("Observation", "value") is None


def test_inherited_elements_are_present() -> None:
    patient = structure.children("Patient")
    for name in ("id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"):
        assert name in patient
    assert structure.child_element("Patient", "id")[1] == "id"
    assert structure.child_element("HumanName", "id")[1] == "string"
    assert structure.child_element("HumanName", "extension")[0].is_array
    assert list(structure.children("string")) == ["id", "extension"]


def test_backbone_and_content_reference() -> None:
    component, code = structure.child_element("Observation", "component")
    assert code == "BackboneElement" and component.is_array and component.structure_path == "Observation.component"
    assert structure.child_element("Observation.component", "code")[0].min == 1
    nested, _ = structure.child_element("Questionnaire.item", "item")
    assert nested.content_reference == "#Questionnaire.item" and nested.structure_path == "Questionnaire.item"
    assert structure.child_element(nested.path, "linkId")[0].min == 1
    total = structure.child_element("Invoice", "totalPriceComponent")[0]
    assert structure.next_parent(total, "BackboneElement") == "Invoice.lineItem.priceComponent"


def test_cardinality_order_and_xml_bits() -> None:
    status = structure.child_element("Observation", "status")[0]
    assert (status.min, status.max, status.is_array, status.binding_strength) == (1, 1, False, "required")
    assert structure.child_element("Extension", "url")[0].xml_attribute
    assert not structure.child_element("Patient", "id")[0].xml_attribute
    subject = structure.child_element("Observation", "subject")[0]
    assert set(subject.target_profiles) == {"Patient", "Group", "Device", "Location"}
    orders = [e.order for e in structure.children("Patient").values()]
    assert orders == list(range(len(orders)))


def test_model_loads_fast() -> None:
    structure._model.cache_clear()
    start = time.perf_counter()
    structure.get_type("Patient")
    assert time.perf_counter() - start < 0.5
