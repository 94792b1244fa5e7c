"""Authorization checks that services apply for by-id reads and for writes.

Searches get the same decision through ``AccessConstraint`` inside their SQL; by-id reads and
writes ask the same planner whether the resource is visible, so there is one source of truth.
``access`` is an ``fhirlake.auth.AccessContext`` or None (authorization off).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from fhirlake.fhir.outcome import FhirError


def is_restricted(access: Any) -> bool:
    return access is not None and not getattr(access, "is_unrestricted", False)


def forbidden(message: str) -> FhirError:
    return FhirError(403, message, code="forbidden")


def require(access: Any, interaction: str, res_type: str) -> None:
    if not is_restricted(access):
        return
    from fhirlake.auth import ForbiddenError

    try:
        access.require(interaction, res_type)
    except ForbiddenError as exc:
        raise forbidden(exc.description) from exc


def visible(conn: Connection, access: Any, res_type: str, res_id: str, interaction: str = "read") -> bool:
    """Is the current version of res_type/res_id inside what ``access`` may see?"""
    if not is_restricted(access):
        return True
    from fhirlake.auth import ForbiddenError
    from fhirlake.search.service import find_matches

    try:
        constraint = access.access_constraint(res_type, interaction)
    except ForbiddenError as exc:
        raise forbidden(exc.description) from exc
    if constraint is None:
        return True
    if constraint.patient_id is None and res_type not in constraint.filters:
        return True  # nothing restricts this type: no query needed (the common system/user case)
    return bool(find_matches(conn, res_type, f"_id={res_id}", access=constraint))


def check_read(conn: Connection, access: Any, res_type: str, res_id: str, interaction: str = "read") -> None:
    require(access, interaction, res_type)
    if not visible(conn, access, res_type, res_id, interaction):
        # 404, not 403: a restricted token must not learn that the resource exists.
        raise FhirError(404, f"{res_type}/{res_id} is not known", code="not-found")


def check_write(conn: Connection, access: Any, res_type: str, res_id: str | None, new_resource: dict | None,
                interaction: str, *, exists: bool) -> None:
    """The token may write: the stored version (if any) is visible and the new content stays in bounds."""
    if not is_restricted(access):
        return
    require(access, interaction, res_type)
    if exists and res_id is not None and not visible(conn, access, res_type, res_id, "read"):
        raise FhirError(404, f"{res_type}/{res_id} is not known", code="not-found")
    if new_resource is not None and not access.can_write_resource(res_type, new_resource, interaction):
        raise forbidden(f"this token may not write this {res_type}: it would fall outside the token's compartment "
                        "or scope restrictions")
