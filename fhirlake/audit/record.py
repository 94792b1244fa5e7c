"""AuditRecord: one audited interaction, as stored in ``audit_event``.

Never put tokens, secrets, resource contents or query parameter VALUES here (values are PHI):
``query_params`` keeps parameter names only, and is sanitized again on the way in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# FHIR AuditEvent.action: C create, R read/view/search, U update, D delete, E execute
_ACTIONS = {
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "login": "E",
    "operation": "E",
    "transaction": "E",
    "batch": "E",
    "deid-export": "E",
}
_PARAM_NAME = re.compile(r"[^A-Za-z0-9_:.\-$]")
_MAX_DESC = 500

# ``outcome`` of an access recorded when its request started (two-phase audit): the access is
# durable, its result is filled in when the response is sent. 0 is no HTTP status, so a row that
# keeps it (the process died in between) reads as "outcome unknown", never as a success.
OUTCOME_UNKNOWN = 0
UNKNOWN_OUTCOME_DESC = "outcome unknown: the access was recorded, the result of its response was not"


def clean_desc(text: str | None) -> str | None:
    """An outcome description fit for the table: bounded, without NUL (PostgreSQL text refuses it)."""
    return text[:_MAX_DESC].replace("\x00", "") if text else None


def action_for(interaction: str) -> str:
    return _ACTIONS.get(interaction, "R")


def clean_param_names(names: Iterable[str]) -> list[str]:
    """Parameter names only: anything after '=' is cut, odd characters dropped, duplicates removed."""
    seen: dict[str, None] = {}
    for name in names:
        name = _PARAM_NAME.sub("", str(name).split("=", 1)[0])[:64]
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _who(value: str | None) -> str | None:
    """An identity claim fit for the table: bounded (it may be unverified), without NUL."""
    return value[:255].replace("\x00", "") if value else None


def access_columns(context: Any, query_params: Iterable[str], source_ip: str | None) -> dict[str, Any]:
    """Who asked and how, for an audit row whose other columns a statement fills in itself."""
    return {
        "client_id": _who(getattr(context, "client_id", None)),
        "user_id": _who(getattr(context, "user_id", None)),
        "patient_id": _who(getattr(context, "patient_id", None)),
        "query_params": " ".join(clean_param_names(query_params)) or None,
        "source_ip": source_ip,
    }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    interaction: str  # read, vread, search-type, create, login, export...
    outcome: int  # the HTTP status answered
    resource_type: str | None = None
    resource_ids: tuple[str, ...] = ()
    query_params: tuple[str, ...] = ()  # NAMES only
    client_id: str | None = None
    user_id: str | None = None
    patient_id: str | None = None
    source_ip: str | None = None
    outcome_desc: str | None = None
    action: str | None = None  # derived from the interaction when None
    recorded: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def for_request(
        cls,
        context: Any,
        interaction: str,
        outcome: int,
        resource_type: str | None = None,
        resource_ids: Iterable[str] = (),
        query_params: Iterable[str] = (),
        source_ip: str | None = None,
        outcome_desc: str | None = None,
    ) -> AuditRecord:
        """From an AccessContext (or None for an unauthenticated request)."""
        return cls(
            interaction=interaction,
            outcome=outcome,
            resource_type=resource_type,
            resource_ids=tuple(resource_ids),
            query_params=tuple(query_params),
            client_id=getattr(context, "client_id", None),
            user_id=getattr(context, "user_id", None),
            patient_id=getattr(context, "patient_id", None),
            source_ip=source_ip,
            outcome_desc=outcome_desc,
        )

    def row(self) -> dict[str, Any]:
        row = self._raw_row()
        # PostgreSQL text cannot hold NUL; drop it rather than lose the record
        return {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in row.items()}

    def _raw_row(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "client_id": _who(self.client_id),  # may be an unverified claim
            "user_id": _who(self.user_id),
            "patient_id": _who(self.patient_id),
            "action": self.action or action_for(self.interaction),
            "interaction": self.interaction,
            "resource_type": self.resource_type,
            "resource_ids": " ".join(self.resource_ids) or None,
            "query_params": " ".join(clean_param_names(self.query_params)) or None,
            "source_ip": self.source_ip,
            "outcome": int(self.outcome),
            "outcome_desc": clean_desc(self.outcome_desc),
        }
