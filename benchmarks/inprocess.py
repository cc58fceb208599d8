"""Section 1: per-request cost in process, ASGI driven directly on one event loop.

Variants (same Starlette app inside, same prebuilt scope, no-op receive/send):
bare; Starlette's ``AuthenticationMiddleware`` with a dict-backed backend (identification
only); a ``BaseHTTPMiddleware`` doing the same dict check (what many tutorials write);
``TokenGuard`` with a warm cache doing the full check (token, API, table source, origin);
and ``TokenGuard`` on a query source (its bare baseline is the same app on the query URL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    SimpleUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import interleaved, median
from token_guard.adapters.asgi import ASGIApp, Message, Scope, TokenGuard
from token_guard.stores.memory import MemoryStore

SECTION = "1. in-process ASGI, per request"
CONNECTIONS = {"carto_dw": "bigquery"}
TABLE = "proj.ds.stores"
QUERY = "SELECT name, geom FROM proj.ds.stores WHERE city = @city"
ORIGIN = "https://maps.example.com"
TOKEN_BODY: dict[str, Any] = {
    "name": "benchmark",
    "grants": [
        {"connection_name": "carto_dw", "source": TABLE},
        {"connection_name": "carto_dw", "source": "proj.shared.*"},
        {"connection_name": "carto_dw", "source": QUERY},
    ],
    "referers": ["https://*.example.com", "http://localhost:*"],
    "allowed_apis": ["maps", "sql"],
}
TABLE_PATH = "/v3/maps/carto_dw/table"
TABLE_QUERY = f"name={TABLE}&v=3.4&client=deckgl-carto".encode()
QUERY_PATH = "/v3/sql/carto_dw/query"
QUERY_PARAMETERS = '{"city": "Boston"}'
QUERY_QUERY = f"q={quote(QUERY)}&queryParameters={quote(QUERY_PARAMETERS)}&v=3.4".encode()


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def inner_app() -> Starlette:
    """The app every variant wraps: two CARTO-shaped routes answering ``ok``."""
    return Starlette(routes=[Route(TABLE_PATH.replace("carto_dw", "{conn}"), _ok),
                             Route(QUERY_PATH.replace("carto_dw", "{conn}"), _ok)])


class DictBackend(AuthenticationBackend):
    """Identification only: the bearer token must be a key of a dict."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = tokens

    async def authenticate(
        self, conn: HTTPConnection
    ) -> tuple[AuthCredentials, BaseUser] | None:
        """The user the token names, None without a header, an error for an unknown one."""
        header = conn.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        name = self.tokens.get(token)
        if scheme.lower() != "bearer" or name is None:
            raise AuthenticationError("unknown token")
        return AuthCredentials(["authenticated"]), SimpleUser(name)


class DictCheckMiddleware(BaseHTTPMiddleware):
    """The tutorial version: the same dict check in a ``BaseHTTPMiddleware``."""

    def __init__(self, app: ASGIApp, tokens: Mapping[str, str]) -> None:
        super().__init__(app)
        self.tokens = tokens

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """401 unless the bearer token is a key of the dict."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            return JSONResponse({"error": "unknown token"}, status_code=401)
        return await call_next(request)


def http_scope(path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> Scope:
    """An HTTP GET scope as uvicorn builds it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def request_headers(token: str) -> list[tuple[bytes, bytes]]:
    """What the CARTO JS client sends from a web page."""
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"accept", b"application/json"),
        (b"authorization", f"Bearer {token}".encode("ascii")),
        (b"origin", ORIGIN.encode("ascii")),
        (b"user-agent", b"benchmark"),
    ]


_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> Message:
    return _REQUEST


async def _send(message: Message) -> None:
    return None


async def response_of(app: ASGIApp, scope: Scope) -> tuple[int, bytes]:
    """Status and body of one request (to check a variant answers what it should)."""
    status = 0
    body = b""

    async def send(message: Message) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(dict(scope), _receive, send)
    return status, body


async def _timed(app: ASGIApp, scope: Scope, n: int) -> float:
    # CPU time of this thread: the machine is shared, and waiting for a core is not cost.
    started = time.thread_time()
    for _ in range(n):
        await app(dict(scope), _receive, _send)
    return time.thread_time() - started


def batch_of(loop: asyncio.AbstractEventLoop, app: ASGIApp, scope: Scope) -> Callable[[int], float]:
    """A timing batch: ``n`` requests of ``scope`` to ``app`` on ``loop``."""
    return lambda n: loop.run_until_complete(_timed(app, scope, n))


