"""TokenGuard end to end: real HTTP through uvicorn on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import token_guard as tg
from tests.servers import ServerThread, serve
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.asgi import TokenGuard, get_token
from token_guard.guard import DecisionEvent
from token_guard.stores.memory import MemoryStore


async def echo(request: Request) -> Response:
    token = get_token(request.scope)
    body = await request.body()
    return JSONResponse(
        {
            "token_id": token.id if token else None,
            "token_name": token.name if token else None,
            "body": body.decode("utf-8"),
        }
    )


async def outside(request: Request) -> Response:
    return PlainTextResponse("open")


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def inner_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v3/maps/{conn}/table", echo, methods=["GET", "POST"]),
            Route("/v3/sql/{conn}/query", echo, methods=["GET", "POST"]),
            Route("/v3/lds/geocoding/geocode", echo),
            Route("/health", outside),
            WebSocketRoute("/v3/sql/{conn}/query", ws_endpoint),
        ]
    )


class Env:
    def __init__(self, server: ServerThread, store: MemoryStore, events: list[DecisionEvent]):
        self.server = server
        self.store = store
        self.events = events
        self.client = httpx.Client(base_url=server.url, timeout=10)

    def create(self, body: dict[str, Any]) -> tg.IssuedToken:
        return self.server.call(lambda: self.store.create_token(body))

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.get(path, headers=headers)


@pytest.fixture
def env() -> Iterator[Env]:
    store = MemoryStore()
    events: list[DecisionEvent] = []
    app = CORSMiddleware(
        TokenGuard(inner_app(), store=store, connections=CONNECTIONS,
                   on_decision=events.append, max_body_bytes=4096),
        allow_origins=["https://app.example.com"],
        allow_methods=["*"],
        allow_headers=["*"],
    )
    with serve(app) as server:
        yield Env(server, store, events)


def test_query_string_token_when_enabled() -> None:
    store = MemoryStore()
    guard = TokenGuard(inner_app(), store=store, connections=CONNECTIONS, allow_query_token=True)
    with serve(guard) as server:
        issued = server.call(lambda: store.create_token(FULL))
        base = "/v3/maps/carto_dw/table?name=proj.ds.stores"
        r = httpx.get(f"{server.url}{base}&access_token={issued.token}")
        assert r.status_code == 200
        other = server.call(lambda: store.create_token(FULL))
        r = httpx.get(f"{server.url}{base}&access_token={issued.token}",
                      headers={"Authorization": f"Bearer {other.token}"})
        assert r.status_code == 400 and r.json()["code"] == "ambiguous_request"


def test_preflight_passes_to_cors_layer(env: Env) -> None:
    r = env.client.options("/v3/maps/carto_dw/table", headers={
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    })
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"


def test_browser_can_read_denials_through_cors(env: Env) -> None:
    r = env.get("/v3/maps/carto_dw/table?name=proj.ds.stores",
                Origin="https://app.example.com")
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.json()["code"] == "missing_token"


def test_websocket_refused_before_accept(env: Env) -> None:
    import websockets.sync.client as wsclient
    from websockets.exceptions import InvalidStatus

    url = env.server.url.replace("http", "ws") + "/v3/sql/carto_dw/query?q=SELECT%201"
    with pytest.raises(InvalidStatus) as info:
        wsclient.connect(url)
    assert info.value.response.status_code == 403
    issued = env.create(FULL)
    with wsclient.connect(url, additional_headers={"Authorization": f"Bearer {issued.token}"}) \
            as ws:
        assert ws.recv() == "hello"


def test_fastapi_style_middleware_stack_order() -> None:
    """Documented order: CORS outside the guard, so the browser reads the guard's JSON."""
    app = Starlette(
        routes=[Route("/v3/maps/{conn}/table", echo)],
        middleware=[
            Middleware(CORSMiddleware, allow_origins=["*"], allow_headers=["*"]),
            Middleware(TokenGuard, store=MemoryStore(), connections=CONNECTIONS),
        ],
    )
    with serve(app) as server:
        r = httpx.get(f"{server.url}/v3/maps/carto_dw/table?name=proj.ds.stores",
                      headers={"Origin": "https://x.example"})
        assert r.status_code == 401
        assert r.headers["access-control-allow-origin"] == "*"


def test_ten_thousand_concurrent_requests_with_one_uncached_token_make_one_lookup() -> None:
    import asyncio

    class CountingStore(MemoryStore):
        lookups = 0

        async def get_by_secret_hash(self, secret_hash: str) -> tg.TokenRecord | None:
            CountingStore.lookups += 1
            await asyncio.sleep(0.05)  # a slow store: every request arrives while it waits
            return await super().get_by_secret_hash(secret_hash)

    async def main() -> list[int]:
        store = CountingStore()
        issued = await store.create_token(FULL)
        guard = TokenGuard(inner_app(), store=store, connections=CONNECTIONS)
        statuses: list[int] = []

        async def one() -> None:
            scope = {
                "type": "http", "method": "GET", "path": "/v3/maps/carto_dw/table",
                "raw_path": b"/v3/maps/carto_dw/table", "query_string": b"name=proj.ds.stores",
                "headers": [(b"authorization", f"Bearer {issued.token}".encode())],
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await guard(scope, receive, send)

        await asyncio.gather(*(one() for _ in range(10_000)))
        return statuses

    statuses = asyncio.run(main())
    assert len(statuses) == 10_000 and set(statuses) == {200}
    assert CountingStore.lookups == 1


@pytest.mark.parametrize("name", ["a%63cess_token", "access%5Ftoken", "%61ccess_token",
                                  "access_tok%65n"])
@pytest.mark.parametrize("allow_query_token", [False, True])
def test_an_escaped_access_token_is_read_as_the_app_reads_it(name: str,
                                                            allow_query_token: bool) -> None:
    """Starlette and Flask decode ``a%63cess_token`` to ``access_token``: the guard must
    read it too, or a request decided on the header's token would carry a second token (or
    a query token the guard refuses) to the app."""
    store = MemoryStore()
    guard = TokenGuard(inner_app(), store=store, connections=CONNECTIONS,
                       allow_query_token=allow_query_token)
    with serve(guard) as server:
        header = server.call(lambda: store.create_token(FULL))
        other = server.call(lambda: store.create_token(FULL))
        base = f"{server.url}/v3/maps/carto_dw/table?name=proj.ds.stores"
        for _ in range(2):  # a fresh guard, then the same request warm
            r = httpx.get(f"{base}&{name}={other.token}",
                          headers={"Authorization": f"Bearer {header.token}"})
            assert r.status_code == 400, r.text
            expected = "ambiguous_request" if allow_query_token else "malformed_request"
            assert r.json()["code"] == expected
        r = httpx.get(f"{base}&{name}={other.token}")
        if allow_query_token:
            assert r.status_code == 200  # the escaped name is the token, as the app reads it
        else:
            assert r.status_code == 400 and "access_token" in r.json()["error"]
