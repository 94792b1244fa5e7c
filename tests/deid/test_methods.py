"""Each method and option, table-driven, on small resources."""

from __future__ import annotations

from datetime import date

import pytest

from fhirlake.deid import Deidentifier, DeidKeys, decrypt, load_config
from fhirlake.deid import methods as m
from tests.deid.conftest import TEST_SECRET

THIS_YEAR = date.today().year
PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "name": [{"use": "official", "family": "Smith", "given": ["Ann", "Bea"]}],
    "birthDate": "1980-05-17", "deceasedDateTime": "2020-02-03T10:11:12+02:00",
    "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "MA", "postalCode": "03601",
                 "country": "US", "period": {"start": "2001-03-04"}}],
    "multipleBirthInteger": 2, "managingOrganization": {"reference": "Organization/o1", "display": "Org"},
}


def run(rules, resource=PATIENT, **params):
    config = load_config({"fhirPathRules": rules, "parameters": params} if params else {"fhirPathRules": rules})
    return Deidentifier(config, DeidKeys(TEST_SECRET)).deidentify(resource)


def labels(out):
    return {s["code"] for s in out.get("meta", {}).get("security", [])}


HASH_KEY = DeidKeys(TEST_SECRET).key_for("cryptoHash")
OLD = f"{THIS_YEAR - 95}-01-02"


@pytest.mark.parametrize(
    ("rules", "params", "check"),
    [
        # keep protects from later rules
        ([{"path": "Patient.name.family", "method": "keep"}, {"path": "Patient.name", "method": "redact"}], {},
         lambda o: o["name"] == [{"family": "Smith"}] and "REDACTED" in labels(o)),
        # redact without partial options removes dates and ZIP
        ([{"path": "Patient.birthDate", "method": "redact"}, {"path": "Patient.address", "method": "redact"}], {},
         lambda o: "birthDate" not in o and "address" not in o),
        # partial dates: year only
        ([{"path": "Patient.birthDate", "method": "redact"}], {"enablePartialDatesForRedact": True},
         lambda o: o["birthDate"] == "1980" and "ABSTRED" in labels(o)),
        # partial ZIP: first 3 digits, and restricted ZIP3 -> zeros
        ([{"path": "Patient.address", "method": "redact"}], {"enablePartialZipCodesForRedact": True},
         lambda o: o["address"] == [{"postalCode": "03600"}]),
        ([{"path": "Patient.address", "method": "redact"}],
         {"enablePartialZipCodesForRedact": True, "restrictedZipCodeTabulationAreas": ["036"]},
         lambda o: o["address"] == [{"postalCode": "00000"}]),
        # cryptoHash: HMAC-SHA256 hex; references hash only the id
        ([{"path": "Resource.id", "method": "cryptoHash"},
          {"path": "nodesByType('Reference').reference", "method": "cryptoHash"}], {},
         lambda o: o["id"] == m.crypto_hash(HASH_KEY, "p1")
         and o["managingOrganization"]["reference"] == "Organization/" + m.crypto_hash(HASH_KEY, "o1")),
        # substitute: primitive and object
        ([{"path": "Patient.name.family", "method": "substitute", "replaceWith": "X"}], {},
         lambda o: o["name"][0]["family"] == "X" and "SUBSTITUTED" in labels(o)),
        ([{"path": "Patient.address", "method": "substitute", "replaceWith": {"city": "Nowhere"}}], {},
         lambda o: o["address"] == [{"city": "Nowhere"}]),
        # perturb keeps the type (integer)
        ([{"path": "Patient.multipleBirth", "method": "perturb", "span": 0, "rangeType": "fixed"}], {},
         lambda o: o["multipleBirthInteger"] == 2 and "PERTURBED" in labels(o)),
        # generalize with otherValues
        ([{"path": "Patient.birthDate", "method": "generalize",
           "cases": {"$this < @1990-01-01": "@1980-01-01"}}], {},
         lambda o: o["birthDate"] == "1980-01-01"),
        ([{"path": "Patient.address.city", "method": "generalize", "cases": {"$this = 'x'": "'y'"},
           "otherValues": "keep"}], {}, lambda o: o["address"][0]["city"] == "Springfield"),
        ([{"path": "Patient.address.city", "method": "generalize", "cases": {"$this = 'x'": "'y'"}}], {},
         lambda o: "city" not in o["address"][0]),
        ([{"path": "Patient.address.postalCode", "method": "generalize",
           "cases": {"$this.startsWith('036')": "$this.substring(0,3) + '**'"}}], {},
         lambda o: o["address"][0]["postalCode"] == "036**"),
        # where(): only matching nodes
        ([{"path": "Patient.name.where(use='official')", "method": "redact"}], {},
         lambda o: "name" not in o),
        ([{"path": "Patient.name.where(use='usual')", "method": "redact"}], {},
         lambda o: o["name"][0]["family"] == "Smith"),
        # ofType / as on choice elements
        ([{"path": "Patient.deceased as dateTime", "method": "redact"}], {}, lambda o: "deceasedDateTime" not in o),
        ([{"path": "Patient.deceased.ofType(boolean)", "method": "redact"}], {},
         lambda o: o["deceasedDateTime"] == PATIENT["deceasedDateTime"]),
        # unknown elements are removed unless a rule keeps them
        ([{"path": "Patient.gender", "method": "redact"}], {}, lambda o: "id" in o),
    ],
)
def test_methods(rules, params, check):
    assert check(run(rules, **params))


