"""The management HTTP app: the Tokens REST API, the OAuth token endpoint, JWKS and OpenAPI.

Routes:

* ``POST /oauth/token`` — client credentials (RFC 6749 §4.4); errors per §5.2.
* ``GET /.well-known/jwks.json`` — the public signing keys (retired ones until they expire).
* ``GET /openapi.json`` — the OpenAPI 3.1 schema of everything here.
* ``GET|POST /v3/tokens``, ``GET|PATCH|DELETE /v3/tokens/{id}``, ``GET /v3/audit``.
* ``GET /developers`` — the Developers page (HTML, CSS and JS from ``token_guard/web/``): sign in
  with an OAuth client, then list, inspect, create and revoke tokens through the routes above.
  It is static; every action is a Tokens API call made by the browser with the access token it
  keeps in memory. Served with a strict CSP (this origin only, no inline script or style),
  ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``.

The ``/v3`` routes accept only OAuth access tokens (ours, or a configured external
issuer's); an API access token (``tgk_...``) gets 401 saying so. ``read:tokens`` reads,
``write:tokens`` changes (403 ``insufficient_scope`` otherwise). Every change is audited by the
store with the OAuth client id as actor; the secret of a created token is in the creation
response only. Errors are ``{"error", "hint", "code"}`` (+ ``field`` on a 400).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from token_guard.errors import InvalidTokenSpec, NotFound, StoreUnavailable
from token_guard.management.oauth import (
    DEFAULT_TOKEN_LIFETIME,
    READ_SCOPE,
    WRITE_SCOPE,
    AccessClaims,
    AccessDenied,
    AccessTokenVerifier,
    ExternalIssuer,
    OAuthError,
    SigningKeys,
    client_credentials_grant,
    client_from_basic,
)
from token_guard.records import AuditEntry
from token_guard.spec import format_datetime
from token_guard.stores.base import TokenStore

MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_REALM = "token-guard"

Handler = Callable[[Request], Awaitable[Response]]

#: Where the management app serves the Developers page.
DEVELOPERS_PATH = "/developers"
# No inline script or style anywhere on the page: injected markup can neither run nor restyle.
# form-action 'none': the page's forms are handled by script; a form that escaped it goes nowhere.
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _PAGE_CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
# Files of the page, by the name they are served under: a fixed table, so no request path
# ever reaches the file system.
_PAGE_ASSETS = {
    "developers.css": "text/css; charset=utf-8",
    "developers.js": "text/javascript; charset=utf-8",
}


class _BadRequest(Exception):
    """A 400 about one request field (raised inside handlers, answered by ``_guarded``)."""

    def __init__(self, field: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.hint = hint


def _error(status: int, code: str, message: str, hint: str, **extra: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "hint": hint, "code": code, **extra}, status_code=status,
        headers=_NO_STORE,
    )


def _guarded(handler: Handler) -> Handler:
    """Turn the exceptions a handler may raise into JSON error responses."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except AccessDenied as exc:
            return JSONResponse(
                exc.as_json(), status_code=exc.status,
                headers={**_NO_STORE, "WWW-Authenticate": exc.www_authenticate(_REALM)},
            )
        except InvalidTokenSpec as exc:
            return _error(
                400, "invalid_token_spec", str(exc),
                f"change '{exc.field}' as the message says and send the request again",
                field=exc.field,
            )
        except _BadRequest as exc:
            return _error(400, "invalid_request", exc.message, exc.hint, field=exc.field)
        except NotFound:
            token_id = request.path_params.get("token_id", "")
            return _error(
                404, "not_found", f"no token has id {token_id!r}",
                "list tokens with GET /v3/tokens to find the right id",
            )
        except StoreUnavailable:
            return _error(
                503, "store_unavailable", "the token store cannot answer now",
                "retry in a few seconds",
            )

    return wrapped


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BadRequest("body", f"the body is larger than {limit} bytes", "send a smaller body")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BadRequest(
                "body", f"the body is larger than {limit} bytes", "send a smaller body"
            )
    return body


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await _read_body(request, MAX_BODY_BYTES)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest(
            "body", "the body is not valid JSON",
            "send a JSON object with Content-Type: application/json",
        ) from None
    if not isinstance(body, dict):
        raise _BadRequest("body", "the body must be a JSON object", "send {\"field\": value, ...}")
    return body


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise _BadRequest(name, f"{name} is given {len(values)} times", f"give {name} once")
    text = values[0]
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise _BadRequest(
            name, f"{name} must be an integer from {low} to {high}, got {text!r}",
            f"e.g. ?{name}={min(high, max(low, DEFAULT_PAGE))}",
        )
    return int(text)


