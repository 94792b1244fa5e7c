"""Compile the R4 StructureDefinitions into the compact table that `structure.py` loads.

Run `python -m fhirlake.fhir.build_structure_cache` after changing the definitions; the output
(`fhirlake/resources/structure-r4.json.gz`) is committed so start-up never parses the 3.6 MB bundles.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"
DEFINITION_FILES = ("profiles-types.json.gz", "profiles-resources.json.gz")
CACHE_FILE = RESOURCES_DIR / "structure-r4.json.gz"
CACHE_FORMAT = 1

_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
_SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."


def _load_definitions() -> list[dict[str, Any]]:
    definitions = []
    for name in DEFINITION_FILES:
        bundle = orjson.loads(gzip.decompress((RESOURCES_DIR / name).read_bytes()))
        for entry in bundle["entry"]:
            res = entry["resource"]
            # Constraint profiles (SimpleQuantity, MoneyQuantity) and logical models are not wire types.
            if res["resourceType"] != "StructureDefinition" or res.get("derivation") == "constraint":
                continue
            if res["kind"] == "logical":
                continue
            definitions.append(res)
    return definitions


def _type_code(type_entry: dict[str, Any], path: str) -> str:
    code = type_entry["code"]
    if not code.startswith(_SYSTEM_PREFIX):
        return code
    for ext in type_entry.get("extension", ()):
        if ext["url"] == _FHIR_TYPE_EXT:
            return ext.get("valueUrl") or ext.get("valueUri")
    # R4 leaves Resource.id as a bare System.String; the spec defines it as `id`.
    return "id" if path.endswith(".id") else "string"


def _primitive_regex(sd: dict[str, Any]) -> str | None:
    for el in sd["snapshot"]["element"]:
        if el["path"] == f"{sd['type']}.value":
            for ext in el["type"][0].get("extension", ()):
                if ext["url"] == _REGEX_EXT:
                    return ext["valueString"]
    return None


def build() -> dict[str, Any]:
    """Return the compact model: type rows and element rows in definition order."""
    definitions = _load_definitions()
    types: list[list[Any]] = []
    elements: list[list[Any]] = []
    by_path: dict[str, dict[str, Any]] = {}
    for sd in definitions:
        base = sd.get("baseDefinition")
        regex = _primitive_regex(sd) if sd["kind"] == "primitive-type" else None
        types.append([sd["type"], sd["kind"], base.rsplit("/", 1)[-1] if base else None,
                      bool(sd.get("abstract")), regex])
        for el in sd["snapshot"]["element"]:
            by_path[el["path"]] = el
    for sd in definitions:
        root = sd["type"]
        primitive = sd["kind"] == "primitive-type"
        for el in sd["snapshot"]["element"][1:]:
            path: str = el["path"]
            parent, _, last = path.rpartition(".")
            if primitive and path == f"{root}.value":
                continue  # the primitive's own value lives in TypeDef.regex, not as a child
            is_choice = last.endswith("[x]")
            name = last[:-3] if is_choice else last
            ref = el.get("contentReference")
            if ref:
                target = by_path[ref[1:]]
                codes = [t["code"] for t in target["type"]]
            elif el.get("base", {}).get("path") == "Resource.id":
                codes = ["id"]  # R4 snapshots say System.String; the spec defines Resource.id as `id`
            else:
                codes = [_type_code(t, path) for t in el.get("type", ())]
            targets = sorted({p.rsplit("/", 1)[-1] for t in el.get("type", ()) for p in t.get("targetProfile", ())})
            binding = el.get("binding") or {}
            representation = el.get("representation") or ()
            elements.append([
                parent, path, name, codes, int(el["min"]),
                None if el["max"] == "*" else int(el["max"]),
                is_choice, ref,
                bool(el.get("isSummary")), bool(el.get("isModifier")),
                "xmlAttr" in representation,
                targets,
                binding.get("strength"),
                binding.get("valueSet"),
            ])
    return {"format": CACHE_FORMAT, "types": types, "elements": elements}


def main() -> None:
    data = orjson.dumps(build())
    CACHE_FILE.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"wrote {CACHE_FILE} ({CACHE_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
