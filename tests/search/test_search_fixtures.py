"""Table-driven search tests against small hand-checked fixtures."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from store_helper import clear_all, delete_resource, put_resources  # noqa: E402

from fhirlake.search.access import AccessConstraint  # noqa: E402
from fhirlake.search.service import SearchError, SearchRequest, everything, find_matches, search  # noqa: E402

BASE = "http://example.org/fhir"

PATIENTS = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Müller", "given": ["Éva"]}], "gender": "female",
     "birthDate": "1970-03-04", "identifier": [{"system": "urn:mrn", "value": "A1",
                                                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
     "active": True, "telecom": [{"system": "phone", "value": "555-1234"}],
     "meta": {"tag": [{"system": "urn:tags", "code": "vip"}], "profile": ["http://example.org/StructureDefinition/p"]}},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Miller", "given": ["Peter"]}], "gender": "male",
     "birthDate": "1970", "active": False, "managingOrganization": {"reference": "Organization/o1"}},
    {"resourceType": "Patient", "id": "p3", "name": [{"family": "Smith, Jr", "given": ["Al"]}], "gender": "male",
     "birthDate": "1985-12-31", "deceasedDateTime": "2020-01-01"},
    {"resourceType": "Organization", "id": "o1", "name": "Acme Health"},
]
OBSERVATIONS = [
    {"resourceType": "Observation", "id": "o-a", "status": "final", "subject": {"reference": "Patient/p1"},
     "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body height"}], "text": "Height"},
     "effectiveDateTime": "2020-05-01T10:00:00Z", "valueQuantity": {"value": 170.5, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}},
    {"resourceType": "Observation", "id": "o-b", "status": "amended", "subject": {"reference": "Patient/p1"},
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "effectivePeriod": {"start": "2020-05-01", "end": "2020-05-03"}, "valueQuantity": {"value": 100, "unit": "kg"}},
    {"resourceType": "Observation", "id": "o-c", "status": "final", "subject": {"reference": "Patient/p2"},
     "code": {"coding": [{"system": "urn:other", "code": "8302-2"}]}, "effectiveDateTime": "2021",
     "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]},
    {"resourceType": "Observation", "id": "o-d", "status": "final", "subject": {"reference": "Patient/p3"},
     "code": {"coding": [{"system": "http://loinc.org", "code": "a,b"}]}, "valueString": "positive"},
]


@pytest.fixture(scope="module")
def db(engine):
    with engine.begin() as conn:
        clear_all(conn)
        put_resources(conn, PATIENTS + OBSERVATIONS)
    return engine


def ids(engine, res_type, query, **kw) -> list[str]:
    """All matching ids (following next links), match entries only."""
    params = parse_qsl(query, keep_blank_values=True)
    found: list[str] = []
    with engine.connect() as conn:
        while True:
            bundle = orjson.loads(search(conn, SearchRequest(res_type, params, BASE, **kw)))
            found += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
            nxt = [lnk["url"] for lnk in bundle["link"] if lnk["relation"] == "next"]
            if not nxt:
                return sorted(found)
            params = parse_qsl(nxt[0].split("?", 1)[1], keep_blank_values=True)


CASES = [
    # string: starts-with, case and accent insensitive; :exact; :contains
    ("Patient", "name=mul", ["p1"]), ("Patient", "name=MIL", ["p2"]), ("Patient", "family=muller", ["p1"]),
    ("Patient", "given=eva", ["p1"]), ("Patient", "name:exact=Müller", ["p1"]), ("Patient", "name:exact=muller", []),
    ("Patient", "name:contains=ill", ["p2"]), ("Patient", "name=smith\\, jr", ["p3"]), ("Patient", "name=mul,smi", ["p1", "p3"]),
    ("Patient", "name=m&name=er", []), ("Patient", "name=m&given=pe", ["p2"]),
    # token
    ("Patient", "gender=male", ["p2", "p3"]), ("Patient", "gender:not=male", ["p1"]),
    ("Patient", "identifier=urn:mrn|A1", ["p1"]), ("Patient", "identifier=|A1", []), ("Patient", "identifier=urn:mrn|", ["p1"]),
    ("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|A1", ["p1"]),
    ("Patient", "active=true", ["p1"]), ("Patient", "active=false", ["p2"]), ("Patient", "phone=555-1234", ["p1"]),
    ("Patient", "deceased=true", ["p3"]), ("Patient", "deceased=false", ["p1", "p2"]),
    ("Observation", "code=8302-2", ["o-a", "o-c"]), ("Observation", "code=http://loinc.org|8302-2", ["o-a"]),
    ("Observation", "code:text=height", ["o-a"]), ("Observation", "code:text=body", ["o-a"]),
    ("Observation", "code=a\\,b", ["o-d"]), ("Observation", "code=http://loinc.org|8302-2,29463-7", ["o-a", "o-b"]),
    # common parameters
    ("Patient", "_id=p1,p3", ["p1", "p3"]), ("Patient", "_tag=urn:tags|vip", ["p1"]),
    ("Patient", "_profile=http://example.org/StructureDefinition/p", ["p1"]),
    # date: precision ranges, prefixes
    ("Patient", "birthdate=1970", ["p1", "p2"]), ("Patient", "birthdate=1970-03", ["p1"]), ("Patient", "birthdate=1970-03-04", ["p1"]),
    ("Patient", "birthdate=gt1970", ["p3"]), ("Patient", "birthdate=ge1970", ["p1", "p2", "p3"]),
    ("Patient", "birthdate=lt1970-06", ["p1", "p2"]), ("Patient", "birthdate=sa1970", ["p3"]), ("Patient", "birthdate=eb1971", ["p1", "p2"]),
    ("Patient", "birthdate=ne1970", ["p3"]), ("Patient", "birthdate=le1970-03-04", ["p1", "p2"]),
    ("Observation", "date=2020-05-01", ["o-a"]), ("Observation", "date=2020-05", ["o-a", "o-b"]),
    ("Observation", "date=ge2020-05-02", ["o-b", "o-c"]), ("Observation", "date=lt2020-05-01T11:00", ["o-a", "o-b"]),
    ("Observation", "date=ge2020&date=lt2021", ["o-a", "o-b"]), ("Observation", "date=ap2021-01-01", ["o-c"]),
    # quantity and number
    ("Observation", "value-quantity=170.5", ["o-a"]), ("Observation", "value-quantity=170", []),
    ("Observation", "value-quantity=1.7e2", ["o-a"]), ("Observation", "value-quantity=gt150", ["o-a"]),
    ("Observation", "value-quantity=le100||kg", ["o-b"]), ("Observation", "value-quantity=170.5|http://unitsofmeasure.org|cm", ["o-a"]),
    ("Observation", "value-quantity=100|http://unitsofmeasure.org|cm", []),
    # reference
    ("Observation", "subject=Patient/p1", ["o-a", "o-b"]), ("Observation", "patient=p2", ["o-c"]),
    ("Observation", f"subject={BASE}/Patient/p3", ["o-d"]), ("Observation", "subject:Patient=p1", ["o-a", "o-b"]),
    ("Observation", "subject:Group=p1", []), ("Patient", "organization=o1", ["p2"]),
    # chains and reverse chains
    ("Observation", "subject:Patient.name=miller", ["o-c"]), ("Observation", "patient.gender=male", ["o-c", "o-d"]),
    ("Observation", "patient.organization.name=acme", ["o-c"]),
    ("Patient", "_has:Observation:patient:code=8302-2", ["p1", "p2"]),
    ("Patient", "_has:Observation:patient:status=amended", ["p1"]),
    ("Organization", "_has:Patient:organization:_has:Observation:patient:code=8302-2", ["o1"]),
    # composite
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt100", ["o-c"]),
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$lt100", []),
    ("Observation", "code-value-quantity=http://loinc.org|8302-2$170.5", ["o-a"]),
    ("Observation", "code-value-string=a\\,b$pos", ["o-d"]),
    # composites sharing another composite's component rows (fhirlake.search.registry._share_components)
    ("Observation", "combo-code-value-quantity=http://loinc.org|8480-6$120", ["o-c"]),
    ("Observation", "combo-code-value-quantity=http://loinc.org|8302-2$170.5", ["o-a"]),
    ("Observation", "combo-code-value-quantity=http://loinc.org|8302-2$120", []),
    ("Observation", "code-value-quantity=http://loinc.org|8480-6$120", []),
    # :missing
    ("Observation", "value-quantity:missing=true", ["o-c", "o-d"]), ("Observation", "value-quantity:missing=false", ["o-a", "o-b"]),
    ("Patient", "organization:missing=false", ["p2"]), ("Patient", "death-date:missing=false", ["p3"]),
]


@pytest.mark.parametrize(("res_type", "query", "expected"), CASES, ids=[f"{t}?{q}" for t, q, _e in CASES])
def test_search_cases(db, res_type, query, expected):
    assert ids(db, res_type, query) == sorted(expected)


@pytest.mark.parametrize("query, param", [
    ("nonsense=1", "nonsense"), ("code:in=http://vs", "code:in"), ("code:not-in=x", "code:not-in"),
    ("date=2020-13-45", "date"), ("value-quantity=abc", "value-quantity"), ("_contained=true", "_contained"),
    ("_sort=nonsense", "_sort"), ("_count=x", "_count"), ("code:bogus=1", "code:bogus"), ("near=1|2|3", "near"),
])
def test_bad_parameters_answer_400_naming_the_parameter(db, query, param):
    with db.connect() as conn, pytest.raises(SearchError) as err:
        search(conn, SearchRequest("Observation", parse_qsl(query), BASE))
    assert err.value.status == 400 and err.value.param == param


def test_lenient_ignores_unknown_and_leaves_them_out_of_self_link(db):
    with db.connect() as conn:
        bundle = orjson.loads(search(conn, SearchRequest("Patient", [("nonsense", "1"), ("gender", "male")], BASE, lenient=True)))
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == ["p2", "p3"]
    assert bundle["link"][0]["url"] == f"{BASE}/Patient?gender=male"


def test_include_revinclude_and_iterate(db):
    with db.connect() as conn:
        b = orjson.loads(search(conn, SearchRequest("Observation", [("code", "8302-2"), ("_include", "Observation:patient"),
                                                                    ("_include:iterate", "Patient:organization")], BASE)))
        modes = {(e["resource"]["id"], e["search"]["mode"]) for e in b["entry"]}
        assert modes == {("o-a", "match"), ("o-c", "match"), ("p1", "include"), ("p2", "include"), ("o1", "include")}
        b = orjson.loads(search(conn, SearchRequest("Patient", [("_id", "p1"), ("_revinclude", "Observation:subject")], BASE)))
        assert sorted(e["resource"]["id"] for e in b["entry"]) == ["o-a", "o-b", "p1"]


def test_sort_multi_key_and_paging_are_stable_under_writes(db):
    assert [*ids(db, "Patient", "_sort=-birthdate")] == ["p1", "p2", "p3"]
    with db.connect() as conn:
        def page(params):
            return orjson.loads(search(conn, SearchRequest("Patient", params, BASE)))
        b = page([("_sort", "gender,-birthdate"), ("_count", "1")])
        order = [b["entry"][0]["resource"]["id"]]
        while nxt := [lnk["url"] for lnk in b["link"] if lnk["relation"] == "next"]:
            b = page(parse_qsl(nxt[0].split("?", 1)[1]))
            order += [e["resource"]["id"] for e in b.get("entry", [])]
        assert order == ["p1", "p3", "p2"]  # female first; males by birth date, latest first
        # a write before the next page neither repeats nor skips
        b1 = page([("_sort", "_id"), ("_count", "2")])
        assert [e["resource"]["id"] for e in b1["entry"]] == ["p1", "p2"]
    with db.begin() as conn:
        put_resources(conn, [{"resourceType": "Patient", "id": "p0", "gender": "other"}])
    with db.connect() as conn:
        nxt = [lnk["url"] for lnk in b1["link"] if lnk["relation"] == "next"][0]
        b2 = orjson.loads(search(conn, SearchRequest("Patient", parse_qsl(nxt.split("?", 1)[1]), BASE)))
        assert [e["resource"]["id"] for e in b2["entry"]] == ["p3"]
        prev = [lnk["url"] for lnk in b2["link"] if lnk["relation"] == "previous"][0]
        b3 = orjson.loads(search(conn, SearchRequest("Patient", parse_qsl(prev.split("?", 1)[1]), BASE)))
        assert [e["resource"]["id"] for e in b3["entry"]] == ["p1", "p2"]
    with db.begin() as conn:
        delete_resource(conn, "Patient", "p0")


def test_totals_summary_elements(db):
    with db.connect() as conn:
        b = orjson.loads(search(conn, SearchRequest("Observation", [("_total", "accurate"), ("_count", "1")], BASE)))
        assert b["total"] == 4 and len(b["entry"]) == 1
        b = orjson.loads(search(conn, SearchRequest("Observation", [("_total", "none"), ("_count", "1")], BASE)))
        assert "total" not in b
        b = orjson.loads(search(conn, SearchRequest("Observation", [("_summary", "count")], BASE)))
        assert b["total"] == 4 and "entry" not in b
        b = orjson.loads(search(conn, SearchRequest("Patient", [("_id", "p1"), ("_elements", "gender")], BASE)))
        res = b["entry"][0]["resource"]
        assert set(res) == {"resourceType", "id", "meta", "gender"}
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in res["meta"]["tag"]
        b = orjson.loads(search(conn, SearchRequest("Patient", [("_id", "p1"), ("_summary", "true")], BASE)))
        assert "telecom" in b["entry"][0]["resource"] and "SUBSETTED" in str(b["entry"][0]["resource"]["meta"])


def test_find_matches_and_delete(db):
    with db.connect() as conn:
        assert [m[1] for m in find_matches(conn, "Patient", "identifier=urn:mrn|A1")] == ["p1"]
        with pytest.raises(SearchError):
            find_matches(conn, "Patient", "bogus=1")
    with db.begin() as conn:
        put_resources(conn, [{"resourceType": "Patient", "id": "gone", "gender": "unknown"}])
    assert ids(db, "Patient", "gender=unknown") == ["gone"]
    with db.begin() as conn:
        delete_resource(conn, "Patient", "gone")
    assert ids(db, "Patient", "gender=unknown") == []


def test_compartment_search_and_access_constraint(db):
    assert ids(db, "Observation", "", compartment=("Patient", "p1")) == ["o-a", "o-b"]
    assert ids(db, "Observation", "code=8302-2", compartment=("Patient", "p1")) == ["o-a"]
    only_p2 = AccessConstraint(patient_id="p2")
    assert ids(db, "Observation", "", access=only_p2) == ["o-c"]
    assert ids(db, "Patient", "", access=only_p2) == ["p2"]
    # chains, _has and includes never reach outside the compartment
    assert ids(db, "Observation", "patient.gender=male", access=only_p2) == ["o-c"]
    assert ids(db, "Patient", "_has:Observation:patient:code=8302-2", access=only_p2) == ["p2"]
    with db.connect() as conn:
        b = orjson.loads(search(conn, SearchRequest("Observation", [("_include", "Observation:patient"),
                                                                    ("_include:iterate", "Patient:organization")], BASE, access=only_p2)))
        assert sorted(e["resource"]["id"] for e in b["entry"]) == ["o-c", "p2"]  # Organization not shared
        shared = AccessConstraint(patient_id="p2", shared_types=frozenset({"Organization"}))
        b = orjson.loads(search(conn, SearchRequest("Observation", [("_include", "Observation:patient"),
                                                                    ("_include:iterate", "Patient:organization")], BASE, access=shared)))
        assert sorted(e["resource"]["id"] for e in b["entry"]) == ["o-c", "o1", "p2"]
    finals = AccessConstraint(filters={"Observation": [[("status", "amended")]]})
    assert ids(db, "Observation", "", access=finals) == ["o-b"]


def test_everything(db):
    with db.connect() as conn:
        b = orjson.loads(everything(conn, "p2", [], BASE))
        assert sorted(e["resource"]["id"] for e in b["entry"]) == ["o-c", "o1", "p2"]
        b = orjson.loads(everything(conn, "p1", [("_type", "Observation"), ("start", "2020-05-02")], BASE))
        assert sorted(e["resource"]["id"] for e in b["entry"]) == ["o-b"]
        got, params = [], [("_count", "1")]
        while True:
            b = orjson.loads(everything(conn, "p1", params, BASE))
            got += [e["resource"]["id"] for e in b.get("entry", [])]
            nxt = [lnk["url"] for lnk in b["link"] if lnk["relation"] == "next"]
            if not nxt:
                break
            params = parse_qsl(nxt[0].split("?", 1)[1])
        assert sorted(got) == ["o-a", "o-b", "p1"]
