"""The CapabilityStatement, generated from what this server really registers."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from fhirlake import __version__
from fhirlake.fhir import structure

TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                     "search-type"]
# Resources the API serves read-only (their rows are written by the server itself).
READ_ONLY_TYPES = {"AuditEvent"}


def _search_params(res_type: str) -> list[dict]:
    try:
        from fhirlake.search.service import supported_params
    except ImportError:
        return []
    return supported_params(res_type)


@lru_cache(maxsize=4)
def _resources() -> tuple[dict, ...]:
    out = []
    for res_type in structure.resource_types():
        interactions = TYPE_INTERACTIONS if res_type not in READ_ONLY_TYPES else ["read", "search-type"]
        entry: dict = {
            "type": res_type,
            "interaction": [{"code": code} for code in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "multiple",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": ["*"],
            "searchRevInclude": ["*"],
            "searchParam": _search_params(res_type),
        }
        ops = [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]
        if res_type == "Patient":
            ops += [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
            ]
        if res_type == "Group":
            ops.append({"name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"})
        entry["operation"] = ops
        out.append(entry)
    return tuple(out)


def capability_statement(base: str, extra_operations: list[dict] | None = None,
                         security: dict | None = None) -> dict:
    rest: dict = {
        "mode": "server",
        "resource": list(_resources()),
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"},
                        {"code": "history-system"}],
        "operation": extra_operations or [],
    }
    if security:
        rest["security"] = security
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "publisher": "fhirlake",
        "kind": "instance",
        "software": {"name": "fhirlake", "version": __version__},
        "implementation": {"description": "fhirlake FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [rest],
    }
