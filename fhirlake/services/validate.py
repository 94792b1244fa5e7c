"""The $validate operation."""

from __future__ import annotations

from fhirlake.fhir.outcome import FhirError, Issue, operation_outcome
from fhirlake.services.resource_body import check_type, validation_issues


def _unwrap(body: object) -> tuple[object, str | None]:
    """$validate accepts a resource or Parameters(resource=..., mode=...)."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource, mode = None, None
        for p in body.get("parameter") or []:
            if p.get("name") == "resource":
                resource = p.get("resource")
            elif p.get("name") == "mode":
                mode = p.get("valueCode") or p.get("valueString")
        if resource is None and mode != "delete":
            raise FhirError(400, "Parameters for $validate need a 'resource' parameter", code="required")
        return resource, mode
    return body, None


def validate_operation(res_type: str, res_id: str | None, body: object) -> dict:
    check_type(res_type)
    resource, mode = _unwrap(body)
    if mode == "delete":
        return operation_outcome([Issue("information", "informational", "Deletion is allowed")])
    if not isinstance(resource, dict):
        raise FhirError(400, "$validate needs a resource", code="structure")
    issues: list[Issue] = []
    if resource.get("resourceType") != res_type:
        issues.append(Issue("error", "invalid", f"resourceType '{resource.get('resourceType')}' is not {res_type}",
                            ["resourceType"]))
    if res_id is not None and resource.get("id") not in (None, res_id):
        issues.append(Issue("error", "invalid", f"id '{resource.get('id')}' is not {res_id}", [f"{res_type}.id"]))
    if not issues:
        issues = validation_issues(resource, res_type)
    if not any(i.severity in ("error", "fatal") for i in issues):
        issues.append(Issue("information", "informational", "Validation successful: no errors"))
    return operation_outcome(issues)