def test_unknown_elements_and_default_action():
    resource = dict(PATIENT, madeUp="secret")
    assert "madeUp" not in run([{"path": "Patient.gender", "method": "redact"}], resource)
    keep = load_config({"fhirPathRules": [{"path": "Patient.gender", "method": "redact"}], "unknownElements": "keep"})
    assert Deidentifier(keep).deidentify(resource)["madeUp"] == "secret"
    allow = load_config({"fhirPathRules": [{"path": "Patient.name", "method": "keep"}], "defaultAction": "redact"})
    out = Deidentifier(allow).deidentify(PATIENT)
    assert set(out) == {"resourceType", "name", "meta"} and out["name"] == PATIENT["name"]


def test_date_shift_keeps_precision_time_and_zone():
    out = run([{"path": "nodesByType('date') | nodesByType('dateTime')", "method": "dateShift"}])
    born = date.fromisoformat(out["birthDate"])
    offset = (born - date(1980, 5, 17)).days
    assert 0 < abs(offset) <= 50
    died = out["deceasedDateTime"]
    assert died.endswith("T10:11:12+02:00")
    assert (date.fromisoformat(died[:10]) - date(2020, 2, 3)).days == offset
    assert (date.fromisoformat(out["address"][0]["period"]["start"]) - date(2001, 3, 4)).days == offset


@pytest.mark.parametrize(
    ("value", "partial", "expected"),
    [("2001", True, "2001"), ("2001-07", True, "2001"), ("2001-07", False, None), (OLD, True, None),
     (OLD + "T01:02:03Z", True, None)],
)
def test_date_shift_partial_and_old_dates(value, partial, expected):
    assert m.shift_date(value, 10, date.today(), partial) == expected


def test_date_shift_range_and_fixed_offset():
    out = run([{"path": "Patient.birthDate", "method": "dateShift"}], dateShiftFixedOffsetInDays=3)
    assert out["birthDate"] == "1980-05-20"
    offsets = {m.date_shift_days(b"k", f"Patient/{i}", 5) for i in range(500)}
    assert offsets == {-5, -4, -3, -2, -1, 1, 2, 3, 4, 5}


def test_partial_ages():
    cond = {"resourceType": "FamilyMemberHistory", "status": "completed", "patient": {"reference": "Patient/p"},
            "relationship": {"text": "x"},
            "condition": [{"code": {"text": "a"}, "onsetAge": {"value": 95, "unit": "a"}},
                          {"code": {"text": "b"}, "onsetAge": {"value": 45, "unit": "a"}}]}
    out = run([{"path": "nodesByType('Age')", "method": "redact"}], cond, enablePartialAgesForRedact=True)
    assert "onsetAge" not in out["condition"][0] and out["condition"][1]["onsetAge"]["value"] == 45
    out = run([{"path": "nodesByType('Age')", "method": "redact"}], cond)
    assert all("onsetAge" not in c for c in out["condition"])


@pytest.mark.parametrize("range_type", ["fixed", "proportional"])
def test_perturb_range_and_rounding(range_type):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
           "valueQuantity": {"value": 100.0, "unit": "kg"}}
    rule = {"path": "Observation.value as Quantity", "method": "perturb", "span": 10, "rangeType": range_type,
            "roundTo": 1}
    values = {run([rule], obs)["valueQuantity"]["value"] for _ in range(40)}
    width = 10 if range_type == "fixed" else 1000
    assert all(100 - width / 2 <= v <= 100 + width / 2 and round(v, 1) == v for v in values)
    assert len(values) > 1
    assert all(isinstance(v, float) for v in values)


def test_encrypt_round_trip():
    out = run([{"path": "Patient.name.family", "method": "encrypt"}])
    token = out["name"][0]["family"]
    assert token != "Smith" and decrypt(DeidKeys(TEST_SECRET).key_for("encrypt"), token) == "Smith"
    assert run([{"path": "Patient.name.family", "method": "encrypt"}])["name"][0]["family"] != token  # random IV
    own = run([{"path": "Patient.name.family", "method": "encrypt"}], encryptKey="0123456789abcdef")
    assert decrypt(b"0123456789abcdef", own["name"][0]["family"]) == "Smith"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [("Patient/123", "Patient/{h123}"), ("http://x.org/fhir/Patient/123/_history/2", "http://x.org/fhir/Patient/{h123}/_history/2"),
     ("urn:uuid:123", "urn:uuid:{h123}"), ("#123", "#{h123}"),
     ("Organization?identifier=a|b", "{hcond}")],
)
def test_reference_hashing(reference, expected):
    key = b"k"
    h = {"h123": m.crypto_hash(key, "123"), "hcond": m.crypto_hash(key, "Organization?identifier=a|b")}
    assert m.hash_reference(key, reference) == expected.format(**h)


def test_primitive_extensions_follow_their_value():
    resource = dict(PATIENT, _birthDate={"extension": [{"url": "http://x/birthTime", "valueDateTime": "1980-05-17T01:02:03Z"}]},
                    name=[{"given": ["Ann", "Bea"], "_given": [None, {"extension": [{"url": "u", "valueString": "Bea2"}]}]}])
    out = run([{"path": "Patient.birthDate", "method": "redact"}, {"path": "Patient.name.given", "method": "keep"}], resource)
    assert "_birthDate" not in out and out["name"][0]["_given"][1]["extension"][0]["valueString"] == "Bea2"


def test_input_is_not_modified():
    import copy

    before = copy.deepcopy(PATIENT)
    run([{"path": "Patient.name", "method": "redact"}, {"path": "Resource.id", "method": "cryptoHash"}])
    assert PATIENT == before
