"""Machine-to-machine OAuth for the Tokens API, in one import (the parts live next door).

* ``clients`` — OAuth client ids, secrets, scopes and their records in the store.
* ``keys`` — the Ed25519 signing key ring, its key file and the JWKS.
* ``grant`` — the client-credentials grant (``POST /oauth/token``) and the JWTs it issues.
* ``verify`` — verifying access tokens on Tokens API calls (ours and external issuers').

Each module states its own security choices at its top.
"""

from __future__ import annotations

from token_guard.management.clients import (
    CLIENT_ID_PREFIX,
    CLIENT_SECRET_PREFIX,
    READ_SCOPE,
    SCOPES,
    WRITE_SCOPE,
    authenticate_client,
    create_client,
    hash_client_secret,
    new_client_id,
    new_client_secret,
    parse_scopes,
    revoke_client,
)
from token_guard.management.grant import (
    ACCESS_TOKEN_TYPE,
    IssuedAccessToken,
    OAuthError,
    client_credentials_grant,
    client_from_basic,
    issue_access_token,
)
from token_guard.management.keys import (
    DEFAULT_TOKEN_LIFETIME,
    SIGNING_ALGORITHM,
    SigningKey,
    SigningKeys,
    key_thumbprint,
)
from token_guard.management.verify import (
    API_TOKEN_PREFIX,
    EXTERNAL_ALGORITHMS,
    AccessClaims,
    AccessDenied,
    AccessTokenVerifier,
    ExternalIssuer,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "API_TOKEN_PREFIX",
    "CLIENT_ID_PREFIX",
    "CLIENT_SECRET_PREFIX",
    "DEFAULT_TOKEN_LIFETIME",
    "EXTERNAL_ALGORITHMS",
    "READ_SCOPE",
    "SCOPES",
    "SIGNING_ALGORITHM",
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
    "client_credentials_grant",
    "client_from_basic",
    "create_client",
    "hash_client_secret",
    "issue_access_token",
    "key_thumbprint",
    "new_client_id",
    "new_client_secret",
    "parse_scopes",
    "revoke_client",
]