async def guarded_app(inner: ASGIApp) -> tuple[TokenGuard, str]:
    """TokenGuard over a MemoryStore holding the benchmark token; the token's secret."""
    store = MemoryStore()
    issued = await store.create_token(TOKEN_BODY)
    return TokenGuard(inner, store=store, connections=CONNECTIONS), issued.token


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Measure the variants interleaved; rows, targets and the guardrail."""
    loop = asyncio.new_event_loop()
    try:
        return _run(loop, budget)
    finally:
        loop.close()


def _run(loop: asyncio.AbstractEventLoop, budget: Budget) -> tuple[list[Row], list[Threshold]]:
    inner = inner_app()
    guard, token = loop.run_until_complete(guarded_app(inner))
    tokens = {token: "benchmark"}
    table = http_scope(TABLE_PATH, TABLE_QUERY, request_headers(token))
    query = http_scope(QUERY_PATH, QUERY_QUERY, request_headers(token))
    apps: dict[str, tuple[ASGIApp, Scope, str]] = {
        "bare": (inner, table, "the Starlette app alone, table URL"),
        "authmw": (AuthenticationMiddleware(inner, backend=DictBackend(tokens)), table,
                   "Starlette AuthenticationMiddleware, dict backend (identification only)"),
        "basehttp": (DictCheckMiddleware(inner, tokens), table,
                     "BaseHTTPMiddleware doing the same dict check"),
        "tg_table": (guard, table, "TokenGuard, warm cache: token + API + table + origin"),
        "bare_query": (inner, query, "the Starlette app alone, query URL"),
        "tg_query": (guard, query, "TokenGuard, warm cache: token + API + query + origin"),
    }
    for name, (app, scope, _) in apps.items():
        status, body = loop.run_until_complete(response_of(app, scope))
        if (status, body) != (200, b"ok"):
            raise RuntimeError(f"variant {name} answered {status} {body!r}, not 200 ok")
    samples = interleaved(
        {name: batch_of(loop, app, scope) for name, (app, scope, _) in apps.items()},
        rounds=budget.rounds, batch_seconds=budget.batch_seconds,
    )
    loop.run_until_complete(guard.guard.resolver.close())
    us = {name: median(s) * 1e6 for name, s in samples.items()}
    over = {name: us[name] - us["bare_query" if name == "tg_query" else "bare"] for name in us}
    rows = [Row(SECTION, f"{name}: per request", us[name], "µs", apps[name][2]) for name in us]
    for name in ("authmw", "basehttp", "tg_table", "tg_query"):
        rows.append(Row(SECTION, f"{name}: overhead over bare", over[name], "µs"))
    full_vs_auth = ratio(over["tg_table"], over["authmw"])
    rows += [
        Row(SECTION, "ratio: TokenGuard full check / AuthMiddleware (overheads)", full_vs_auth,
            "x", "both minus bare; the target"),
        Row(SECTION, "ratio: TokenGuard full check / AuthMiddleware (per request)",
            us["tg_table"] / us["authmw"], "x", "whole request, app included"),
        Row(SECTION, "ratio: TokenGuard full check / BaseHTTPMiddleware (overheads)",
            ratio(over["tg_table"], over["basehttp"]), "x"),
        Row(SECTION, "ratio: TokenGuard full check / bare (per request)",
            us["tg_table"] / us["bare"], "x"),
        Row(SECTION, "ratio: TokenGuard query check / bare (per request)",
            us["tg_query"] / us["bare_query"], "x"),
    ]
    thresholds = [
        Threshold("TokenGuard full check / AuthenticationMiddleware (overheads)",
                  full_vs_auth, 1.0, True, "x"),
        Threshold("cached query check (overhead over bare)", over["tg_query"], 5.0, True, "µs"),
        # Reported, not failing: time drifts with load (the instruction count is the guardrail).
        Threshold("full check > 2x AuthenticationMiddleware (time)", full_vs_auth, 2.0, True,
                  "x"),
    ]
    return rows, thresholds


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is not positive (an overhead lost in noise has no ratio)."""
    return a / b if b > 0 else float("nan")


async def profile_full_check(requests: int = 50_000) -> None:
    """The warm full check in a loop, for a profiler (``python -m benchmarks.inprocess``)."""
    guard, token = await guarded_app(inner_app())
    scope = http_scope(TABLE_PATH, TABLE_QUERY, request_headers(token))
    await _timed(guard, scope, requests)
    await guard.guard.resolver.close()


if __name__ == "__main__":
    import cProfile
    import pstats

    with cProfile.Profile() as profiler:
        asyncio.run(profile_full_check())
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
