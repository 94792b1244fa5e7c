"""Configuration loading and validation: every error names what is wrong (and the rule)."""

from __future__ import annotations

import json
import logging

import pytest

from fhirlake.deid import DeidConfigError, Deidentifier, DeidKeys, load_config, load_profile
from tests.deid.conftest import TEST_SECRET, VECTORS

UNIT = VECTORS / "unit-test-configs"


def _cfg(rules, **extra):
    return {"fhirPathRules": rules, **extra}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_cfg([{"path": "Patient", "method": "skip"}]), "rule 0 ('Patient'): unsupported method 'skip'"),
        (_cfg([{"path": "Patient.name", "method": "redact"}, {"path": "invalid()", "method": "redact"}]),
         "rule 1 ('invalid()', redact): cannot use path"),
        (_cfg([{"path": "Patient.name.where(use = )", "method": "redact"}]), "rule 0 ('Patient.name.where(use = )', redact): invalid FHIRPath"),
        (_cfg([{"path": "Patient.id", "method": "cryptoHash"}]), "rule 0 ('Patient.id', cryptoHash): cryptoHash needs a key"),
        (_cfg([{"path": "Patient.birthDate", "method": "dateShift"}]), "rule 0 ('Patient.birthDate', dateShift): dateShift needs a key"),
        (_cfg([{"path": "Patient", "method": "substitute"}]), "rule 0 ('Patient', substitute): substitute needs 'replaceWith'"),
        (_cfg([{"path": "Patient.name", "method": "redact"}, {"path": "Patient.name", "method": "keep"}]),
         "rule 1 ('Patient.name', keep) conflicts with rule 0 ('Patient.name', redact)"),
        (_cfg([{"path": "Condition.onset as Age", "method": "perturb"}]), "perturb needs 'span'"),
        (_cfg([{"path": "Condition.onset as Age", "method": "perturb", "span": -1}]), "'span' must not be negative"),
        (_cfg([{"path": "Condition.onset as Age", "method": "perturb", "span": 3, "rangeType": "x"}]), "'rangeType'"),
        (_cfg([{"path": "Condition.onset as Age", "method": "perturb", "span": 3, "roundTo": 29}]), "'roundTo'"),
        (_cfg([{"path": "Condition.onset as Age", "method": "perturb", "span": 3, "roundTo": "abc"}]), "'roundTo'"),
        (_cfg([{"path": "Condition.onset", "method": "generalize", "otherValues": "keep"}]), "non-empty 'cases'"),
        (_cfg([{"path": "Condition.onset", "method": "generalize", "cases": {"$this>0": "1"}, "otherValues": "x"}]),
         "'otherValues'"),
        (_cfg([{"path": "Condition.onset as Age", "method": "generalize", "cases": {"$this>=0 && $this<10": "10"}}]),
         "rule 0 ('Condition.onset as Age', generalize): invalid FHIRPath in generalize case"),
        (_cfg([{"path": "Patient.name", "method": "redact", "replaceWith": "x"}]), "unknown setting(s) for redact"),
        (_cfg([{"path": "Patient.name", "method": "redact"}], fhirVersion="Stu3"), "fhirVersion 'Stu3'"),
        (_cfg([{"path": "Patient.name", "method": "redact"}], processingErrors="ignore"), "processingErrors"),
        (_cfg([{"path": "Patient.name", "method": "redact"}], parameters={"dateShiftKy": "x"}), "unknown parameter(s): dateShiftKy"),
        (_cfg([{"path": "Patient.name", "method": "redact"}], parameters={"restrictedZipCodeTabulationAreas": ["12"]}),
         "3-digit"),
        (_cfg([]), "'fhirPathRules' is missing or empty"),
        ({"fhirPathRules": [{"path": "Patient.name", "method": "redact"}], "abc": 1}, "unknown configuration key(s): abc"),
        (_cfg([{"path": "Patient.name", "method": "encrypt"}], parameters={"encryptKey": "01234567890123456789"}),
         "parameters.encryptKey: the encryption key must be 128, 192 or 256 bits"),
        (_cfg([{"path": "", "method": "redact"}]), "rule 0: 'path' is missing or empty"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(config, message):
    with pytest.raises(DeidConfigError) as info:
        Deidentifier(load_config(config))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "configuration-unsupported-method.json", "configuration-invalid-fhirpath.json",
        "configuration-miss-replacement.json", "configuration-miss-rules.json",
        "configuration-perturb-exceed-28-roundTo.json", "configuration-perturb-miss-span.json",
        "configuration-perturb-negative-roundTo.json", "configuration-perturb-negative-span.json",
        "configuration-perturb-wrong-rangetype.json", "configuration-perturb-wrong-roundTo.json",
        "configuration-generalize-miss-cases.json", "configuration-generalize-invalid-othervalues.json",
        "configuration-generalize-fail-compiled-expression.json", "configuration-invalid-encryptkey.json",
        # custom processors ('mask') are not supported: refused like any unknown method
        "configuration-custom-processor.json",
    ],
)
def test_anonymizer_invalid_configurations_are_refused(name):
    with pytest.raises(DeidConfigError):
        Deidentifier(load_config(UNIT / "TestConfigurations" / name))


