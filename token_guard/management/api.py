"""The Tokens REST API: ``/v3/tokens``, ``/v3/tokens/{id}`` and ``/v3/audit``.

These routes accept only OAuth access tokens (ours, or a configured external issuer's); an
API access token (``tgk_...``) gets 401 saying so. ``read:tokens`` reads, ``write:tokens``
changes (403 ``insufficient_scope`` otherwise). Every change is audited by the store with
the OAuth client id as actor; the secret of a created token is in the creation response
only. Errors are ``{"error", "hint", "code"}`` (+ ``field`` on a 400), codes from
``token_guard.core.decision.ERROR_CODES``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from token_guard.core.decision import (
    CONFLICT,
    INVALID_TOKEN_SPEC,
    NOT_FOUND,
    STORE_UNAVAILABLE,
    error_body,
)
from token_guard.core.errors import InvalidTokenSpec, NotFound, StoreUnavailable, TokenStateError
from token_guard.core.records import AuditEntry
from token_guard.core.spec import format_datetime, parse_grants, parse_token_spec, spec_errors
from token_guard.core.usage_report import usage_json, usage_range
from token_guard.management.clients import READ_SCOPE, WRITE_SCOPE
from token_guard.management.http import NO_STORE, REALM, BadRequest, error_response, read_body
from token_guard.management.verify import AccessClaims, AccessDenied, AccessTokenVerifier
from token_guard.stores.base import TokenStore

if TYPE_CHECKING:
    from token_guard.core.policy import Policy

MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_BODY_BYTES = 4 * 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Turn the exceptions a handler may raise into JSON error responses."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except AccessDenied as exc:
            return JSONResponse(
                exc.as_json(), status_code=exc.status,
                headers={**NO_STORE, "WWW-Authenticate": exc.www_authenticate(REALM)},
            )
        except InvalidTokenSpec as exc:
            return error_response(
                400, INVALID_TOKEN_SPEC, str(exc),
                f"change '{exc.field}' as the message says and send the request again",
                field=exc.field,
            )
        except BadRequest as exc:
            return error_response(400, exc.code, exc.message, exc.hint, field=exc.field)
        except TokenStateError as exc:
            return error_response(
                409, CONFLICT, str(exc), "create a new token; a revoked one stays revoked"
            )
        except NotFound:
            token_id = request.path_params.get("token_id", "")
            return error_response(
                404, NOT_FOUND, f"no token has id {token_id!r}",
                "list tokens with GET /v3/tokens to find the right id",
            )
        except StoreUnavailable:
            if request.method in ("GET", "HEAD"):
                return error_response(
                    503, STORE_UNAVAILABLE, "the token store cannot answer now",
                    "retry in a few seconds",
                )
            # Never a success: the write was refused (or, if the link broke after it was
            # sent, is unconfirmed), and the answer says so.
            return error_response(
                503, STORE_UNAVAILABLE,
                "the token store cannot answer now, so nothing was changed "
                "(the change was not made, or is not confirmed)",
                "retry in a few seconds, then GET the token to see its state",
            )

    return wrapped


def _invalid_spec(first: InvalidTokenSpec, every: list[InvalidTokenSpec]) -> Response:
    """400 ``invalid_token_spec`` naming the first field, with ``errors``: every field's."""
    body: dict[str, Any] = error_body(
        INVALID_TOKEN_SPEC, str(first),
        f"change '{first.field}' as the message says and send the request again",
        field=first.field,
    )
    listed = every if any(e.field == first.field for e in every) else [first, *every]
    body["errors"] = [{"field": e.field, "error": str(e)} for e in listed]
    return JSONResponse(body, status_code=400, headers=NO_STORE)


