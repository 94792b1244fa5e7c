"""AccessContext: what one request may do, decided from its token's scopes and launch context.

This is the single authorization decision point (DESIGN.md, "Security"): services call ``require``
before an interaction, hand ``access_constraint`` to the store so that patient and query
restrictions are applied inside SQL, and call ``can_write_resource`` before a write.

Interactions and the SMART v2 permission letters they need:
- ``c``: create; ``u``: update, patch; ``d``: delete;
- ``r``: read, vread, history (of one instance: ``history``/``history-instance``);
- ``s``: search, search-type, search-system, search-compartment, history-type, history-system;
- ``r`` and ``s``: everything ($everything), viewdefinition-run, and export, which also needs a
  ``system/`` or ``user/`` scope (bulk export is never granted by patient scopes);
- ``audit-read``: a ``system/`` or ``user/`` scope that names ``AuditEvent`` (a wildcard does not
  cover it) with ``r`` and ``s``;
- ``deid-export``: the scope ``fhirlake/deid-export``.
Patient scopes count only when the token carries a patient context (the ``patient`` claim).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhirlake.auth.compartment import all_resource_types, compartment_types, in_patient_compartment
from fhirlake.auth.errors import ForbiddenError
from fhirlake.auth.resource_match import matches_query
from fhirlake.auth.scopes import Scope

if TYPE_CHECKING:
    from fhirlake.search.access import AccessConstraint

DEID_EXPORT_SCOPE = "fhirlake/deid-export"

INTERACTION_PERMISSIONS: dict[str, str] = {
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "read": "r",
    "vread": "r",
    "history": "r",
    "history-instance": "r",
    "search": "s",
    "search-type": "s",
    "search-system": "s",
    "search-compartment": "s",
    "history-type": "s",
    "history-system": "s",
    "everything": "rs",
    "viewdefinition-run": "rs",
    "export": "rs",
    "audit-read": "rs",
}
_SYSTEM_LEVEL_ONLY = frozenset({"export", "audit-read"})


@dataclass(frozen=True)
class AccessContext:
    """The rights of one authenticated request. Immutable; cheap to create per request."""

    scopes: tuple[Scope, ...] = ()
    client_id: str | None = None
    user_id: str | None = None
    patient_id: str | None = None
    is_unrestricted: bool = False
    base_url: str | None = None
    _resource_scopes: tuple[Scope, ...] = field(default=(), init=False, repr=False, compare=False)
    _constraints: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Patient scopes without a patient in context cannot be honoured: they grant nothing.
        usable = tuple(
            s for s in self.scopes if s.is_resource_scope and (s.context != "patient" or self.patient_id)
        )
        object.__setattr__(self, "_resource_scopes", usable)

    @classmethod
    def unrestricted(cls) -> AccessContext:
        """Auth disabled (loopback development mode): everything is allowed."""
        return cls(is_unrestricted=True)

    @property
    def scope_names(self) -> tuple[str, ...]:
        return tuple(s.raw for s in self.scopes)

    def _applicable(self, letter: str, resource_type: str, system_level_only: bool = False) -> list[Scope]:
        return [
            s
            for s in self._resource_scopes
            if s.allows(letter, resource_type) and not (system_level_only and s.context == "patient")
        ]

    def allows(self, interaction: str, resource_type: str) -> bool:
        if self.is_unrestricted:
            return True
        if interaction == "deid-export":
            return any(s.raw == DEID_EXPORT_SCOPE for s in self.scopes)
        letters = INTERACTION_PERMISSIONS.get(interaction)
        if letters is None:
            return False  # unknown interactions are refused, never allowed by default
        if interaction == "audit-read":
            resource_type = "AuditEvent"
        system_only = interaction in _SYSTEM_LEVEL_ONLY
        return all(self._applicable(letter, resource_type, system_only) for letter in letters)

    def require(self, interaction: str, resource_type: str) -> None:
        """Raise ForbiddenError unless the token's scopes allow ``interaction`` on ``resource_type``."""
        if not self.allows(interaction, resource_type):
            raise ForbiddenError(f"the access token's scopes do not permit {interaction} on {resource_type}")

    def permitted_types(self, interaction: str, candidates: Iterable[str]) -> list[str]:
        """The subset of ``candidates`` that ``interaction`` is allowed on (system-level search, export)."""
        return [t for t in candidates if self.allows(interaction, t)]

    def access_constraint(self, resource_type: str, interaction: str = "search") -> AccessConstraint | None:
        """The restrictions the store applies inside its queries for this request, or None.

        ``resource_type`` is the type asked for: ForbiddenError when no scope allows the interaction
        on it. The constraint covers every type the query may touch (matches, ``_include`` and
        ``_revinclude`` targets, chain and ``_has`` hops, ``$everything``):
        - ``patient_id``: set when the token reads through patient scopes; every resource must then
          be in that patient's compartment, except ``shared_types``: types outside the compartment
          that a scope names explicitly (``patient/Medication.rs``) or that a system/user scope grants
          (a ``patient/*`` wildcard alone does not make Practitioner or Organization visible);
        - ``filters``: per type, the alternatives (OR) of query-restricted scopes (``?category=...``);
          an empty list hides a type no scope allows reading.
        Scopes for a type combine with OR; a system/user scope without a query lifts that type's
        filters. A type reachable both through patient scopes and system/user query-restricted scopes
        cannot be expressed as one constraint: the patient scopes win (narrower, never a leak).
        """
        from fhirlake.search.access import AccessConstraint

        if self.is_unrestricted:
            return None
        letter = "r" if INTERACTION_PERMISSIONS.get(interaction, "s") == "r" else "s"
        if not self._applicable(letter, resource_type):
            raise ForbiddenError(f"the access token's scopes do not permit {interaction} on {resource_type}")
        cache = self._constraints
        if letter not in cache:
            cache[letter] = self._build_constraint(letter, AccessConstraint)
        return cache[letter]

    def _build_constraint(self, letter: str, constraint_type: Any) -> AccessConstraint | None:
        members = compartment_types()
        uses_patient_scopes = any(
            s.context == "patient" and letter in s.permissions for s in self._resource_scopes
        )
        filters: dict[str, list[list[tuple[str, str]]]] = {}
        shared: set[str] = set()
        for rtype in all_resource_types():
            applicable = self._applicable(letter, rtype)
            if not applicable:
                filters[rtype] = []  # no alternative can match: the type is hidden
                continue
            broad = [s for s in applicable if s.context != "patient"]
            patient_scopes = [s for s in applicable if s.context == "patient"]
            if rtype not in members and (broad or any(s.resource_type == rtype for s in patient_scopes)):
                shared.add(rtype)
            if any(not s.query for s in broad):
                continue
            chosen = patient_scopes or broad
            if all(s.query for s in chosen):
                filters[rtype] = [list(s.query) for s in chosen]
        if not uses_patient_scopes and not filters:
            return None
        return constraint_type(
            patient_id=self.patient_id if uses_patient_scopes else None,
            filters=filters,
            shared_types=frozenset(shared) if uses_patient_scopes else frozenset(),
        )

    def can_write_resource(
        self, resource_type: str, resource: dict[str, Any], interaction: str = "update"
    ) -> bool:
        """May this token write ``resource`` (the new content) with ``interaction`` (create/update/patch/delete)?

        Patient scopes need the resource inside the patient's compartment; query-restricted scopes
        need the resource to match the query. For an update or delete, callers must also check the
        stored version (it must be readable through ``access_constraint``) so that nothing can be
        moved out of, or into, a compartment the token does not own.
        """
        if self.is_unrestricted:
            return True
        if resource.get("resourceType") != resource_type:
            return False
        letter = INTERACTION_PERMISSIONS.get(interaction)
        if letter not in {"c", "u", "d"}:
            return False
        for scope in self._applicable(letter, resource_type):
            if scope.context == "patient" and not in_patient_compartment(
                resource, self.patient_id or "", self.base_url
            ):
                continue
            if scope.query and not matches_query(resource, scope.query):
                continue
            return True
        return False

    def require_write(
        self, resource_type: str, resource: dict[str, Any], interaction: str = "update"
    ) -> None:
        if not self.can_write_resource(resource_type, resource, interaction):
            raise ForbiddenError(
                f"the access token's scopes do not permit this {interaction} of {resource_type}"
            )
