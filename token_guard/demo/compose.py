"""The demo server as one ASGI app: the management app beside the guarded data API, one port.

Layout (outermost first)::

    StoreLifespan(store)                  opens the token store at startup, closes it last
      └─ tg.one_port (management.one_port: the split and its security choices)
           ├─ management paths ─► the management app (Tokens API, OAuth, JWKS, OpenAPI,
           │                      Developers page): not behind TokenGuard, it has OAuth
           └─ everything else  ─► CORSMiddleware ─► TokenGuard ─► the demo data API

Security choices:

- CORS sits outside the guard so a browser can read the guard's 401/403 bodies; it allows
  every origin (``*``), because websites are restricted per token by its ``referers``, and
  it never allows credentials (cookies): tokens travel in ``Authorization`` only.
"""

from __future__ import annotations

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
from token_guard.management.one_port import one_port
from token_guard.stores.base import TokenStore

__all__ = ["DemoServer", "StoreLifespan", "build_demo_server"]

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
    return DemoServer(StoreLifespan(one_port(guarded=api, management=management), store=store),
                      management)
