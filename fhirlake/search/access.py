"""Authorization constraints that the search planner applies inside its SQL (issue 7 fills them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccessConstraint:
    """What a request may see.

    patient_id: restrict every resource (matches, _include/_revinclude targets, chain targets,
      _has sources, $everything) to that patient's compartment. Types outside the Patient
      compartment are invisible unless listed in ``shared_types`` (e.g. Medication, Practitioner).
    filters: resource type -> alternatives (OR) of search-parameter lists (AND) that a resource
      of that type must also match, e.g. {"Observation": [[("category", "laboratory")]]}.
    """

    patient_id: str | None = None
    filters: Mapping[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    shared_types: frozenset[str] = frozenset()
