"""The token lifecycle routes of the Tokens API: rotate, end a rotation's grace, disable, enable.

* ``POST /v3/tokens/{id}/rotate`` with ``{"grace_seconds": N}`` (optional; default 86400,
  0 = the old secret is refused at once): a new secret for the same token, in the answer
  this once. The old secret keeps working until ``old_secret_expires_at``, then is refused
  with ``token_rotated``.
* ``POST /v3/tokens/{id}/rotate/expire``: end every replaced secret's grace period now (the
  way out when the old secret leaked, or every client has moved).
* ``POST /v3/tokens/{id}/disable`` / ``.../enable``: refuse the token with
  ``token_disabled`` until enabled again. A revoked token answers 409 ``conflict``: revoke is
  final.

All need ``write:tokens``, are audited by the store with the OAuth client id as actor, and
reach every instance's cache through the store's change feed (within the revocation bound).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from token_guard.core.records import TokenRecord
from token_guard.core.spec import format_datetime
from token_guard.management.api import MAX_BODY_BYTES, TokensApi, guarded
from token_guard.management.clients import WRITE_SCOPE
from token_guard.management.http import NO_STORE, BadRequest, read_body
from token_guard.stores.base import DEFAULT_GRACE_SECONDS, check_grace

__all__ = ["LifecycleApi"]


class LifecycleApi(TokensApi):
    """The lifecycle handlers, on the same store and verifier as the Tokens API."""

    def routes(self) -> list[Route]:
        """The lifecycle routes under ``/v3/tokens/{token_id}/``."""
        base = "/v3/tokens/{token_id}"
        return [
            Route(base + "/rotate", guarded(self.rotate), methods=["POST"]),
            Route(base + "/rotate/expire", guarded(self.end_grace), methods=["POST"]),
            Route(base + "/disable", guarded(self.disable), methods=["POST"]),
            Route(base + "/enable", guarded(self.enable), methods=["POST"]),
        ]

    async def rotate(self, request: Request) -> Response:
        """``POST /v3/tokens/{id}/rotate``: the new secret is in this answer only."""
        claims = await self.caller(request, WRITE_SCOPE)
        grace = await _grace(request)
        rotated = await self.store.rotate_token(
            request.path_params["token_id"], grace_seconds=grace, actor=claims.client_id
        )
        now = datetime.now(UTC)
        out = rotated.record.as_json(now)
        out["token"] = rotated.token
        out["grace_seconds"] = grace
        out["old_secret_expires_at"] = format_datetime(
            (now + timedelta(seconds=grace)).replace(microsecond=0)
        )
        return JSONResponse(out, headers=NO_STORE)

    async def end_grace(self, request: Request) -> Response:
        """``POST /v3/tokens/{id}/rotate/expire``: replaced secrets stop working now."""
        claims = await self.caller(request, WRITE_SCOPE)
        return _token(await self.store.end_rotation_grace(
            request.path_params["token_id"], actor=claims.client_id
        ))

    async def disable(self, request: Request) -> Response:
        """``POST /v3/tokens/{id}/disable``."""
        claims = await self.caller(request, WRITE_SCOPE)
        return _token(await self.store.disable_token(
            request.path_params["token_id"], actor=claims.client_id
        ))

    async def enable(self, request: Request) -> Response:
        """``POST /v3/tokens/{id}/enable``."""
        claims = await self.caller(request, WRITE_SCOPE)
        return _token(await self.store.enable_token(
            request.path_params["token_id"], actor=claims.client_id
        ))


def _token(record: TokenRecord) -> Response:
    return JSONResponse(record.as_json(datetime.now(UTC)), headers=NO_STORE)


async def _grace(request: Request) -> int:
    """``grace_seconds`` from an optional JSON body (none, or ``{}``: the default)."""
    raw = await read_body(request, MAX_BODY_BYTES)
    if not raw.strip():
        return DEFAULT_GRACE_SECONDS
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(
            "body", "the body is not valid JSON", 'send {"grace_seconds": 3600} or no body'
        ) from None
    if not isinstance(body, dict) or set(body) - {"grace_seconds"}:
        raise BadRequest(
            "body", "the body may hold only grace_seconds",
            'send {"grace_seconds": 3600} (0 ends the old secret at once) or no body',
        )
    grace = body.get("grace_seconds", DEFAULT_GRACE_SECONDS)
    try:
        return check_grace(grace)
    except ValueError as exc:
        raise BadRequest(
            "grace_seconds", str(exc), 'e.g. {"grace_seconds": 86400}; 0 ends it at once'
        ) from None
