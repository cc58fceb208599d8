"""TokenGuard end to end: real HTTP through uvicorn on a loopback port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from token_guard.asgi import TokenGuard, get_token
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


def assert_denied(response: httpx.Response, status: int, code: str, secret: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["error"] and body["hint"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["cache-control"] == "no-store"
    if secret:
        assert secret not in response.text


def test_allowed_request_reaches_handler_with_token(env: Env) -> None:
    issued = env.create(FULL)
    r = env.get("/v3/maps/carto_dw/table?name=proj.ds.stores&v=3.4&client=deck", issued.token)
    assert r.status_code == 200, r.text
    assert r.json()["token_id"] == issued.id
    assert r.json()["token_name"] == "full"
    assert env.events[-1].allowed and env.events[-1].token_id == issued.id


def test_outside_prefix_passes_untouched(env: Env) -> None:
    assert env.get("/health").text == "open"


@pytest.mark.parametrize(
    ("path", "auth", "status", "code"),
    [
        pytest.param("/v3/maps/carto_dw/table?name=proj.ds.stores", None, 401, "missing_token",
                     id="missing"),
        pytest.param("/v3/maps/carto_dw/table?name=proj.ds.stores", "Basic abc", 401,
                     "malformed_token", id="not-bearer"),
        pytest.param("/v3/maps/carto_dw/table?name=proj.ds.stores", "Bearer tgk_nope", 401,
                     "malformed_token", id="bad-checksum"),
        pytest.param("/v3/nothing/here", "Bearer x", 403, "unknown_route", id="unknown-route"),
        pytest.param("/v3/maps/carto_dw/%2e%2e/table?name=x", "Bearer x", 400, "malformed_request",
                     id="dot-segment"),
        pytest.param("/v3/maps/carto_dw/table?name=a.b.c&name=a.b.c", "Bearer x", 400,
                     "ambiguous_request", id="duplicate-source"),
    ],
)
def test_refusals_before_lookup(env: Env, path: str, auth: str | None, status: int,
                                code: str) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = env.client.get(path, headers=headers)
    assert_denied(r, status, code)


def test_unknown_well_formed_token_is_401(env: Env) -> None:
    from token_guard.secret import new_secret

    secret = new_secret()
    r = env.get("/v3/maps/carto_dw/table?name=proj.ds.stores", secret)
    assert_denied(r, 401, "invalid_token", secret)


def test_policy_denials(env: Env) -> None:
    issued = env.create(FULL)
    t = issued.token
    assert_denied(env.get("/v3/lds/geocoding/geocode?address=x", t), 403, "api_not_allowed", t)
    assert_denied(env.get("/v3/maps/carto_dw/table?name=proj.ds.secret", t), 403,
                  "source_not_granted", t)
    assert_denied(env.get("/v3/sql/carto_dw/query?q=DELETE%20FROM%20proj.ds.stores", t), 403,
                  "query_not_allowed", t)
    assert env.get("/v3/sql/carto_dw/query?q=SELECT%20*%20FROM%20proj.shared.x", t).status_code \
        == 200


def test_origin_restricted_token(env: Env) -> None:
    issued = env.create(dict(FULL, referers=["https://app.example.com"]))
    path = "/v3/maps/carto_dw/table?name=proj.ds.stores"
    assert env.get(path, issued.token, Origin="https://app.example.com").status_code == 200
    assert_denied(env.get(path, issued.token), 403, "origin_not_allowed")
    assert_denied(env.get(path, issued.token, Origin="https://evil.example"), 403,
                  "origin_not_allowed")
    assert_denied(env.get(path, issued.token, Origin="null"), 403, "origin_not_allowed")


def test_two_different_tokens_are_ambiguous(env: Env) -> None:
    a = env.create(FULL)
    b = env.create(FULL)
    r = env.client.get(
        "/v3/maps/carto_dw/table?name=proj.ds.stores",
        headers=[("Authorization", f"Bearer {a.token}"), ("Authorization", f"Bearer {b.token}")],
    )
    assert_denied(r, 400, "ambiguous_request", a.token)


def test_query_string_token_refused_unless_enabled(env: Env) -> None:
    issued = env.create(FULL)
    r = env.client.get(f"/v3/maps/carto_dw/table?name=proj.ds.stores&access_token={issued.token}")
    assert_denied(r, 400, "malformed_request", issued.token)
    assert all(issued.token not in e.path for e in env.events)
    assert any("access_token=REDACTED" in e.path for e in env.events)


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


def test_revocation_takes_effect(env: Env) -> None:
    issued = env.create(FULL)
    path = "/v3/maps/carto_dw/table?name=proj.ds.stores"
    assert env.get(path, issued.token).status_code == 200
    env.server.call(lambda: env.store.revoke_token(issued.id))
    assert_denied(env.get(path, issued.token), 401, "revoked_token", issued.token)


def test_expired_token(env: Env) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    issued = env.create(dict(FULL, expiration_date=soon))
    path = "/v3/maps/carto_dw/table?name=proj.ds.stores"
    assert env.get(path, issued.token).status_code == 200
    time.sleep(1.1)
    assert_denied(env.get(path, issued.token), 401, "expired_token", issued.token)


def test_body_is_read_for_the_source_and_replayed_intact(env: Env) -> None:
    issued = env.create(FULL)
    payload = {"q": "SELECT name FROM proj.shared.cities", "queryParameters": {"x": 1},
               "pad": "é" * 100}
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    r = env.client.post("/v3/sql/carto_dw/query", content=raw, headers={
        "Authorization": f"Bearer {issued.token}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["body"].encode("utf-8") == raw
    bad = {"q": "SELECT * FROM proj.ds.secret"}
    r = env.client.post("/v3/sql/carto_dw/query", json=bad,
                        headers={"Authorization": f"Bearer {issued.token}"})
    assert_denied(r, 403, "source_not_granted")


def test_body_source_conflicting_with_query_string(env: Env) -> None:
    issued = env.create(FULL)
    r = env.client.post("/v3/sql/carto_dw/query?q=SELECT%201",
                        json={"q": "SELECT * FROM proj.ds.secret"},
                        headers={"Authorization": f"Bearer {issued.token}"})
    assert_denied(r, 400, "ambiguous_request")


def test_body_over_limit_is_413(env: Env) -> None:
    issued = env.create(FULL)
    r = env.client.post("/v3/sql/carto_dw/query", json={"q": "SELECT 1", "pad": "x" * 5000},
                        headers={"Authorization": f"Bearer {issued.token}"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"


def test_non_json_body_is_400(env: Env) -> None:
    issued = env.create(FULL)
    r = env.client.post("/v3/sql/carto_dw/query", content=b"q=SELECT 1",
                        headers={"Authorization": f"Bearer {issued.token}"})
    assert_denied(r, 400, "malformed_request")


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


def test_store_down_uncached_token_is_503() -> None:
    class DownStore(MemoryStore):
        async def get_by_secret_hash(self, secret_hash: str) -> tg.TokenRecord | None:
            raise tg.StoreUnavailable("the store is down")

    store = DownStore()
    with serve(TokenGuard(inner_app(), store=store, connections=CONNECTIONS)) as server:
        issued = server.call(lambda: store.create_token(FULL))
        r = httpx.get(f"{server.url}/v3/maps/carto_dw/table?name=proj.ds.stores",
                      headers={"Authorization": f"Bearer {issued.token}"})
        assert r.status_code == 503
        assert r.json()["code"] == "store_unavailable"
        assert r.headers["retry-after"]


def test_bad_configuration_fails_at_startup() -> None:
    with pytest.raises(tg.ConfigurationError, match="connections"):
        TokenGuard(inner_app(), store=MemoryStore(), connections={"c": "nosuchdialect"})
    with pytest.raises(tg.ConfigurationError, match="max_body_bytes"):
        TokenGuard(inner_app(), store=MemoryStore(), connections=CONNECTIONS, max_body_bytes=0)


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


def test_two_different_origin_headers_are_ambiguous(env: Env) -> None:
    issued = env.create(dict(FULL, referers=["https://app.example.com"]))
    r = env.client.get(
        "/v3/maps/carto_dw/table?name=proj.ds.stores",
        headers=[("Authorization", f"Bearer {issued.token}"),
                 ("Origin", "https://app.example.com"), ("Origin", "https://evil.example")],
    )
    assert_denied(r, 400, "ambiguous_request", issued.token)


def test_duplicate_json_keys_are_refused(env: Env) -> None:
    issued = env.create(FULL)
    raw = b'{"q": "SELECT * FROM proj.shared.x", "q": "SELECT * FROM proj.ds.secret"}'
    r = env.client.post("/v3/sql/carto_dw/query", content=raw, headers={
        "Authorization": f"Bearer {issued.token}", "Content-Type": "application/json"})
    assert_denied(r, 400, "malformed_request", issued.token)


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    from token_guard.bodies import parse_body

    raw = b'{"q": "SELECT 1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused = parse_body(raw, "application/json")
    assert isinstance(refused, tg.Denial) and refused.code == "malformed_request"


@pytest.mark.parametrize(
    ("expression", "status"),
    [
        pytest.param("count(*)", 200, id="plain-aggregate"),
        pytest.param("avg(revenue) AS r, max(size) AS s", 200, id="several"),
        pytest.param("(SELECT max(salary) FROM proj.ds.secret)", 403, id="subquery-ungranted"),
        pytest.param("(SELECT count(*) FROM proj.shared.cities)", 200, id="subquery-granted"),
        pytest.param("1; DROP TABLE proj.ds.stores", 403, id="statement-break"),
        pytest.param("1 FROM proj.ds.secret --", 403, id="from-smuggling"),
    ],
)
def test_aggregation_expression_is_checked_as_sql(env: Env, expression: str,
                                                  status: int) -> None:
    issued = env.create(FULL)
    r = env.client.get("/v3/maps/carto_dw/table",
                       params={"name": "proj.ds.stores", "aggregationExp": expression},
                       headers={"Authorization": f"Bearer {issued.token}"})
    assert r.status_code == status, r.text


def test_extra_sql_functions_are_opt_in() -> None:
    from datetime import UTC, datetime

    from token_guard.guard import Guard
    from token_guard.records import TokenRecord
    from token_guard.spec import parse_token_spec

    record = TokenRecord("tok_x", parse_token_spec(FULL), datetime.now(UTC))
    facts = tg.RequestFacts("sql", "carto_dw", (tg.Source(
        "query", "SELECT `carto-un`.carto.H3_FROMGEOGPOINT(geom, 5) FROM proj.ds.stores"),))
    strict = Guard(store=MemoryStore(), connections=CONNECTIONS)
    denial = strict.policy.decide(strict.policy.compile(record), facts, time.time())
    assert denial is not None and denial.code == "query_not_allowed"
    assert "H3_FROMGEOGPOINT" in denial.message and "allowed_functions" in denial.hint
    opened = Guard(store=MemoryStore(), connections=CONNECTIONS,
                   allowed_functions=["carto-un.carto.*"])
    assert opened.policy.decide(opened.policy.compile(record), facts, time.time()) is None
    with pytest.raises(tg.ConfigurationError, match="allowed_functions"):
        Guard(store=MemoryStore(), connections=CONNECTIONS, allowed_functions="udf")


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
