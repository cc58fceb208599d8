"""Managing tokens: the Tokens REST API, its machine-to-machine OAuth, and their keys.

``create_management_app(store, issuer=..., audience=...)`` is the Starlette app serving
``/v3/tokens``, ``/v3/audit``, ``/oauth/token``, ``/.well-known/jwks.json`` and
``/openapi.json``. ``token-guard serve`` runs it under uvicorn.
"""

from __future__ import annotations

from token_guard.management.app import create_management_app
from token_guard.management.clients import (
    READ_SCOPE,
    SCOPES,
    WRITE_SCOPE,
    authenticate_client,
    create_client,
    revoke_client,
)
from token_guard.management.grant import IssuedAccessToken, OAuthError, issue_access_token
from token_guard.management.keys import SigningKey, SigningKeys
from token_guard.management.openapi import openapi_schema
from token_guard.management.verify import (
    AccessClaims,
    AccessDenied,
    AccessTokenVerifier,
    ExternalIssuer,
)

__all__ = [
    "READ_SCOPE",
    "SCOPES",
    "WRITE_SCOPE",
    "AccessClaims",
    "AccessDenied",
    "AccessTokenVerifier",
    "ExternalIssuer",
    "IssuedAccessToken",
    "OAuthError",
    "SigningKey",
    "SigningKeys",
    "authenticate_client",
    "create_client",
    "create_management_app",
    "issue_access_token",
    "openapi_schema",
    "revoke_client",
]
