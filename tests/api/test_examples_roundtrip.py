"""The 706 official R4 examples round-trip through create/read, in JSON and in XML."""

from __future__ import annotations

import tarfile

import httpx
import orjson
import pytest
from lxml import etree

from fhirlake.fhir.xml import resource_to_xml, xml_to_resource
from tests.conftest import SHARED

# Questionnaire-qs1 is invalid in the official set itself: 32 nested items lack the required linkId.
KNOWN_INVALID = {"Questionnaire-qs1.json"}
# AuditEvent is written by the server only (issue 7): the API refuses it with 405 by design.
SERVER_WRITTEN = {"AuditEvent"}


def _examples() -> list[tuple[str, dict]]:
    out = []
    with tarfile.open(SHARED / "fhir-r4" / "examples.tar.gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".json"):
                name = member.name.rsplit("/", 1)[-1]
                out.append((name, orjson.loads(tar.extractfile(member).read())))  # type: ignore[union-attr]
    return sorted(out)


EXAMPLES = _examples()


def _strip_meta(resource: dict) -> dict:
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def _canonical_divs(node: object) -> object:
    # XML cannot keep JSON's lexical choices inside a narrative (&quot; vs ", <br/> vs <br />):
    # narratives compare by their canonical XML form.
    if isinstance(node, dict):
        return {k: (etree.tostring(etree.fromstring(v.encode()), method="c14n") if k == "div" and isinstance(v, str)
                    else _canonical_divs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_canonical_divs(v) for v in node]
    return node


def _same(a: object, b: object) -> bool:
    # decimals compare by value (1.50 and 1.5 are the same number once parsed)
    return _canonical_divs(orjson.loads(orjson.dumps(a))) == _canonical_divs(orjson.loads(orjson.dumps(b)))


def test_example_count() -> None:
    assert len(EXAMPLES) == 706


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_examples_roundtrip(client: httpx.Client, fmt: str) -> None:
    failures = []
    for name, example in EXAMPLES:
        res_type, res_id = example["resourceType"], example.get("id") or "noid"
        if fmt == "json":
            body = orjson.dumps(example)
            headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        else:
            body = resource_to_xml(example)
            headers = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}
        r = client.put(f"/{res_type}/{res_id}", content=body, headers=headers)
        if res_type in SERVER_WRITTEN:
            assert r.status_code == 405, name
            continue
        if name in KNOWN_INVALID:
            assert r.status_code == 422, name
            continue
        if r.status_code not in (200, 201):
            failures.append((name, r.status_code, r.text[:200]))
            continue
        read = client.get(f"/{res_type}/{res_id}", headers={"Accept": headers["Accept"]})
        got = orjson.loads(read.content) if fmt == "json" else xml_to_resource(read.content)
        if not _same(_strip_meta(got), _strip_meta(example)):
            failures.append((name, "differs", ""))
    assert failures == []
