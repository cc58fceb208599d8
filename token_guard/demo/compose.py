"""The demo server as one ASGI app: the management app beside the guarded data API, one port.

Layout (outermost first)::

    StoreLifespan(store)                  opens the token store at startup, closes it last
      └─ ManagementSplit
           ├─ management paths ─► the management app (Tokens API, OAuth, JWKS, OpenAPI,
           │                      Developers page): not behind TokenGuard, it has OAuth
           └─ everything else  ─► CORSMiddleware ─► TokenGuard ─► the demo data API

Security choices:

- The split is decided on the *raw* path (``scope["raw_path"]``, the bytes on the wire),
  by segment-exact prefixes: ``/v3/tokens`` and ``/v3/tokens/...`` go to management,
  ``/v3/tokensX`` does not. Everything that is not a management path reaches TokenGuard,
  which sees the same raw path and denies what it cannot classify.
- A management-looking path with a dot segment (``/v3/tokens/../sql/...``), an encoded dot,
  slash or backslash, or a raw backslash is refused here (400): no layer behind gets to
  interpret it differently from this one.
- CORS sits outside the guard so a browser can read the guard's 401/403 bodies; it allows
  every origin (``*``), because websites are restricted per token by its ``referers``, and
  it never allows credentials (cookies): tokens travel in ``Authorization`` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from token_guard.adapters.asgi import ASGIApp, Message, Receive, Scope, Send, TokenGuard
from token_guard.config import Settings
from token_guard.core.connections import normalize_connections
from token_guard.demo.app import CONNECTIONS, build_app
from token_guard.management.app import create_management_app
from token_guard.management.keys import SigningKeys
from token_guard.stores.base import TokenStore

__all__ = [
    "MANAGEMENT_PATHS",
    "MANAGEMENT_TREES",
    "DemoServer",
    "ManagementSplit",
    "StoreLifespan",
    "build_demo_server",
    "is_management_path",
]

#: Paths served by the management app exactly as written.
MANAGEMENT_PATHS: frozenset[bytes] = frozenset(
    {b"/v3/tokens", b"/v3/audit", b"/openapi.json", b"/developers"}
)
#: Path prefixes (ending in "/") whose whole subtree the management app serves.
MANAGEMENT_TREES: tuple[bytes, ...] = (
    b"/v3/tokens/", b"/v3/audit/", b"/oauth/", b"/.well-known/", b"/developers/",
)
# Spellings that some layer might decode or normalise into a different path.
_AMBIGUOUS = (b"%2e", b"%2f", b"%5c", b"\\")


def is_management_path(raw_path: bytes) -> bool:
    """Whether the management app serves ``raw_path`` (segment-exact prefixes, raw bytes)."""
    return raw_path in MANAGEMENT_PATHS or raw_path.startswith(MANAGEMENT_TREES)


def _ambiguous(raw_path: bytes) -> bool:
    lowered = raw_path.lower()
    if any(marker in lowered for marker in _AMBIGUOUS):
        return True
    return any(segment in (b".", b"..") for segment in raw_path.split(b"/"))


_AMBIGUOUS_BODY = json.dumps({
    "error": "The path has a dot segment or an encoded '.', '/' or '\\'.",
    "hint": "Send the plain path, e.g. /v3/tokens/<id>; nothing here needs such a path.",
    "code": "malformed_request",
}).encode("utf-8")


class ManagementSplit:
    """Send management paths to ``management`` and everything else to ``api``."""

    def __init__(self, *, management: ASGIApp, api: ASGIApp) -> None:
        self.management = management
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            # Lifespan goes to the guarded side: TokenGuard flushes its cache on shutdown.
            await self.api(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        if not is_management_path(raw_path):
            await self.api(scope, receive, send)
            return
        if _ambiguous(raw_path):
            await _refuse_ambiguous(scope, send)
            return
        await self.management(scope, receive, send)


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


class StoreLifespan:
    """Open ``store`` when the server starts and close it after the app has shut down."""

    def __init__(self, app: ASGIApp, *, store: TokenStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        store = self.store

        async def receive_opening() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                # Fail the startup now rather than answer 503 to every request later.
                await store.open()
            return message

        async def send_closing(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await store.close()
            await send(message)

        await self.app(scope, receive_opening, send_closing)


@dataclass(frozen=True, slots=True)
class DemoServer:
    """The composed demo app, and the management app inside it (to list its pages)."""

    app: ASGIApp
    management: Starlette

    def serves(self, path: str) -> bool:
        """Whether the management app has a route at ``path`` (e.g. ``/developers``)."""
        return any(getattr(route, "path", None) == path for route in self.management.routes)


def build_demo_server(
    data_dir: Path, store: TokenStore, *, issuer: str, keys: SigningKeys,
    audience: str = "token-guard", connections: Mapping[str, str] = CONNECTIONS,
    config: Settings | None = None,
) -> DemoServer:
    """The whole demo: management beside CORS + TokenGuard + the data API, on one app.

    With ``config`` (the demo's ``token_guard.toml``), the guard takes its connections and
    options from it and the Tokens API refuses grants it could not serve.
    """
    data: ASGIApp = build_app(data_dir)
    if config is None:
        config = Settings(connections=normalize_connections(connections))
    guarded = TokenGuard(data, store=store, config=config)
    api = CORSMiddleware(
        guarded,
        allow_origins=["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["WWW-Authenticate"],
        allow_credentials=False,
    )
    management = create_management_app(store, issuer=issuer, audience=audience, keys=keys)
    split = ManagementSplit(management=management, api=api)
    return DemoServer(StoreLifespan(split, store=store), management)
