"""The OpenAPI 3.1 document of the management app, served at ``GET /openapi.json``.

The token body's schemas (``TokenCreate``, ``TokenUpdate``, ``Token``) are generated from
``token_guard.core.spec.TOKEN_FIELDS``, the one declaration of the body's fields; the OAuth error
codes come from ``grant.OAUTH_ERROR_CODES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from token_guard.core.spec import GRANT_SCHEMA, TOKEN_FIELDS, TokenField
from token_guard.management.api import MAX_PAGE
from token_guard.management.clients import READ_SCOPE, WRITE_SCOPE
from token_guard.management.grant import OAUTH_ERROR_CODES
from token_guard.stores.base import DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS

_ERROR = {
    "type": "object",
    "required": ["error", "hint", "code"],
    "properties": {
        "error": {"type": "string"},
        "hint": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "on invalid_token_spec: every field's error, for forms",
            "items": {"type": "object", "required": ["field", "error"], "properties": {
                "field": {"type": "string"}, "error": {"type": "string"},
            }},
        },
    },
}
_OAUTH_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "enum": list(OAUTH_ERROR_CODES)},
        "error_description": {"type": "string"},
    },
}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _body_schema(fields: Sequence[TokenField], *, creating: bool) -> dict[str, Any]:
    """A request body holding ``fields`` (required ones only when ``creating``)."""
    out: dict[str, Any] = {"type": "object"}
    required = [f.name for f in fields if f.required] if creating else []
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    out["properties"] = {f.name: f.json_schema() for f in fields}
    return out


_TOKEN_CREATE = _body_schema([f for f in TOKEN_FIELDS if f.creatable], creating=True)
_TOKEN_UPDATE = _body_schema([f for f in TOKEN_FIELDS if f.patchable], creating=False)
# What the store adds to a token's body when it answers.
_RECORD_FIELDS: dict[str, Any] = {
    "created_at": {"type": "string", "format": "date-time"},
    "last_used_at": _NULLABLE_TIME,
    "revoked_at": _NULLABLE_TIME,
    "disabled_at": _NULLABLE_TIME,
    "secret_prefix": {
        "type": ["string", "null"],
        "description": "The current secret's first characters (tgk_ + 8), to tell which "
                       "token a secret belongs to; null for secrets issued before they were kept.",
    },
    "state": {"type": "string", "enum": ["active", "revoked", "expired", "disabled", "rotated"]},
}
_TOKEN = {
    "type": "object",
    "required": ["id", *(f.name for f in TOKEN_FIELDS), *_RECORD_FIELDS],
    "properties": {
        "id": {"type": "string"},
        **{f.name: f.json_schema() for f in TOKEN_FIELDS},
        **_RECORD_FIELDS,
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
_ROTATED = {
    "allOf": [
        {"$ref": "#/components/schemas/Token"},
        {
            "type": "object",
            "required": ["token", "grace_seconds", "old_secret_expires_at"],
            "properties": {
                "token": {"type": "string", "description": "The new secret. Shown this once."},
                "grace_seconds": {"type": "integer"},
                "old_secret_expires_at": {"type": "string", "format": "date-time"},
            },
        },
    ]
}


def _usage_entry(*keys: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [*keys, "allowed", "refused"],
        "properties": {
            **{k: {"type": "string"} for k in keys},
            "allowed": {"type": "integer", "minimum": 0},
            "refused": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }


_FOUND = {
    "allOf": [
        {"$ref": "#/components/schemas/Token"},
        {
            "type": "object",
            "required": ["secret"],
            "properties": {"secret": {
                "type": "object",
                "required": ["prefix", "current", "expires_at", "rotated_at"],
                "properties": {
                    "prefix": {"type": ["string", "null"]},
                    "current": {"type": "boolean",
                                "description": "false: a rotation replaced this secret"},
                    "expires_at": _NULLABLE_TIME,
                    "rotated_at": _NULLABLE_TIME,
                },
            }},
        },
    ]
}


def _lifecycle_paths(write_sec: list[dict[str, list[str]]]) -> dict[str, Any]:
    """Rotate, end a rotation's grace, disable, enable (``management.lifecycle``)."""

    def action(op_id: str, summary: str, answer: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"parameters": [_ID_PARAM], "post": {
            "operationId": op_id, "summary": summary, "security": write_sec, **extra,
            "responses": {
                "200": answer,
                "404": _resp("No token has this id", "Error"),
                "409": _resp("The token is revoked (revocation is final)", "Error"),
                **_AUTH_ERRORS,
            },
        }}

    rotate = action(
        "rotateToken", "A new secret; the old one works grace_seconds more (default 86400)",
        _resp("The token with its new secret (shown once)", "RotatedToken"),
        requestBody={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"grace_seconds": {
                "type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS,
                "default": DEFAULT_GRACE_SECONDS,
            }},
        }}}},
    )
    rotate["post"]["responses"]["400"] = _resp("grace_seconds is invalid", "Error")
    find = {"post": {
        "operationId": "findToken", "summary": "Which token is this secret? (by its hash)",
        "security": [{"oauth": [READ_SCOPE]}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["token"], "additionalProperties": False,
            "properties": {"token": {"type": "string", "description": "the secret, tgk_..."}},
        }}}},
        "responses": {
            "200": _resp("The token, and what this secret is now", "FoundToken"),
            "400": _resp("Not a token_guard secret", "Error"),
            "404": _resp("No token has this secret", "Error"),
            **_AUTH_ERRORS,
        },
    }}
    return {
        "/v3/tokens/find": find,
        "/v3/tokens/{token_id}/rotate": rotate,
        "/v3/tokens/{token_id}/rotate/expire": action(
            "endRotationGrace", "Replaced secrets stop working now",
            _resp("The token", "Token"),
        ),
        "/v3/tokens/{token_id}/disable": action(
            "disableToken", "Refuse the token (token_disabled) until enabled",
            _resp("The disabled token", "Token"),
        ),
        "/v3/tokens/{token_id}/enable": action(
            "enableToken", "Accept a disabled token again", _resp("The enabled token", "Token"),
        ),
    }


