"""Errors raised by the FHIRPath engine."""

from __future__ import annotations


class FhirPathError(Exception):
    """An expression that cannot be compiled or evaluated (semantic or run-time error)."""


class FhirPathSyntaxError(FhirPathError):
    """An expression that does not parse; `position` is the 0-based character offset."""

    def __init__(self, message: str, position: int, expression: str = "") -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position
        self.expression = expression
