"""The management HTTP app: the Tokens API, the OAuth token endpoint, JWKS, OpenAPI, Developers.

Routes:

* ``POST /oauth/token`` — client credentials (RFC 6749 §4.4); errors per §5.2 (``grant``).
* ``GET /.well-known/jwks.json`` — the public signing keys (retired ones until they expire).
* ``GET /openapi.json`` — the OpenAPI 3.1 schema of everything here (``openapi``).
* ``GET|POST /v3/tokens``, ``GET|PATCH|DELETE /v3/tokens/{id}``, ``GET /v3/audit`` (``api``).
* ``POST /v3/tokens/{id}/rotate``, ``.../rotate/expire``, ``.../disable``, ``.../enable``
  (``lifecycle``).
* ``POST /v3/tokens/find``; ``POST /v3/secret-scanning/github`` when
  ``secret_scanning_keys`` are given (``leaks``).
* ``GET /developers`` — the Developers page (``developers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from token_guard.management.api import TokensApi
from token_guard.management.developers import DevelopersPage
from token_guard.management.grant import TokenEndpoint
from token_guard.management.keys import DEFAULT_TOKEN_LIFETIME, SigningKeys
from token_guard.management.leaks import LeakedSecrets
from token_guard.management.lifecycle import LifecycleApi
from token_guard.management.openapi import openapi_schema
from token_guard.management.verify import AccessTokenVerifier, ExternalIssuer
from token_guard.stores.base import TokenStore

if TYPE_CHECKING:
    from token_guard.config import ConfigSource


def create_management_app(
    store: TokenStore, *, issuer: str, audience: str, keys: SigningKeys | None = None,
    external_issuers: Sequence[ExternalIssuer] = (),
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME, developers_page: bool = True,
    config: ConfigSource | None = None,
    secret_scanning_keys: Mapping[str, str | bytes] | None = None,
) -> Starlette:
    """The Tokens API + ``/oauth/token`` + JWKS + OpenAPI (+ ``/developers``) as one Starlette app.

    ``developers_page=False`` leaves out the Developers page (an API-only deployment).
    ``keys`` defaults to an in-memory key ring (access tokens die with the process); pass
    ``SigningKeys.open(path)`` to keep them in a key file. ``issuer`` goes in ``iss`` and
    ``audience`` in ``aud`` of the tokens issued here, and both are checked on the way in.
    ``config`` (the app's TOML file or ``tg.load_config(...)``) makes creation and updates
    refuse a grant the app's guard could never serve (400 naming ``grants[i]...``), and
    lists its connections in the OpenAPI document (the Developers page offers them);
    without it, any connection name is accepted, as before.
    ``secret_scanning_keys`` (``{key_identifier: PEM}``, GitHub's secret scanning keys)
    enables ``POST /v3/secret-scanning/github``.
    """
    from token_guard.config import Settings, load_config

    settings = None if config is None else (
        config if isinstance(config, Settings) else load_config(config))
    policy = settings.policy() if settings is not None else None
    connection_names = sorted(settings.connections) if settings is not None else []
    ring = keys if keys is not None else SigningKeys.ephemeral()
    verifier = AccessTokenVerifier(
        store, ring, issuer=issuer, audience=audience, external_issuers=external_issuers
    )
    endpoint = TokenEndpoint(
        store, ring, issuer=issuer, audience=audience, lifetime=token_lifetime
    )

    async def jwks(request: Request) -> Response:
        """``GET /.well-known/jwks.json``: the public keys that verify our access tokens."""
        ring.refresh()
        # Short caching: a rotated key must reach verifiers before tokens it signs do.
        return JSONResponse(ring.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def openapi(request: Request) -> Response:
        """``GET /openapi.json``."""
        return JSONResponse(openapi_schema(connections=connection_names))

    routes = [
        Route("/oauth/token", endpoint.handle, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *TokensApi(store, verifier, policy=policy).routes(),
        *LifecycleApi(store, verifier).routes(),
        *LeakedSecrets(store, verifier, secret_scanning_keys).routes(),
    ]
    if developers_page:
        routes += DevelopersPage().routes()
    return Starlette(routes=routes)
