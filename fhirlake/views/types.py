"""FHIR primitive types of view columns and their Arrow types (see the package docstring for the rules)."""

from __future__ import annotations

import pyarrow as pa

FHIR_TYPE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"

STRING_TYPES = frozenset(
    {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "base64Binary", "xhtml"}
)
TEMPORAL_TYPES = frozenset({"date", "dateTime", "instant", "time"})
INT32_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
PRIMITIVE_TYPES = STRING_TYPES | TEMPORAL_TYPES | INT32_TYPES | {"boolean", "decimal", "integer64"}

# Field metadata keys carried on every Arrow field of a view's schema.
META_FHIR_TYPE = b"fhir_type"
META_DESCRIPTION = b"description"


def normalize_type(declared: str) -> str:
    """'http://hl7.org/fhir/StructureDefinition/dateTime' -> 'dateTime'; relative names stay as they are."""
    if declared.startswith(FHIR_TYPE_PREFIX):
        return declared[len(FHIR_TYPE_PREFIX) :]
    return declared


def arrow_scalar_type(fhir_type: str) -> pa.DataType:
    if fhir_type == "boolean":
        return pa.bool_()
    if fhir_type in INT32_TYPES:
        return pa.int32()
    if fhir_type == "integer64":
        return pa.int64()
    # string-like, decimal (exact text) and date/time types (ISO text as given) are all strings.
    return pa.string()


def arrow_type(fhir_type: str, collection: bool) -> pa.DataType:
    scalar = arrow_scalar_type(fhir_type)
    return pa.list_(scalar) if collection else scalar
