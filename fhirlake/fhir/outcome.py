"""OperationOutcome and the error type that every layer raises to answer with one."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # FHIR IssueType: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: list[str] = field(default_factory=list)

    def to_fhir(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """An error that answers with an HTTP status and an OperationOutcome."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        code: str = "processing",
        expression: list[str] | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [Issue("error", code, diagnostics, expression or [])]
        self.headers = headers or {}

    @property
    def diagnostics(self) -> str:
        return self.issues[0].diagnostics

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def info_outcome(message: str) -> dict:
    return operation_outcome([Issue("information", "informational", message)])


def not_found(res_type: str, res_id: str | None = None) -> FhirError:
    what = f"{res_type}/{res_id}" if res_id else f"resource type {res_type}"
    return FhirError(404, f"{what} is not known", code="not-found")


def bad_request(message: str, expression: list[str] | None = None, code: str = "invalid") -> FhirError:
    return FhirError(400, message, code=code, expression=expression)
