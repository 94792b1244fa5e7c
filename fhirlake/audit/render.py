"""An ``audit_event`` row rendered as a FHIR R4 AuditEvent (query parameter names only, no values)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fhirlake.audit.record import OUTCOME_UNKNOWN, UNKNOWN_OUTCOME_DESC

RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
CLIENT_ID_SYSTEM = "urn:fhirlake:client-id"
USER_ID_SYSTEM = "urn:fhirlake:user-id"
INTERACTION_SYSTEM = "urn:fhirlake:interaction"

_RESTFUL = frozenset(
    "read vread update patch delete history history-instance history-type history-system create search"
    " search-type search-system capabilities transaction batch operation".split()
)
_RESTFUL_ALIASES = {"search-compartment": "search"}
_REFERENCE = re.compile(r"^(?:https?://\S+/)?[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def outcome_code(status: int) -> str:
    """AuditEvent.outcome from the HTTP status: 0 success, 4 minor failure, 8 serious failure."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _type_and_subtype(interaction: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    if interaction == "login":
        return (
            {"system": DICOM, "code": "110114", "display": "User Authentication"},
            [{"system": DICOM, "code": "110122", "display": "Login"}],
        )
    code = _RESTFUL_ALIASES.get(interaction, interaction)
    subtype = [{"system": RESTFUL_INTERACTION, "code": code if code in _RESTFUL else "operation"}]
    if code not in _RESTFUL or code != interaction:
        subtype.append({"system": INTERACTION_SYSTEM, "code": interaction})
    return {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}, subtype


def _who(value: str, system: str) -> dict[str, Any]:
    if system == USER_ID_SYSTEM and _REFERENCE.match(value):
        return {"reference": value}
    return {"identifier": {"system": system, "value": value}, "display": value}


def _agents(client_id: str | None, user_id: str | None, source_ip: str | None) -> list[dict[str, Any]]:
    network = {"address": source_ip, "type": "2"} if source_ip else None
    agents: list[dict[str, Any]] = []
    if user_id:
        agents.append({"who": _who(user_id, USER_ID_SYSTEM), "requestor": True})
    if client_id:
        agents.append({"who": _who(client_id, CLIENT_ID_SYSTEM), "requestor": not user_id})
    if not agents:
        agents.append({"who": {"display": "anonymous"}, "requestor": True})
    if network:
        agents[0]["network"] = network
    return agents


def audit_event_resource(row: Any) -> dict[str, Any]:
    """Render a row of ``audit_event`` (a Row or a dict) as an R4 AuditEvent."""
    interaction = _get(row, "interaction")
    event_type, subtype = _type_and_subtype(interaction)
    status = int(_get(row, "outcome"))
    resource_type = _get(row, "resource_type")
    entities: list[dict[str, Any]] = []
    for resource_id in (_get(row, "resource_ids") or "").split():
        entities.append(
            {
                "what": {"reference": f"{resource_type}/{resource_id}" if resource_type else resource_id},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    params = _get(row, "query_params")
    if params or (resource_type and not entities):
        entity: dict[str, Any] = {"role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"}}
        if resource_type:
            entity["type"] = {"system": RESOURCE_TYPES, "code": resource_type}
        if params:
            entity["detail"] = [{"type": "query-parameter-names", "valueString": ",".join(params.split())}]
        entities.append(entity)
    patient_id = _get(row, "patient_id")
    if patient_id:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient_id}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(_get(row, "id")),
        "type": event_type,
        "subtype": subtype,
        "action": _get(row, "action"),
        "recorded": _instant(_get(row, "recorded")),
        "agent": _agents(_get(row, "client_id"), _get(row, "user_id"), _get(row, "source_ip")),
        "source": {
            "observer": {"display": "fhirlake"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if status == OUTCOME_UNKNOWN:
        # the access is on record but its response's result is not (the process stopped in between):
        # say so rather than claim a success or a failure
        event["outcomeDesc"] = UNKNOWN_OUTCOME_DESC
    else:
        event["outcome"] = outcome_code(status)
        event["outcomeDesc"] = f"{status} {_get(row, 'outcome_desc') or ''}".strip()
    if entities:
        event["entity"] = entities
    return event
