"""Authentication (401) and authorization (403) failures.

Messages are safe to send to the client and to log: they never contain the token or its claims.
"""

from __future__ import annotations


class AuthError(Exception):
    """Missing or invalid credentials: answer 401 with ``WWW-Authenticate: Bearer error="invalid_token"``."""

    status = 401

    def __init__(self, description: str, error: str = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error

    def www_authenticate(self, realm: str = "fhirlake") -> str:
        safe = self.description.replace('"', "'")
        return f'Bearer realm="{realm}", error="{self.error}", error_description="{safe}"'


class ForbiddenError(Exception):
    """A valid token without the right to do this: answer 403 with an OperationOutcome."""

    status = 403

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
