"""The one exception search raises for bad requests."""

from __future__ import annotations


class SearchError(Exception):
    """A request the search engine refuses; ``param`` names the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
