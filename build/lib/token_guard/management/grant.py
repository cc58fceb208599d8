"""The client-credentials grant: ``POST /oauth/token`` (RFC 6749 §4.4) and the JWTs it issues.

Security choices:

* **Access tokens** are JWTs signed with Ed25519 (``alg: EdDSA``), ``typ: at+jwt`` (RFC 9068)
  and a ``kid`` (the RFC 7638 thumbprint of the public key). Claims: ``iss``, ``aud``,
  ``sub`` = ``client_id``, ``scope`` (space-separated), ``iat``, ``nbf``, ``exp``, ``jti``.
* Errors are the RFC 6749 §5.2 body ``{"error", "error_description"}`` (not the
  ``{"error", "hint", "code"}`` body of the rest of the API): OAuth client libraries read it.
* Parameters must not be repeated (§3.2); credentials come from the form or HTTP Basic, never
  both; an ``audience`` other than ours is refused.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from token_guard.core.errors import StoreUnavailable, TokenGuardError
from token_guard.core.records import OAuthClient
from token_guard.management.clients import SCOPES, authenticate_client, parse_scopes
from token_guard.management.http import NO_STORE, REALM, BadRequest, read_body
from token_guard.management.keys import DEFAULT_TOKEN_LIFETIME, SIGNING_ALGORITHM, SigningKeys
from token_guard.stores.base import TokenStore

ACCESS_TOKEN_TYPE = "at+jwt"
MAX_FORM_BYTES = 64 * 1024
#: The ``error`` values of RFC 6749 §5.2 this endpoint answers with (OAuth fixes them).
OAUTH_ERROR_CODES: tuple[str, ...] = (
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "temporarily_unavailable",
)


class OAuthError(TokenGuardError):
    """A refused ``POST /oauth/token`` request, shaped as RFC 6749 §5.2 says."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        """The RFC 6749 §5.2 error body."""
        return {"error": self.error, "error_description": self.description}



@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    """The answer to a client-credentials grant."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 token response body."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": " ".join(self.scope),
        }


def issue_access_token(
    keys: SigningKeys, client_id: str, scopes: Sequence[str], *, issuer: str, audience: str,
    lifetime: int = DEFAULT_TOKEN_LIFETIME, now: datetime | None = None,
) -> IssuedAccessToken:
    """Sign an access token for ``client_id`` with the active key."""
    at = now or datetime.now(UTC)
    keys.refresh()
    key = keys.active
    iat = int(at.timestamp())
    claims = {
        "iss": issuer, "aud": audience, "sub": client_id, "client_id": client_id,
        "scope": " ".join(scopes), "iat": iat, "nbf": iat, "exp": iat + lifetime,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(
        claims, key.private_key, algorithm=SIGNING_ALGORITHM,
        headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    return IssuedAccessToken(token, lifetime, tuple(scopes))


async def client_credentials_grant(
    store: TokenStore, keys: SigningKeys, params: Mapping[str, str],
    basic: tuple[str, str] | None, *, issuer: str, audience: str,
    lifetime: int = DEFAULT_TOKEN_LIFETIME,
) -> tuple[IssuedAccessToken, OAuthClient]:
    """Run RFC 6749 §4.4 on the request parameters; raise OAuthError per §5.2."""
    grant_type = params.get("grant_type")
    if not grant_type:
        raise OAuthError(
            "invalid_request", "grant_type is missing; send grant_type=client_credentials"
        )
    if grant_type != "client_credentials":
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type {grant_type!r} is not supported; use client_credentials",
        )
    in_body = "client_id" in params or "client_secret" in params
    if basic is not None and in_body:
        raise OAuthError(
            "invalid_request",
            "client credentials were sent both in the Authorization header and in the body; "
            "use one of them",
        )
    client_id, client_secret = basic if basic is not None else (
        params.get("client_id", ""), params.get("client_secret", "")
    )
    if not client_id or not client_secret:
        raise OAuthError(
            "invalid_client",
            "client authentication is missing; send client_id and client_secret in the form "
            "body or with HTTP Basic",
            status=401,
        )
    requested_audience = params.get("audience")
    if requested_audience is not None and requested_audience != audience:
        raise OAuthError(
            "invalid_request",
            f"audience {requested_audience!r} is not served here; omit it or use {audience!r}",
        )
    client = await authenticate_client(store, client_id, client_secret)
    if client is None:
        raise OAuthError(
            "invalid_client",
            "client authentication failed: unknown client, wrong secret or revoked client",
            status=401,
        )
    if "scope" in params:
        try:
            wanted = parse_scopes(params["scope"])
        except ValueError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        extra = [s for s in wanted if s not in client.scopes]
        if extra:
            raise OAuthError(
                "invalid_scope",
                f"this client may not request {' '.join(extra)}; its scopes are "
                f"{' '.join(client.scopes) or '(none)'}",
            )
        if not wanted:
            raise OAuthError("invalid_scope", f"scope is empty; ask for {' or '.join(SCOPES)}")
    else:
        wanted = client.scopes
    issued = issue_access_token(
        keys, client.client_id, wanted, issuer=issuer, audience=audience, lifetime=lifetime
    )
    return issued, client



def client_from_basic(header_value: str) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic`` client credentials (form-urlencoded, RFC 6749 §2.3.1).

    Returns None when the header is not Basic; raises OAuthError when it is malformed.
    """
    scheme, _, value = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", "the Basic credentials are not valid base64 of id:secret",
            status=401,
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(
            "invalid_client", "the Basic credentials need the form client_id:client_secret",
            status=401,
        )
    return unquote_plus(client_id), unquote_plus(secret)


class TokenEndpoint:
    """``POST /oauth/token``: the client-credentials grant over HTTP, audited in the store."""

    def __init__(
        self, store: TokenStore, keys: SigningKeys, *, issuer: str, audience: str,
        lifetime: int = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        self.store = store
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime

    async def handle(self, request: Request) -> Response:
        """Answer one token request: §5.1 on success, §5.2 errors otherwise."""
        try:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/x-www-form-urlencoded":
                raise OAuthError(
                    "invalid_request",
                    "send the parameters as application/x-www-form-urlencoded",
                )
            try:
                raw = await read_body(request, MAX_FORM_BYTES)
                pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
            except (BadRequest, UnicodeDecodeError, ValueError):
                raise OAuthError(
                    "invalid_request", f"the form body is unreadable or over {MAX_FORM_BYTES} bytes"
                ) from None
            params: dict[str, str] = {}
            for key, value in pairs:
                if key in params:
                    # RFC 6749 §3.2: parameters must not be repeated.
                    raise OAuthError("invalid_request", f"parameter {key!r} is repeated")
                params[key] = value
            auth = request.headers.get("authorization")
            basic = client_from_basic(auth) if auth else None
            issued, client = await client_credentials_grant(
                self.store, self.keys, params, basic, issuer=self.issuer,
                audience=self.audience, lifetime=self.lifetime,
            )
            # Inside the try: no audit entry, no token (a store failure answers 503).
            await self.store.add_audit(
                client.client_id, "oauth.token", None, {"scope": " ".join(issued.scope)}
            )
        except OAuthError as exc:
            headers = dict(NO_STORE)
            if exc.status == 401:
                headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
            return JSONResponse(exc.as_json(), status_code=exc.status, headers=headers)
        except StoreUnavailable:
            return JSONResponse(
                {"error": "temporarily_unavailable",
                 "error_description": "the client store cannot answer now; retry shortly"},
                status_code=503, headers=NO_STORE,
            )
        return JSONResponse(issued.as_json(), headers=NO_STORE)
