"""The one error type of the ViewDefinition engine."""

from __future__ import annotations


class ViewDefinitionError(ValueError):
    """A ViewDefinition is invalid, or a row could not be built from it.

    ``path`` names the offending element of the ViewDefinition, e.g. ``select[0].column[2].path``
    (empty when the whole definition is at fault).
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
