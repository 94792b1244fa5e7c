"""What the validator reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ValidationIssue:
    severity: str  # 'error' | 'warning'
    code: str  # FHIR IssueType: 'structure', 'required', 'value', 'invalid', 'too-costly', ...
    message: str
    expression: str  # FHIRPath-like location, e.g. "Patient.name[0].given[1]"

    def to_operation_outcome_issue(self) -> dict:
        """The OperationOutcome.issue JSON for this issue."""
        return {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.message,
            "expression": [self.expression],
        }
