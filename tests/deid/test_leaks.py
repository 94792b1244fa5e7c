"""Leak scanner: Safe Harbor over every shared Synthea set; no identifying value found in the
input may appear anywhere in the output text."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import orjson
import pytest

from fhirlake.deid import Deidentifier, load_profile
from tests.deid.conftest import SYNTHEA

SETS = sorted(p for p in SYNTHEA.iterdir() if p.is_dir())
ID_TYPES = {"SS", "MR", "DL", "PPN", "MB", "AN"}  # SSN, MRN, driver's licence, passport, member, account
ID_SYSTEMS = ("us-ssn", "driver", "passport")


def _files(folder: Path) -> list[Path]:
    # log.ndjson.gz of the bulk set is the exporting client's log, not FHIR
    return sorted(f for f in folder.glob("*.ndjson.gz") if f.name != "log.ndjson.gz")


def _identifying_values(resource: dict, found: set[str]) -> None:
    """Names, address lines, cities, phones, e-mails, SSN/MRN/licence numbers, birth dates."""
    def text(value):
        if isinstance(value, str) and len(value.strip()) >= 3:
            found.add(value.strip())

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if "family" in node or "given" in node:  # HumanName
            text(node.get("family"))
            for g in node.get("given", []):
                text(g)
        if "line" in node or "city" in node:  # Address
            for line in node.get("line", []):
                text(line)
            text(node.get("city"))
        if node.get("system") in ("phone", "email", "fax") and "value" in node:
            text(node["value"])
        codes = {c.get("code") for c in node.get("type", {}).get("coding", [])} if isinstance(node.get("type"), dict) else set()
        if "value" in node and (codes & ID_TYPES or any(s in str(node.get("system", "")) for s in ID_SYSTEMS)):
            text(node["value"])
        for value in node.values():
            walk(value)

    rtype = resource.get("resourceType")
    if rtype in ("Patient", "Practitioner", "RelatedPerson", "Person"):
        walk({k: v for k, v in resource.items() if k not in ("meta",)})
        if rtype == "Patient" and isinstance(resource.get("birthDate"), str):
            found.add(resource["birthDate"])


@pytest.mark.parametrize("folder", SETS, ids=[p.name for p in SETS])
def test_safe_harbor_leaves_no_identifier(folder, keys):
    engine = Deidentifier(load_profile("safe-harbor"), keys)
    secrets: set[str] = set()
    output: list[bytes] = []
    errors: list = []
    count = 0
    for f in _files(folder):
        lines = gzip.decompress(f.read_bytes()).splitlines()
        for line in lines:
            if line.strip():
                _identifying_values(orjson.loads(line), secrets)
                count += 1
        output += engine.deidentify_ndjson(lines, on_error=lambda n, e: errors.append((n, e)))
    assert errors == []
    assert len(output) == count > 1000
    assert len(secrets) > 100  # the scanner did find what to look for
    assert _leaks(secrets, output) == []


_TOKEN = re.compile(r"\w+")


def _leaks(secrets: set[str], output: list[bytes]) -> list[str]:
    """Secrets that occur inside any string of the output (keys included), as whole words.

    Indexed by each secret's first word so the scan is linear in the output."""
    by_first: dict[str, list[str]] = {}
    for s in secrets:
        words = _TOKEN.findall(s)
        if words:
            by_first.setdefault(words[0].lower(), []).append(s)
    strings: set[str] = set()

    def collect(node):
        if isinstance(node, dict):
            for k, v in node.items():
                strings.add(k)
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
        elif isinstance(node, str):
            strings.add(node)

    for line in output:
        collect(orjson.loads(line))
    leaked = set()
    for text in strings:
        lowered = text.lower()
        for word in set(_TOKEN.findall(lowered)):
            for s in by_first.get(word, ()):
                if re.search(r"(?<!\w)" + re.escape(s.lower()) + r"(?!\w)", lowered):
                    leaked.add(s)
    return sorted(leaked)


def test_scanner_finds_leaks_when_names_are_kept(keys):
    """Negative control: a configuration that forgets names must be caught by the scanner."""
    from fhirlake.deid import load_config

    weak = load_config({"fhirPathRules": [{"path": "Resource.id", "method": "cryptoHash"},
                                          {"path": "nodesByType('Address')", "method": "redact"}]})
    engine = Deidentifier(weak, keys)
    f = SYNTHEA / "msft-anonymization-samples-r4" / "Patient.ndjson.gz"
    lines = gzip.decompress(f.read_bytes()).splitlines()
    secrets: set[str] = set()
    for line in lines:
        _identifying_values(orjson.loads(line), secrets)
    leaked = _leaks(secrets, list(engine.deidentify_ndjson(lines)))
    names = {n for line in lines for h in orjson.loads(line)["name"] for n in [h.get("family")] if n}
    assert names and names <= set(leaked)
