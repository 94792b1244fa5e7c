"""FHIR XML <-> JSON: round trips over the official examples, and hostile or malformed input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fhir_model_data import official_examples, read_ndjson
from lxml import etree

from fhirlake.fhir.xml import XmlFormatError, resource_to_xml, xml_to_resource


def _canonical_xhtml(text: str) -> bytes:
    # XML cannot keep JSON's lexical choices inside the narrative (&quot; vs ", <br/> vs <br />):
    # narratives compare by their canonical XML form.
    return etree.tostring(etree.fromstring(text.encode()), method="c14n")


def _same(a: Any, b: Any, key: str = "") -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b  # decimals compare by value
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], k) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y, key) for x, y in zip(a, b, strict=True))
    if key == "div" and a != b:
        return _canonical_xhtml(a) == _canonical_xhtml(b)
    return a == b


def test_round_trip_official_example(example: dict) -> None:
    xml = resource_to_xml(example)
    assert _same(xml_to_resource(xml), example)


@pytest.mark.parametrize("name", sorted(n for n in official_examples() if n.startswith(("Patient-", "Bundle-"))))
def test_pretty_output_parses_back(name: str) -> None:
    example = official_examples()[name]
    pretty = resource_to_xml(example, pretty=True)
    assert pretty.count(b"\n") > 10
    assert _same(xml_to_resource(pretty), example)


def test_writer_follows_definition_order_and_xml_conventions() -> None:
    patient = {
        "resourceType": "Patient",
        "gender": "male",
        "name": [{"given": ["Ann", None, "Lee"], "_given": [None, {"extension": [
            {"url": "http://example.org/x", "valueBoolean": True}]}, {"id": "g3"}], "family": "Doe"}],
        "id": "p1",
        "multipleBirthInteger": 2,
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi</p></div>'},
    }
    root = etree.fromstring(resource_to_xml(patient))
    ns = {"f": "http://hl7.org/fhir"}
    names = [etree.QName(c).localname for c in root]
    assert names == ["id", "text", "name", "gender", "multipleBirthInteger"]
    human = root.find("f:name", ns)
    assert [etree.QName(c).localname for c in human] == ["family", "given", "given", "given"]
    givens = human.findall("f:given", ns)
    assert givens[1].get("value") is None and givens[1].find("f:extension", ns).get("url") == "http://example.org/x"
    assert givens[2].get("id") == "g3"
    back = xml_to_resource(resource_to_xml(patient))
    assert back == patient
    assert back["multipleBirthInteger"] == 2 and isinstance(back["multipleBirthInteger"], int)


def test_numbers_and_booleans_come_back_typed() -> None:
    xml = b"""<Observation xmlns="http://hl7.org/fhir"><status value="final"/>
      <code><text value="x"/></code><valueQuantity><value value="100"/></valueQuantity></Observation>"""
    assert xml_to_resource(xml)["valueQuantity"] == {"value": 100}
    xml = xml.replace(b'value value="100"', b'value value="1.50"')
    assert xml_to_resource(xml)["valueQuantity"]["value"] == 1.5
    xml = b"""<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>"""
    assert xml_to_resource(xml) == {"resourceType": "Patient", "active": True}


BAD_XML = {
    "not xml": b"hello",
    "unclosed": b'<Patient xmlns="http://hl7.org/fhir"><active value="true"/>',
    "no namespace": b'<Patient><active value="true"/></Patient>',
    "unknown resource": b'<Nonsense xmlns="http://hl7.org/fhir"/>',
    "unknown element": b'<Patient xmlns="http://hl7.org/fhir"><colour value="red"/></Patient>',
    "bad boolean": b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>',
    "singleton repeated": b'<Patient xmlns="http://hl7.org/fhir"><active value="true"/><active value="false"/></Patient>',
    "text in primitive": b'<Patient xmlns="http://hl7.org/fhir"><gender>male</gender></Patient>',
    "empty primitive": b'<Patient xmlns="http://hl7.org/fhir"><gender/></Patient>',
    "external entity": b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
        <Patient xmlns="http://hl7.org/fhir"><gender value="&xxe;"/></Patient>""",
    "entity expansion": b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">
        <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>
        <Patient xmlns="http://hl7.org/fhir"><gender value="&c;"/></Patient>""",
    "too deep": b'<Questionnaire xmlns="http://hl7.org/fhir"><status value="draft"/>'
    + b'<item><linkId value="x"/><type value="group"/>' * 200 + b"</item>" * 200 + b"</Questionnaire>",
}


@pytest.mark.parametrize("case", sorted(BAD_XML))
def test_bad_xml_is_rejected(case: str) -> None:
    with pytest.raises(XmlFormatError):
        xml_to_resource(BAD_XML[case])


def test_contained_and_str_input() -> None:
    xml = """<?xml version="1.0" encoding="UTF-8"?><Observation xmlns="http://hl7.org/fhir">
      <contained><Patient><id value="p"/></Patient></contained><status value="final"/>
      <code><text value="x"/></code><subject><reference value="#p"/></subject></Observation>"""
    out = xml_to_resource(xml)
    assert out["contained"] == [{"resourceType": "Patient", "id": "p"}]
    assert out["subject"] == {"reference": "#p"}


def test_round_trip_synthea(synthea_file: Path) -> None:
    resources = read_ndjson(synthea_file)
    assert resources
    for resource in resources:
        assert xml_to_resource(resource_to_xml(resource)) == resource