def _with_connections(body: dict[str, Any], connections: Sequence[str]) -> dict[str, Any]:
    """``body`` whose grants' ``connection_name`` is one of ``connections``."""
    grants = body["properties"]["grants"]
    item = {**grants["items"], "properties": {
        **grants["items"]["properties"],
        "connection_name": {"type": "string", "enum": list(connections)},
    }}
    # The generic example names a connection this app may not have: left out.
    listed = {k: v for k, v in grants.items() if k != "examples"}
    return {**body, "properties": {**body["properties"], "grants": {**listed, "items": item}}}


def openapi_schema(connections: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the management app; ``connections``, when the app was
    given its configuration, are the only connection names grants may use."""
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
            "/v3/tokens/{token_id}/usage": {
                "parameters": [_ID_PARAM],
                "get": {
                    "operationId": "tokenUsage",
                    "security": read_sec,
                    "description": "Requests per UTC hour and API, and per day: allowed, and "
                    "refused by code. Written in batches (every usage_flush_interval).",
                    "parameters": [
                        {"name": "from", "in": "query", "schema": {"type": "string"},
                         "description": "ISO 8601 date or date-time (UTC); default: 30 days "
                         "before 'to'"},
                        {"name": "to", "in": "query", "schema": {"type": "string"},
                         "description": "ISO 8601 date or date-time (UTC), exclusive; "
                         "default: now"},
                    ],
                    "responses": {
                        "200": _resp("The token's usage", "TokenUsage"),
                        "400": _resp("A bad parameter", "Error"),
                        "404": _resp("No token has this id", "Error"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            **_lifecycle_paths(write_sec),
            "/v3/audit": {
                "get": {
                    "operationId": "listAudit",
                    "security": read_sec,
                    "parameters": [
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "before", "in": "query",
                         "schema": {"type": "integer", "minimum": 1}},
                        {"name": "token_id", "in": "query", "schema": {"type": "string"},
                         "description": "only this token's entries"},
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
                            WRITE_SCOPE: "create, update, rotate, disable, enable and revoke "
                                         "tokens",
                        },
                    }},
                },
            },
            "schemas": {
                "Error": _ERROR,
                "OAuthError": _OAUTH_ERROR,
                "Grant": GRANT_SCHEMA,
                "TokenCreate": _with_connections(_TOKEN_CREATE, connections)
                if connections else _TOKEN_CREATE,
                "TokenUpdate": _with_connections(_TOKEN_UPDATE, connections)
                if connections else _TOKEN_UPDATE,
                "Token": _TOKEN,
                "CreatedToken": _CREATED,
                "RotatedToken": _ROTATED,
                "FoundToken": _FOUND,
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
                "TokenUsage": {
                    "type": "object",
                    "required": ["token_id", "from", "to", "hours", "days"],
                    "properties": {
                        "token_id": {"type": "string"},
                        "from": {"type": "string", "format": "date-time"},
                        "to": {"type": "string", "format": "date-time"},
                        "hours": {"type": "array", "items": _usage_entry("hour", "api")},
                        "days": {"type": "array", "items": _usage_entry("day")},
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