@pytest.mark.parametrize(
    ("name", "error"),
    [("configuration-R4-version.json", None), ("configuration-empty-version.json", None),
     # upstream's parser accepts this file's trailing comma; strict JSON does not
     ("configuration-null-version.json", "not valid JSON"),
     ("configuration-Stu3-version.json", "fhirVersion 'Stu3'"),
     ("configuration-invalid-version.json", "fhirVersion 'r3'")],
)
def test_fhir_version(name, error, keys):
    path = UNIT / "TestConfigurationsVersion" / name
    if error is None:
        assert Deidentifier(load_config(path), keys).config.rules
    else:
        with pytest.raises(DeidConfigError, match=error):
            load_config(path)


def test_valid_anonymizer_configuration_loads_with_bom_and_warns_about_unknown_types():
    engine = Deidentifier(load_config(UNIT / "TestConfigurations" / "configuration-test-sample.json"))
    assert any("TestResource" in w for w in engine.warnings)


def test_yaml_configuration(tmp_path, keys):
    path = tmp_path / "c.yaml"
    path.write_text("fhirPathRules:\n  - {path: Patient.name, method: redact}\n  - {path: Resource.id, method: cryptoHash}\n")
    engine = Deidentifier(load_config(path), keys)
    out = engine.deidentify({"resourceType": "Patient", "id": "a", "name": [{"family": "X"}]})
    assert "name" not in out and out["id"] != "a"


def test_unparsable_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DeidConfigError, match="not valid JSON"):
        load_config(bad)
    with pytest.raises(DeidConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(DeidConfigError, match="unknown de-identification profile"):
        load_profile("hipaa")


def test_profiles_load_and_document_every_rule(keys):
    for name in ("safe-harbor", "limited-data-set"):
        engine = Deidentifier(load_profile(name), keys)
        assert engine.warnings == []
        assert engine.config.name == name


def test_profiles_need_keys():
    with pytest.raises(DeidConfigError, match="needs a key"):
        Deidentifier(load_profile("safe-harbor"))


# ---- keys ------------------------------------------------------------------------------------
def test_keys_from_env_and_file(tmp_path):
    assert DeidKeys.from_env({"FHIRLAKE_DEID_KEY": TEST_SECRET}).key_for("cryptoHash") == DeidKeys(
        TEST_SECRET).key_for("cryptoHash")
    f = tmp_path / "key"
    f.write_text(TEST_SECRET + "\n")
    assert DeidKeys.from_env({"FHIRLAKE_DEID_KEY_FILE": str(f)}).key_for("dateShift") == DeidKeys(
        TEST_SECRET).key_for("dateShift")


def test_per_method_keys_are_independent():
    k = DeidKeys(TEST_SECRET)
    assert len({k.key_for("cryptoHash"), k.key_for("dateShift"), k.key_for("encrypt")}) == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [({}, "no de-identification key"), ({"FHIRLAKE_DEID_KEY": "short"}, "at least 16"),
     ({"FHIRLAKE_DEID_KEY_FILE": "/nonexistent/key"}, "cannot read")],
)
def test_missing_or_weak_key_refuses(env, message):
    with pytest.raises(DeidConfigError, match=message):
        DeidKeys.from_env(env)


def test_key_never_shown(caplog, keys):
    secret = TEST_SECRET
    assert secret not in repr(keys) and secret not in str(keys)
    for method in ("cryptoHash", "dateShift", "encrypt"):
        assert keys.key_for(method).hex() not in repr(keys)
    engine = Deidentifier(load_profile("safe-harbor"), keys)
    assert secret not in repr(engine)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeidConfigError) as info:
        Deidentifier(load_config(_cfg([{"path": "Patient.name", "method": "encrypt"}],
                                      parameters={"encryptKey": "tooshort-secret"})))
    assert "tooshort-secret" not in str(info.value)
    assert secret not in caplog.text
    with pytest.raises(TypeError):
        __import__("pickle").dumps(keys)


def test_config_objects_are_not_shared_with_caller():
    raw = _cfg([{"path": "Patient.name", "method": "substitute", "replaceWith": {"family": "x"}}])
    config = load_config(raw)
    raw["fhirPathRules"][0]["replaceWith"]["family"] = "changed"
    assert config.rules[0].settings["replaceWith"] == {"family": "x"}
    assert json.loads(json.dumps(raw))  # still plain JSON
