"""SMART on FHIR authentication and authorization (issue 7).

``Authenticator`` turns an ``Authorization`` header into an ``AccessContext``; the context is the
single decision point that services and the store consult (DESIGN.md, "Security").
"""

from fhirlake.auth.authenticator import Authenticator
from fhirlake.auth.config import AuthConfig
from fhirlake.auth.context import AccessContext
from fhirlake.auth.errors import AuthError, ForbiddenError
from fhirlake.auth.scopes import Scope, ScopeError, format_scopes, intersect_scopes, parse_scopes

__all__ = [
    "AccessContext",
    "AuthConfig",
    "Authenticator",
    "AuthError",
    "ForbiddenError",
    "Scope",
    "ScopeError",
    "format_scopes",
    "intersect_scopes",
    "parse_scopes",
]