guarded = _guarded
"""``_guarded`` for the routes of the Tokens API's other modules (``lifecycle``)."""


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(
            "body", "the body is not valid JSON",
            "send a JSON object with Content-Type: application/json",
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object", "send {\"field\": value, ...}")
    return body


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(name, f"{name} is given {len(values)} times", f"give {name} once")
    text = values[0]
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise BadRequest(
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


class TokensApi:
    """The Tokens API handlers, closed over one store and verifier (no module state)."""

    def __init__(
        self, store: TokenStore, verifier: AccessTokenVerifier, *, policy: Policy | None = None
    ) -> None:
        self.store = store
        self.verifier = verifier
        # The app's policy (from its configuration): grants it could never serve are refused.
        self.policy = policy

    def _check_grants(self, body: dict[str, Any], *, creating: bool) -> None:
        if self.policy is None:
            return
        if creating:
            self.policy.check_grants(parse_token_spec(body).grants)
        elif "grants" in body:
            self.policy.check_grants(parse_grants(body["grants"]))

    def routes(self) -> list[Route]:
        """The ``/v3/tokens`` and ``/v3/audit`` routes, each answering errors as JSON."""
        return [
            Route("/v3/tokens", _guarded(self.list_tokens), methods=["GET"]),
            Route("/v3/tokens", _guarded(self.create_token), methods=["POST"]),
            Route("/v3/tokens/{token_id}", _guarded(self.show_token), methods=["GET"]),
            Route("/v3/tokens/{token_id}", _guarded(self.update_token), methods=["PATCH"]),
            Route("/v3/tokens/{token_id}", _guarded(self.revoke_token), methods=["DELETE"]),
            Route("/v3/tokens/{token_id}/usage", _guarded(self.token_usage), methods=["GET"]),
            Route("/v3/audit", _guarded(self.list_audit), methods=["GET"]),
        ]

    async def caller(self, request: Request, scope: str) -> AccessClaims:
        """The verified OAuth caller holding ``scope``, or raise ``AccessDenied``."""
        return await self.verifier.authorize(request.headers.getlist("authorization"), scope)

    async def list_tokens(self, request: Request) -> Response:
        """``GET /v3/tokens?limit=&after=``."""
        await self.caller(request, READ_SCOPE)
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
        afters = request.query_params.getlist("after")
        if len(afters) > 1:
            raise BadRequest("after", "after is given more than once", "give one cursor")
        after = afters[0] if afters else None
        # One more than asked: "next" is only set when another page really exists.
        records = list(await self.store.list_tokens(limit=limit + 1, after=after))
        page, more = records[:limit], len(records) > limit
        now = datetime.now(UTC)
        return JSONResponse(
            {"tokens": [r.as_json(now) for r in page], "next": page[-1].id if more else None},
            headers=NO_STORE,
        )

    async def create_token(self, request: Request) -> Response:
        """``POST /v3/tokens``: the response carries the secret, this once."""
        claims = await self.caller(request, WRITE_SCOPE)
        body = await _json_object(request)
        try:
            self._check_grants(body, creating=True)
            issued = await self.store.create_token(body, actor=claims.client_id)
        except InvalidTokenSpec as exc:
            return _invalid_spec(exc, spec_errors(body, creating=True))
        out = issued.record.as_json(datetime.now(UTC))
        out["token"] = issued.token
        out["warnings"] = issued.record.spec.warnings()
        return JSONResponse(
            out, status_code=201, headers={**NO_STORE, "Location": f"/v3/tokens/{issued.id}"}
        )

    async def show_token(self, request: Request) -> Response:
        """``GET /v3/tokens/{id}``."""
        await self.caller(request, READ_SCOPE)
        record = await self.store.get_token(request.path_params["token_id"])
        if record is None:
            raise NotFound(request.path_params["token_id"])
        return JSONResponse(record.as_json(datetime.now(UTC)), headers=NO_STORE)

    async def update_token(self, request: Request) -> Response:
        """``PATCH /v3/tokens/{id}``: name, grants, referers, allowed_apis."""
        claims = await self.caller(request, WRITE_SCOPE)
        body = await _json_object(request)
        try:
            self._check_grants(body, creating=False)
            record = await self.store.update_token(
                request.path_params["token_id"], body, actor=claims.client_id
            )
        except InvalidTokenSpec as exc:
            return _invalid_spec(exc, spec_errors(body, creating=False))
        return JSONResponse(record.as_json(datetime.now(UTC)), headers=NO_STORE)

    async def revoke_token(self, request: Request) -> Response:
        """``DELETE /v3/tokens/{id}``: revoke (idempotent); returns the revoked token."""
        claims = await self.caller(request, WRITE_SCOPE)
        record = await self.store.revoke_token(
            request.path_params["token_id"], actor=claims.client_id
        )
        return JSONResponse(record.as_json(datetime.now(UTC)), headers=NO_STORE)

    async def token_usage(self, request: Request) -> Response:
        """``GET /v3/tokens/{id}/usage?from=&to=``: requests per hour and API, and per day."""
        await self.caller(request, READ_SCOPE)
        token_id = request.path_params["token_id"]
        params = {}
        for name in ("from", "to"):
            values = request.query_params.getlist(name)
            if len(values) > 1:
                raise BadRequest(name, f"{name} is given more than once", "give it once")
            params[name] = values[0] if values else None
        try:
            begin, end = usage_range(params["from"], params["to"], datetime.now(UTC))
        except ValueError as exc:
            field = str(exc).partition(":")[0]
            raise BadRequest(field, str(exc), "e.g. ?from=2026-12-01&to=2026-12-31") from None
        if await self.store.get_token(token_id) is None:
            raise NotFound(token_id)
        rows = await self.store.get_usage(token_id, begin, end)
        return JSONResponse(usage_json(token_id, rows, begin, end), headers=NO_STORE)

    async def list_audit(self, request: Request) -> Response:
        """``GET /v3/audit?limit=&before=&token_id=``: newest first (one token's with token_id)."""
        await self.caller(request, READ_SCOPE)
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
        before = _int_param(request, "before", None, 1, 2**62)
        token_ids = request.query_params.getlist("token_id")
        if len(token_ids) > 1:
            raise BadRequest("token_id", "token_id is given more than once", "give one id")
        entries = list(await self.store.list_audit(
            limit=limit + 1, before=before, token_id=token_ids[0] if token_ids else None
        ))
        page, more = entries[:limit], len(entries) > limit
        return JSONResponse(
            {"entries": [_audit_json(e) for e in page], "next": page[-1].id if more else None},
            headers=NO_STORE,
        )