def _audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": format_datetime(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "token_id": entry.token_id,
        "detail": entry.detail,
    }


@dataclass(frozen=True, slots=True)
class _PageFile:
    body: bytes
    media_type: str


def _load_page_files() -> Mapping[str, _PageFile]:
    """Read the Developers page's files once, from the installed package."""
    web = files("token_guard").joinpath("web")
    out = {"": _PageFile(web.joinpath("developers.html").read_bytes(), "text/html; charset=utf-8")}
    for name, media_type in _PAGE_ASSETS.items():
        out[name] = _PageFile(web.joinpath(name).read_bytes(), media_type)
    return out


class _DevelopersPage:
    """``GET /developers`` and its CSS and JS, with the page's security headers."""

    def __init__(self) -> None:
        self.files = _load_page_files()

    async def page(self, request: Request) -> Response:
        """``GET /developers``."""
        # no-store: the page holds a live access token in memory, so it must not be
        # restored from the back/forward cache after the person signed out and left.
        return self._answer(self.files[""], "no-store")

    async def slash(self, request: Request) -> Response:
        """``GET /developers/``: the page's relative URLs assume no trailing slash."""
        root = str(request.scope.get("root_path", ""))
        return RedirectResponse(root + DEVELOPERS_PATH, 308, headers=_PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        """``GET /developers/static/{name}``: only the page's own files."""
        name = str(request.path_params["name"])
        found = self.files.get(name) if name in _PAGE_ASSETS else None
        if found is None:
            return Response(
                "not found", status_code=404, media_type="text/plain; charset=utf-8",
                headers=_PAGE_HEADERS,
            )
        return self._answer(found, "no-cache")

    def _answer(self, file: _PageFile, cache: str) -> Response:
        return Response(
            file.body, media_type=file.media_type,
            headers={**_PAGE_HEADERS, "Cache-Control": cache},
        )


class _ManagementApi:
    """The handlers, closed over one store, key ring and verifier (no module state)."""

    def __init__(
        self, store: TokenStore, keys: SigningKeys, verifier: AccessTokenVerifier, *,
        issuer: str, audience: str, token_lifetime: int,
    ) -> None:
        self.store = store
        self.keys = keys
        self.verifier = verifier
        self.issuer = issuer
        self.audience = audience
        self.token_lifetime = token_lifetime

    async def caller(self, request: Request, scope: str) -> AccessClaims:
        """The verified OAuth caller holding ``scope``, or raise ``AccessDenied``."""
        values = request.headers.getlist("authorization")
        if not values:
            raise AccessDenied(
                "no access token: the Tokens API needs an OAuth access token",
                "send Authorization: Bearer <access token from POST /oauth/token>",
                code="missing_token",
            )
        if len(values) > 1:
            raise AccessDenied(
                "several Authorization headers were sent", "send exactly one Bearer token"
            )
        kind, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise AccessDenied(
                "the Authorization header is not a Bearer token",
                "send Authorization: Bearer <access token from POST /oauth/token>",
            )
        claims = await self.verifier.verify(token)
        claims.require(scope)
        return claims

    async def oauth_token(self, request: Request) -> Response:
        """``POST /oauth/token``: the client-credentials grant."""
        try:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/x-www-form-urlencoded":
                raise OAuthError(
                    "invalid_request",
                    "send the parameters as application/x-www-form-urlencoded",
                )
            try:
                raw = await _read_body(request, MAX_FORM_BYTES)
                pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
            except (_BadRequest, UnicodeDecodeError, ValueError):
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
                audience=self.audience, lifetime=self.token_lifetime,
            )
            # Inside the try: no audit entry, no token (a store failure answers 503).
            await self.store.add_audit(
                client.client_id, "oauth.token", None, {"scope": " ".join(issued.scope)}
            )
        except OAuthError as exc:
            headers = dict(_NO_STORE)
            if exc.status == 401:
                headers["WWW-Authenticate"] = f'Basic realm="{_REALM}"'
            return JSONResponse(exc.as_json(), status_code=exc.status, headers=headers)
        except StoreUnavailable:
            return JSONResponse(
                {"error": "temporarily_unavailable",
                 "error_description": "the client store cannot answer now; retry shortly"},
                status_code=503, headers=_NO_STORE,
            )
        return JSONResponse(issued.as_json(), headers=_NO_STORE)

    async def jwks(self, request: Request) -> Response:
        """``GET /.well-known/jwks.json``: the public keys that verify our access tokens."""
        self.keys.refresh()
        # Short caching: a rotated key must reach verifiers before tokens it signs do.
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``."""
        return JSONResponse(openapi_schema())

    async def list_tokens(self, request: Request) -> Response:
        """``GET /v3/tokens?limit=&after=``."""
        await self.caller(request, READ_SCOPE)
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
        afters = request.query_params.getlist("after")
        if len(afters) > 1:
            raise _BadRequest("after", "after is given more than once", "give one cursor")
        after = afters[0] if afters else None
        # One more than asked: "next" is only set when another page really exists.
        records = list(await self.store.list_tokens(limit=limit + 1, after=after))
        page, more = records[:limit], len(records) > limit
        now = datetime.now(UTC)
        return JSONResponse(
            {"tokens": [r.as_json(now) for r in page], "next": page[-1].id if more else None},
            headers=_NO_STORE,
        )

    async def create_token(self, request: Request) -> Response:
        """``POST /v3/tokens``: the response carries the secret, this once."""
        claims = await self.caller(request, WRITE_SCOPE)
        body = await _json_object(request)
        issued = await self.store.create_token(body, actor=claims.client_id)
        out = issued.record.as_json(datetime.now(UTC))
        out["token"] = issued.token
        out["warnings"] = issued.record.spec.warnings()
        return JSONResponse(
            out, status_code=201, headers={**_NO_STORE, "Location": f"/v3/tokens/{issued.id}"}
        )

    async def show_token(self, request: Request) -> Response:
        """``GET /v3/tokens/{id}``."""
        await self.caller(request, READ_SCOPE)
        record = await self.store.get_token(request.path_params["token_id"])
        if record is None:
            raise NotFound(request.path_params["token_id"])
        return JSONResponse(record.as_json(datetime.now(UTC)), headers=_NO_STORE)

    async def update_token(self, request: Request) -> Response:
        """``PATCH /v3/tokens/{id}``: name, grants, referers, allowed_apis."""
        claims = await self.caller(request, WRITE_SCOPE)
        body = await _json_object(request)
        record = await self.store.update_token(
            request.path_params["token_id"], body, actor=claims.client_id
        )
        return JSONResponse(record.as_json(datetime.now(UTC)), headers=_NO_STORE)

    async def revoke_token(self, request: Request) -> Response:
        """``DELETE /v3/tokens/{id}``: revoke (idempotent); returns the revoked token."""
        claims = await self.caller(request, WRITE_SCOPE)
        record = await self.store.revoke_token(
            request.path_params["token_id"], actor=claims.client_id
        )
        return JSONResponse(record.as_json(datetime.now(UTC)), headers=_NO_STORE)

    async def list_audit(self, request: Request) -> Response:
        """``GET /v3/audit?limit=&before=``: newest first."""
        await self.caller(request, READ_SCOPE)
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
        before = _int_param(request, "before", None, 1, 2**62)
        entries = list(await self.store.list_audit(limit=limit + 1, before=before))
        page, more = entries[:limit], len(entries) > limit
        return JSONResponse(
            {"entries": [_audit_json(e) for e in page], "next": page[-1].id if more else None},
            headers=_NO_STORE,
        )


def create_management_app(
    store: TokenStore, *, issuer: str, audience: str, keys: SigningKeys | None = None,
    external_issuers: Sequence[ExternalIssuer] = (),
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME, developers_page: bool = True,
) -> Starlette:
    """The Tokens API + ``/oauth/token`` + JWKS + OpenAPI (+ ``/developers``) as one Starlette app.

    ``developers_page=False`` leaves out the Developers page (an API-only deployment).
    ``keys`` defaults to an in-memory key ring (access tokens die with the process); pass
    ``SigningKeys.open(path)`` to keep them in a key file. ``issuer`` goes in ``iss`` and
    ``audience`` in ``aud`` of the tokens issued here, and both are checked on the way in.
    """
    ring = keys if keys is not None else SigningKeys.ephemeral()
    verifier = AccessTokenVerifier(
        store, ring, issuer=issuer, audience=audience, external_issuers=external_issuers
    )
    api = _ManagementApi(
        store, ring, verifier, issuer=issuer, audience=audience, token_lifetime=token_lifetime
    )
    routes = [
        Route("/oauth/token", api.oauth_token, methods=["POST"]),
        Route("/.well-known/jwks.json", api.jwks, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/v3/tokens", _guarded(api.list_tokens), methods=["GET"]),
        Route("/v3/tokens", _guarded(api.create_token), methods=["POST"]),
        Route("/v3/tokens/{token_id}", _guarded(api.show_token), methods=["GET"]),
        Route("/v3/tokens/{token_id}", _guarded(api.update_token), methods=["PATCH"]),
        Route("/v3/tokens/{token_id}", _guarded(api.revoke_token), methods=["DELETE"]),
        Route("/v3/audit", _guarded(api.list_audit), methods=["GET"]),
    ]
    if developers_page:
        page = _DevelopersPage()
        routes += [
            Route(DEVELOPERS_PATH, page.page, methods=["GET"]),
            Route(DEVELOPERS_PATH + "/", page.slash, methods=["GET"]),
            Route(DEVELOPERS_PATH + "/static/{name}", page.asset, methods=["GET"]),
        ]
    return Starlette(routes=routes)


# -- OpenAPI -------------------------------------------------------------------------------

_ERROR = {
    "type": "object",
    "required": ["error", "hint", "code"],
    "properties": {
        "error": {"type": "string"},
        "hint": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string"},
    },
}
_OAUTH_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                "unsupported_grant_type", "invalid_scope", "temporarily_unavailable",
            ],
        },
        "error_description": {"type": "string"},
    },
}
_GRANT = {
    "type": "object",
    "required": ["connection_name", "source"],
    "additionalProperties": False,
    "properties": {
        "connection_name": {"type": "string", "examples": ["carto_dw"]},
        "source": {"type": "string", "examples": ["carto-demo-data.demo_tables.retail_stores"]},
    },
}
_APIS = {"type": "string", "enum": ["maps", "sql", "lds", "imports"]}
_TOKEN_FIELDS = {
    "name": {"type": "string", "maxLength": 200},
    "grants": {"type": "array", "items": _GRANT},
    "referers": {"type": "array", "items": {"type": "string"}},
    "allowed_apis": {"type": "array", "items": _APIS, "minItems": 1},
}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TOKEN = {
    "type": "object",
    "required": [
        "id", "name", "grants", "referers", "allowed_apis", "expiration_date", "created_at",
        "last_used_at", "revoked_at", "state",
    ],
    "properties": {
        "id": {"type": "string"},
        **_TOKEN_FIELDS,
        "expiration_date": _NULLABLE_TIME,
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": _NULLABLE_TIME,
        "revoked_at": _NULLABLE_TIME,
        "state": {"type": "string", "enum": ["active", "revoked", "expired"]},
    },
}
_CREATED = {
    "allOf": [
        {"$ref": "#/components/schemas/Token"},
        {
            "type": "object",
            "required": ["token", "warnings"],
            "properties": {
                "token": {"type": "string", "description": "The secret. Shown this once."},
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        },
    ]
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _resp(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": _json(ref)}


_AUTH_ERRORS = {
    "401": {
        **_resp("No valid OAuth access token", "Error"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    },
    "403": _resp("The access token lacks the scope", "Error"),
    "503": _resp("The store cannot answer now", "Error"),
}
_ID_PARAM = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the management app."""
    read_sec = [{"oauth": [READ_SCOPE]}]
    write_sec = [{"oauth": [WRITE_SCOPE]}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "token_guard management API",
            "version": "1",
            "description": "Tokens REST API, authenticated with OAuth 2.0 client credentials.",
        },
        "paths": {
            "/v3/tokens": {
                "get": {
                    "operationId": "listTokens",
                    "security": read_sec,
                    "parameters": [
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _resp("A page of tokens", "TokenPage"),
                        "400": _resp("A bad parameter", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
                "post": {
                    "operationId": "createToken",
                    "security": write_sec,
                    "requestBody": {"required": True, "content": _json("TokenCreate")},
                    "responses": {
                        "201": _resp("The token, with its secret (shown once)", "CreatedToken"),
                        "400": _resp("The body is invalid; field names it", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v3/tokens/{token_id}": {
                "parameters": [_ID_PARAM],
                "get": {
                    "operationId": "showToken",
                    "security": read_sec,
                    "responses": {
                        "200": _resp("The token (never its secret)", "Token"),
                        "404": _resp("No token has this id", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
                "patch": {
                    "operationId": "updateToken",
                    "security": write_sec,
                    "requestBody": {"required": True, "content": _json("TokenUpdate")},
                    "responses": {
                        "200": _resp("The updated token", "Token"),
                        "400": _resp("The body is invalid; field names it", "Error"),
                        "404": _resp("No token has this id", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
                "delete": {
                    "operationId": "revokeToken",
                    "security": write_sec,
                    "responses": {
                        "200": _resp("The revoked token", "Token"),
                        "404": _resp("No token has this id", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v3/audit": {
                "get": {
                    "operationId": "listAudit",
                    "security": read_sec,
                    "parameters": [
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "before", "in": "query",
                         "schema": {"type": "integer", "minimum": 1}},
                    ],
                    "responses": {
                        "200": _resp("Audit entries, newest first", "AuditPage"),
                        "400": _resp("A bad parameter", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/oauth/token": {
                "post": {
                    "operationId": "issueAccessToken",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {"application/x-www-form-urlencoded": {"schema": {
                            "type": "object",
                            "required": ["grant_type"],
                            "properties": {
                                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                                "client_id": {"type": "string"},
                                "client_secret": {"type": "string"},
                                "audience": {"type": "string"},
                                "scope": {"type": "string"},
                            },
                        }}},
                    },
                    "responses": {
                        "200": _resp("An access token", "AccessToken"),
                        "400": _resp("RFC 6749 §5.2 error", "OAuthError"),
                        "401": _resp("Client authentication failed", "OAuthError"),
                        "503": _resp("The store cannot answer now", "OAuthError"),
                    },
                },
            },
            "/.well-known/jwks.json": {
                "get": {
                    "operationId": "jwks",
                    "security": [],
                    "responses": {"200": _resp("The public signing keys", "JWKS")},
                },
            },
        },
        "components": {
            "securitySchemes": {
                "oauth": {
                    "type": "oauth2",
                    "flows": {"clientCredentials": {
                        "tokenUrl": "/oauth/token",
                        "scopes": {
                            READ_SCOPE: "list and show tokens, read the audit log",
                            WRITE_SCOPE: "create, update and revoke tokens",
                        },
                    }},
                },
            },
            "schemas": {
                "Error": _ERROR,
                "OAuthError": _OAUTH_ERROR,
                "Grant": _GRANT,
                "TokenCreate": {
                    "type": "object",
                    "required": ["allowed_apis"],
                    "additionalProperties": False,
                    "properties": {
                        **_TOKEN_FIELDS,
                        "expiration_date": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "TokenUpdate": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": _TOKEN_FIELDS,
                },
                "Token": _TOKEN,
                "CreatedToken": _CREATED,
                "TokenPage": {
                    "type": "object",
                    "required": ["tokens", "next"],
                    "properties": {
                        "tokens": {
                            "type": "array", "items": {"$ref": "#/components/schemas/Token"},
                        },
                        "next": {"type": ["string", "null"]},
                    },
                },
                "AuditEntry": {
                    "type": "object",
                    "required": ["id", "at", "actor", "action", "token_id", "detail"],
                    "properties": {
                        "id": {"type": "integer"},
                        "at": {"type": "string", "format": "date-time"},
                        "actor": {"type": "string"},
                        "action": {"type": "string"},
                        "token_id": {"type": ["string", "null"]},
                        "detail": {"type": "object"},
                    },
                },
                "AuditPage": {
                    "type": "object",
                    "required": ["entries", "next"],
                    "properties": {
                        "entries": {
                            "type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"},
                        },
                        "next": {"type": ["integer", "null"]},
                    },
                },
                "AccessToken": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"type": "string", "enum": ["Bearer"]},
                        "expires_in": {"type": "integer"},
                        "scope": {"type": "string"},
                    },
                },
                "JWKS": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                },
            },
        },
    }
