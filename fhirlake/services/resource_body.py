"""Checks every incoming resource body goes through before it is stored."""

from __future__ import annotations

import re

from fhirlake.fhir import structure
from fhirlake.fhir.outcome import FhirError, Issue

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_no_nul(raw: bytes, value: object) -> None:
    """Refuse JSON whose strings carry NUL (``\\u0000``): FHIR strings should hold no control
    characters, and PostgreSQL text cannot store this one. ``raw`` is searched first (fast); the
    parsed value only when it may hold one, to name where."""
    if b"\\u0000" not in raw:
        return
    path = _nul_path(value, "")
    if path is not None:
        raise FhirError(400, "A string contains the NUL character (\\u0000)", code="value",
                        expression=[path.lstrip(".") or "$"])


def _nul_path(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"{path}.{key}"
            found = _nul_path(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def check_type(res_type: str) -> None:
    if not structure.is_resource_type(res_type):
        raise FhirError(404, f"Unknown resource type '{res_type}'", code="not-supported")


def check_id(res_id: str) -> None:
    if not _ID_RE.match(res_id):
        raise FhirError(400, f"'{res_id}' is not a valid FHIR id", code="value", expression=["id"])


def check_body(body: object, res_type: str, res_id: str | None = None, *, for_update: bool = False) -> dict:
    """Validate a resource for create/update and return it (ids checked against the URL)."""
    if not isinstance(body, dict):
        raise FhirError(400, "The request body must be a FHIR resource (a JSON object)", code="structure")
    body_type = body.get("resourceType")
    if body_type != res_type:
        raise FhirError(
            400,
            f"resourceType '{body_type}' does not match the URL's type '{res_type}'",
            code="invalid",
            expression=["resourceType"],
        )
    if for_update:
        body_id = body.get("id")
        if body_id is None:
            raise FhirError(400, "An update must carry the resource id in the body", code="required", expression=[f"{res_type}.id"])
        if body_id != res_id:
            raise FhirError(400, f"Body id '{body_id}' does not match the URL id '{res_id}'", code="invalid", expression=[f"{res_type}.id"])
    validate_or_raise(body, res_type)
    return body


def validate_or_raise(body: dict, res_type: str | None = None) -> None:
    issues = validation_issues(body, res_type)
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        raise FhirError(422, errors[0].diagnostics, issues=issues)


def validation_issues(body: dict, res_type: str | None = None) -> list[Issue]:
    from fhirlake.fhir.validation import validate_resource

    return [
        Issue(i.severity, i.code, i.message, [i.expression] if i.expression else [])
        for i in validate_resource(body, res_type)
    ]
