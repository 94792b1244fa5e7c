"""Loading and checking de-identification configurations.

The shape is the one of the Microsoft FHIR anonymizer (fhirVersion, processingErrors,
fhirPathRules, parameters), read from JSON (a UTF-8 byte-order mark is accepted) or YAML.
Everything that can be checked without data is checked here; the FHIRPath side is checked
when a `Deidentifier` is built. Unknown keys are errors: a misspelt option must not silently
weaken a de-identification.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fhirlake.deid.errors import DeidConfigError

METHODS = {
    "keep": "keep", "redact": "redact", "dateshift": "dateShift", "cryptohash": "cryptoHash",
    "encrypt": "encrypt", "substitute": "substitute", "perturb": "perturb", "generalize": "generalize",
}
# Extra keys each method accepts in a rule, besides path and method.
_RULE_KEYS: dict[str, frozenset[str]] = {
    "keep": frozenset(), "redact": frozenset(), "dateShift": frozenset(), "cryptoHash": frozenset(),
    "encrypt": frozenset(), "substitute": frozenset({"replaceWith", "replacementWith"}),
    "perturb": frozenset({"span", "rangeType", "roundTo"}), "generalize": frozenset({"cases", "otherValues"}),
}
_TOP_KEYS = frozenset({
    "fhirVersion", "processingErrors", "processingError", "fhirPathRules", "parameters",
    "defaultAction", "unknownElements", "addSecurityLabels", "description", "name",
})
_SCOPES = {"patient", "resource", "file", "folder", "global"}
PROFILES = ("safe-harbor", "limited-data-set")


@dataclass(frozen=True)
class Parameters:
    date_shift_key: str = ""
    date_shift_scope: str = "patient"
    date_shift_fixed_offset: int | None = None
    date_shift_range: int = 50
    crypto_hash_key: str = ""
    encrypt_key: str = ""
    partial_ages: bool = False
    partial_dates: bool = False
    partial_zip_codes: bool = False
    restricted_zip3: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Rule:
    index: int
    path: str
    method: str  # canonical spelling, e.g. "dateShift"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"rule {self.index} ({self.path!r}, {self.method})"


@dataclass(frozen=True)
class DeidConfig:
    rules: tuple[Rule, ...]
    parameters: Parameters
    processing_errors: str = "raise"  # 'raise' | 'skip'
    default_action: str = "keep"  # what happens to elements no rule selects
    unknown_elements: str = "redact"  # elements that R4 does not define
    add_security_labels: bool = True
    name: str = "custom"


def _fail(message: str) -> DeidConfigError:
    return DeidConfigError(message)


def _bool(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise _fail(f"parameters.{key} must be true or false")
    return value


def _key_param(params: dict[str, Any], key: str) -> str:
    value = params.get(key) or ""
    if not isinstance(value, str):
        raise _fail(f"parameters.{key} must be a string")
    return value


def _parameters(raw: Any) -> Parameters:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail("'parameters' must be an object")
    known = {
        "dateShiftKey", "dateShiftScope", "dateShiftFixedOffsetInDays", "dateShiftRangeInDays",
        "cryptoHashKey", "encryptKey", "enablePartialAgesForRedact", "enablePartialDatesForRedact",
        "enablePartialZipCodesForRedact", "restrictedZipCodeTabulationAreas",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(f"unknown parameter(s): {', '.join(unknown)}")
    scope = raw.get("dateShiftScope") or "patient"
    if scope not in _SCOPES:
        raise _fail(f"parameters.dateShiftScope must be one of {sorted(_SCOPES)}, not {scope!r}")
    fixed = raw.get("dateShiftFixedOffsetInDays")
    if fixed is not None and (isinstance(fixed, bool) or not isinstance(fixed, int)):
        raise _fail("parameters.dateShiftFixedOffsetInDays must be an integer")
    span = raw.get("dateShiftRangeInDays", 50)
    if isinstance(span, bool) or not isinstance(span, int) or not 1 <= span <= 3650:
        raise _fail("parameters.dateShiftRangeInDays must be an integer from 1 to 3650")
    zips = raw.get("restrictedZipCodeTabulationAreas") or []
    if not isinstance(zips, list) or not all(isinstance(z, str) and len(z) == 3 and z.isdigit() for z in zips):
        raise _fail("parameters.restrictedZipCodeTabulationAreas must be a list of 3-digit strings")
    encrypt_key = _key_param(raw, "encryptKey")
    if encrypt_key and len(encrypt_key.encode("utf-8")) not in (16, 24, 32):
        raise _fail("parameters.encryptKey: the encryption key must be 128, 192 or 256 bits (16, 24 or 32 bytes) long")
    return Parameters(
        date_shift_key=_key_param(raw, "dateShiftKey"),
        date_shift_scope="global" if scope in ("file", "folder") else scope,
        date_shift_fixed_offset=fixed,
        date_shift_range=span,
        crypto_hash_key=_key_param(raw, "cryptoHashKey"),
        encrypt_key=encrypt_key,
        partial_ages=_bool(raw, "enablePartialAgesForRedact"),
        partial_dates=_bool(raw, "enablePartialDatesForRedact"),
        partial_zip_codes=_bool(raw, "enablePartialZipCodesForRedact"),
        restricted_zip3=frozenset(zips),
    )


def _number(rule_label: str, name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _fail(f"{rule_label}: '{name}' must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _fail(f"{rule_label}: '{name}' must be a number") from None


def _rule(index: int, raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise _fail(f"rule {index}: must be an object with 'path' and 'method'")
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip():
        raise _fail(f"rule {index}: 'path' is missing or empty")
    method_name = raw.get("method")
    label = f"rule {index} ({path!r})"
    if not isinstance(method_name, str) or method_name.lower() not in METHODS:
        raise _fail(f"{label}: unsupported method {method_name!r}; expected one of {sorted(METHODS.values())}")
    method = METHODS[method_name.lower()]
    label = f"rule {index} ({path!r}, {method})"
    extra = set(raw) - {"path", "method", "comment", "hipaa"}  # comment/hipaa: documentation only
    unknown = sorted(extra - _RULE_KEYS[method])
    if unknown:
        raise _fail(f"{label}: unknown setting(s) for {method}: {', '.join(unknown)}")
    settings: dict[str, Any] = {}
    if method == "substitute":
        if "replaceWith" in raw and "replacementWith" in raw:
            raise _fail(f"{label}: give either 'replaceWith' or 'replacementWith', not both")
        key = "replaceWith" if "replaceWith" in raw else "replacementWith"
        if key not in raw or raw[key] is None:
            raise _fail(f"{label}: substitute needs 'replaceWith'")
        settings["replaceWith"] = copy.deepcopy(raw[key])
    elif method == "perturb":
        if "span" not in raw:
            raise _fail(f"{label}: perturb needs 'span'")
        span = _number(label, "span", raw["span"])
        if span < 0:
            raise _fail(f"{label}: 'span' must not be negative")
        range_type = raw.get("rangeType", "fixed")
        if range_type not in ("fixed", "proportional"):
            raise _fail(f"{label}: 'rangeType' must be 'fixed' or 'proportional', not {range_type!r}")
        round_to = raw.get("roundTo")
        if round_to is not None:
            try:
                round_to = int(str(round_to))
            except ValueError:
                raise _fail(f"{label}: 'roundTo' must be an integer from 0 to 28") from None
            if not 0 <= round_to <= 28:
                raise _fail(f"{label}: 'roundTo' must be an integer from 0 to 28")
        settings.update(span=span, rangeType=range_type, roundTo=round_to)
    elif method == "generalize":
        cases = raw.get("cases")
        if not isinstance(cases, dict) or not cases:
            raise _fail(f"{label}: generalize needs a non-empty 'cases' object")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in cases.items()):
            raise _fail(f"{label}: 'cases' must map FHIRPath conditions to FHIRPath expressions (strings)")
        other = raw.get("otherValues", "redact")
        if other not in ("redact", "keep"):
            raise _fail(f"{label}: 'otherValues' must be 'redact' or 'keep', not {other!r}")
        settings.update(cases=dict(cases), otherValues=other)
    return Rule(index=index, path=path.strip(), method=method, settings=settings)


def _check_conflicts(rules: list[Rule]) -> None:
    """The same path given twice with different treatments: the second can never apply."""
    seen: dict[str, Rule] = {}
    for rule in rules:
        key = "".join(rule.path.split())
        first = seen.get(key)
        if first is None:
            seen[key] = rule
        elif (first.method, first.settings) != (rule.method, rule.settings):
            raise _fail(f"{rule.label} conflicts with {first.label}: same path, different treatment")


def parse_config(data: dict[str, Any], name: str = "custom") -> DeidConfig:
    """Check a configuration given as a parsed JSON/YAML object."""
    if not isinstance(data, dict):
        raise _fail("a de-identification configuration must be a JSON/YAML object")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _fail(f"unknown configuration key(s): {', '.join(unknown)}")
    version = data.get("fhirVersion")
    if version not in (None, "", "R4"):
        raise _fail(f"fhirVersion {version!r} is not supported (only R4, or empty)")
    policy = data.get("processingErrors", data.get("processingError", "raise"))
    if policy not in ("raise", "skip"):
        raise _fail(f"processingErrors must be 'raise' or 'skip', not {policy!r}")
    raw_rules = data.get("fhirPathRules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _fail("'fhirPathRules' is missing or empty")
    rules = [_rule(i, r) for i, r in enumerate(raw_rules)]
    _check_conflicts(rules)
    default_action = data.get("defaultAction", "keep")
    if default_action not in ("keep", "redact"):
        raise _fail(f"defaultAction must be 'keep' or 'redact', not {default_action!r}")
    unknown_elements = data.get("unknownElements", "redact")
    if unknown_elements not in ("keep", "redact"):
        raise _fail(f"unknownElements must be 'keep' or 'redact', not {unknown_elements!r}")
    labels = data.get("addSecurityLabels", True)
    if not isinstance(labels, bool):
        raise _fail("addSecurityLabels must be true or false")
    return DeidConfig(
        rules=tuple(rules), parameters=_parameters(data.get("parameters")), processing_errors=policy,
        default_action=default_action, unknown_elements=unknown_elements, add_security_labels=labels,
        name=str(data.get("name") or name),
    )


def _read_text(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise _fail(f"cannot read configuration {path.name}: {exc.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _fail(f"configuration {path.name} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"configuration {path.name} is not valid JSON: {exc}") from None


def load_config(source: str | Path | dict[str, Any]) -> DeidConfig:
    """A user configuration: a parsed object, or a .json/.yaml/.yml file."""
    if isinstance(source, dict):
        return parse_config(source)
    path = Path(source)
    return parse_config(_read_text(path), name=path.stem)


def load_profile(name: str) -> DeidConfig:
    """A configuration shipped with fhirlake: 'safe-harbor' or 'limited-data-set'."""
    if name not in PROFILES:
        raise _fail(f"unknown de-identification profile {name!r}; shipped profiles: {', '.join(PROFILES)}")
    text = resources.files("fhirlake.deid").joinpath("profiles", f"{name}.json").read_text("utf-8")
    return parse_config(json.loads(text), name=name)
