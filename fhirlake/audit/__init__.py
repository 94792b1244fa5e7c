"""The audit trail: every interaction, refused ones and failed logins included (issue 7)."""

from fhirlake.audit.record import OUTCOME_UNKNOWN, AuditRecord, action_for, clean_param_names
from fhirlake.audit.render import audit_event_resource
from fhirlake.audit.search import AuditSearchError, read_audit, search_audit
from fhirlake.audit.writer import AuditError, AuditWriter, PendingAudit, complete_in, record_in

__all__ = [
    "OUTCOME_UNKNOWN",
    "AuditError",
    "AuditRecord",
    "AuditSearchError",
    "AuditWriter",
    "PendingAudit",
    "action_for",
    "audit_event_resource",
    "clean_param_names",
    "complete_in",
    "read_audit",
    "record_in",
    "search_audit",
]
