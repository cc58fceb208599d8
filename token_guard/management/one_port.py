"""One port for the Tokens API and the guarded API: ``one_port(guarded=..., management=...)``.

Layout::

    one_port(guarded=api, management=create_management_app(store, ...))
      ├─ management paths ─► the management app (Tokens API, OAuth token endpoint, JWKS,
      │                      OpenAPI, Developers page): not behind TokenGuard, it has OAuth
      └─ everything else  ─► ``guarded`` (your app behind TokenGuard, CORS outside it)

The management paths are ``/v3/tokens``, ``/v3/audit``, ``/oauth/...``, ``/.well-known/...``,
``/openapi.json``, ``/developers`` and ``/v3/secret-scanning/github`` (``MANAGEMENT_PATHS``,
``MANAGEMENT_TREES``).

Security choices:

- The split is decided on the path the apps beneath route, the same one TokenGuard
  classifies: the raw path minus ``root_path`` (``uvicorn --root-path``, Starlette ``Mount``,
  FastAPI ``mount``; see ``adapters.asgi.route_path``), by segment-exact prefixes:
  ``/v3/tokens`` and ``/v3/tokens/...`` go to management, ``/v3/tokensX`` does not.
  Everything that is not a management path reaches ``guarded``, whose guard denies what it
  cannot classify; a scope whose path is not under its ``root_path``, or whose
  ``raw_path`` does not decode to its ``path``, goes there too, and TokenGuard refuses it
  (400).
- A management-looking path with a dot segment (``/v3/tokens/../sql/...``), an encoded dot,
  slash or backslash, or a raw backslash is refused here (400): no layer behind gets to
  interpret it differently from this one.
- Lifespan events go to ``guarded`` (TokenGuard flushes usage on shutdown); the management
  app needs none.
"""

from __future__ import annotations

import json

from token_guard.adapters.asgi import ASGIApp, Receive, Scope, Send, served_raw_path

__all__ = ["MANAGEMENT_PATHS", "MANAGEMENT_TREES", "OnePort", "is_management_path", "one_port"]

#: Paths served by the management app exactly as written.
MANAGEMENT_PATHS: frozenset[bytes] = frozenset(
    {b"/v3/tokens", b"/v3/audit", b"/openapi.json", b"/developers",
     b"/v3/secret-scanning/github"}
)
#: Path prefixes (ending in "/") whose whole subtree the management app serves.
MANAGEMENT_TREES: tuple[bytes, ...] = (
    b"/v3/tokens/", b"/v3/audit/", b"/oauth/", b"/.well-known/", b"/developers/",
)
# Spellings that some layer might decode or normalise into a different path.
_AMBIGUOUS = (b"%2e", b"%2f", b"%5c", b"\\")

_AMBIGUOUS_BODY = json.dumps({
    "error": "The path has a dot segment or an encoded '.', '/' or '\\'.",
    "hint": "Send the plain path, e.g. /v3/tokens/<id>; nothing here needs such a path.",
    "code": "malformed_request",
}).encode("utf-8")


def is_management_path(raw_path: bytes) -> bool:
    """Whether the management app serves ``raw_path`` (segment-exact prefixes, raw bytes,
    relative to the root path)."""
    return raw_path in MANAGEMENT_PATHS or raw_path.startswith(MANAGEMENT_TREES)


def _ambiguous(raw_path: bytes) -> bool:
    lowered = raw_path.lower()
    if any(marker in lowered for marker in _AMBIGUOUS):
        return True
    return any(segment in (b".", b"..") for segment in raw_path.split(b"/"))


class OnePort:
    """Send management paths to ``management`` and everything else to ``guarded``."""

    def __init__(self, *, guarded: ASGIApp, management: ASGIApp) -> None:
        self.guarded = guarded
        self.management = management

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.guarded(scope, receive, send)
            return
        raw_path = served_raw_path(scope)
        if raw_path is None:
            await self.guarded(scope, receive, send)  # TokenGuard refuses it (400)
            return
        if not is_management_path(raw_path):
            await self.guarded(scope, receive, send)
            return
        if _ambiguous(raw_path):
            await _refuse_ambiguous(scope, send)
            return
        await self.management(scope, receive, send)


def one_port(*, guarded: ASGIApp, management: ASGIApp) -> OnePort:
    """One ASGI app: ``management`` at the management paths, ``guarded`` everywhere else."""
    return OnePort(guarded=guarded, management=management)


async def _refuse_ambiguous(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "ambiguous path"})
        return
    await send({
        "type": "http.response.start",
        "status": 400,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(_AMBIGUOUS_BODY)).encode("ascii"))],
    })
    await send({"type": "http.response.body", "body": _AMBIGUOUS_BODY})
