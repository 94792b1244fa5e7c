"""What the server advertises about its security: ``/.well-known/smart-configuration`` and the
CapabilityStatement's ``rest[0].security``."""

from __future__ import annotations

from typing import Any

from fhirlake.auth.backend_services import ASSERTION_ALGORITHMS
from fhirlake.auth.config import AuthConfig

SMART_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

SCOPES_SUPPORTED = [
    "system/*.rs",
    "system/*.read",
    "system/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "patient/*.rs",
    "patient/*.cruds",
    "system/AuditEvent.rs",
    "fhirlake/deid-export",
    "launch/patient",
    "openid",
    "fhirUser",
]


def _base(config: AuthConfig, request_base: str | None) -> str:
    return (config.base_url or request_base or "").rstrip("/")


def smart_configuration(settings: Any, request_base: str | None = None) -> dict[str, Any]:
    """The SMART App Launch 2.0 discovery document for what is configured.

    The token endpoint is the built-in Backend Services one unless an external authorization server
    is configured with its endpoints (``auth_authorization_endpoint``/``auth_token_endpoint``);
    the built-in endpoint keeps working at ``/auth/token`` either way.
    """
    config = settings if isinstance(settings, AuthConfig) else AuthConfig.from_settings(settings)
    base = _base(config, request_base)
    external_authorize = getattr(settings, "auth_authorization_endpoint", None)
    external_token = getattr(settings, "auth_token_endpoint", None)
    capabilities = ["client-confidential-asymmetric", "permission-v1", "permission-v2"]
    document: dict[str, Any] = {
        "token_endpoint": external_token or f"{base}/auth/token",
        "jwks_uri": f"{base}/auth/jwks",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": sorted(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["token"],
    }
    if config.issuer:
        document["issuer"] = config.issuer
        capabilities += [
            "permission-user",
            "permission-patient",
            "context-ehr-patient",
            "context-standalone-patient",
        ]
    if external_authorize:
        document["authorization_endpoint"] = external_authorize
        document["grant_types_supported"] = ["authorization_code", "client_credentials"]
        document["response_types_supported"] = ["code"]
        document["code_challenge_methods_supported"] = ["S256"]
        capabilities += [
            "launch-standalone",
            "launch-ehr",
            "client-public",
            "client-confidential-symmetric",
            "sso-openid-connect",
        ]
    document["capabilities"] = capabilities
    return document


def capability_security(settings: Any, request_base: str | None = None) -> dict[str, Any]:
    """``CapabilityStatement.rest[0].security`` (SMART service coding and oauth-uris extension)."""
    config = settings if isinstance(settings, AuthConfig) else AuthConfig.from_settings(settings)
    if not config.enabled:
        return {
            "cors": True,
            "description": "Authorization is disabled: local development mode on a loopback address.",
        }
    discovery = smart_configuration(settings, request_base)
    uris = [{"url": "token", "valueUri": discovery["token_endpoint"]}]
    if "authorization_endpoint" in discovery:
        uris.append({"url": "authorize", "valueUri": discovery["authorization_endpoint"]})
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {"system": SMART_SERVICE_SYSTEM, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "extension": [{"url": OAUTH_URIS, "extension": uris}],
        "description": "SMART on FHIR: bearer tokens with SMART scopes; Backend Services at the token endpoint.",
    }
