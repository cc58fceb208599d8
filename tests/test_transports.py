"""One table of requests, run against both adapters over real HTTP: ASGI ``TokenGuard`` under
uvicorn, WSGI ``TokenGuardWSGI`` under werkzeug and waitress (threaded). Each case must get
the expected status and code, and the same status, JSON body and ``WWW-Authenticate`` header
from every server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import token_guard as tg
from tests.servers import Reply, send, serve, serve_wsgi
from tests.tokens import CONNECTIONS, FULL
from token_guard.asgi import TokenGuard, get_token
from token_guard.secret import new_secret
from token_guard.stores import MemoryStore
from token_guard.wsgi import TokenGuardWSGI

TOKENS: dict[str, dict[str, Any]] = {
    "full": FULL,
    "site": dict(FULL, name="site", referers=["https://app.example.com"]),
    "revoked": dict(FULL, name="revoked"),
}
UNKNOWN = new_secret()  # well formed, in no store
MAX_BODY = 4096
ECHO_PATHS = ("/v3/maps/{conn}/table", "/v3/sql/{conn}/query", "/v3/lds/geocoding/geocode")


# -- two equivalent apps: Starlette and Flask, each echoing the token name and the body ------
async def starlette_echo(request: Request) -> JSONResponse:
    """The resolved token's name and the body the app received."""
    token = get_token(request.scope)
    body = (await request.body()).decode("utf-8")
    return JSONResponse({"token": token.name if token else None, "body": body})


async def starlette_health(request: Request) -> JSONResponse:
    """An open endpoint outside the prefix."""
    return JSONResponse({"open": True})


def starlette_app() -> Starlette:
    """The ASGI app under test."""
    routes = [Route(p, starlette_echo, methods=["GET", "POST"]) for p in ECHO_PATHS]
    return Starlette(routes=[*routes, Route("/health", starlette_health)])


def flask_app() -> Flask:
    """The WSGI app under test, answering as ``starlette_app`` does."""
    app = Flask(__name__)

    def echo(**_: str) -> Response:
        token = request.environ.get("token_guard.token")
        return jsonify(token=token.name if token else None,
                       body=request.get_data().decode("utf-8"))

    for path in ECHO_PATHS:
        rule = path.replace("{conn}", "<conn>")
        app.add_url_rule(rule, rule, echo, methods=["GET", "POST"])
    app.add_url_rule("/health", "health", lambda: jsonify(open=True))
    return app


class CountingStore(MemoryStore):
    """A real MemoryStore that counts secret lookups and makes each one take a while."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.lookups = 0
        self.delay = delay

    async def get_by_secret_hash(self, secret_hash: str) -> tg.TokenRecord | None:
        self.lookups += 1
        await asyncio.sleep(self.delay)
        return await super().get_by_secret_hash(secret_hash)


@dataclass
class Target:
    """One server: its port and the secrets of the tokens created in its own store."""

    name: str
    port: int
    secrets: dict[str, str]


def make_tokens(call: Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any],
                store: MemoryStore) -> dict[str, str]:
    """Create the TOKENS in ``store`` (via ``call``, on the loop the store lives on)."""
    secrets = {}
    for kind, body in TOKENS.items():
        issued = call(partial(store.create_token, body))
        secrets[kind] = issued.token
        if kind == "revoked":
            call(partial(store.revoke_token, issued.id))
    secrets["unknown"] = UNKNOWN
    return secrets


@pytest.fixture(scope="module")
def targets() -> Iterator[list[Target]]:
    with ExitStack() as stack:
        found = []
        store = MemoryStore()
        asgi = stack.enter_context(serve(TokenGuard(
            starlette_app(), store=store, connections=CONNECTIONS, max_body_bytes=MAX_BODY)))
        found.append(Target("uvicorn", asgi.port, make_tokens(asgi.call, store)))
        for kind in ("werkzeug", "waitress"):
            store = MemoryStore()
            app = flask_app()
            guard = TokenGuardWSGI(app.wsgi_app, store=store, connections=CONNECTIONS,
                                   max_body_bytes=MAX_BODY)
            stack.callback(guard.close)
            app.wsgi_app = guard  # type: ignore[method-assign]
            server = stack.enter_context(serve_wsgi(app, kind))
            found.append(Target(kind, server.port, make_tokens(guard.call, store)))
        yield found


@dataclass(frozen=True, slots=True)
class Case:
    """A request (``{kind}`` in a header stands for that token's secret) and its answer."""

    path: str
    headers: Sequence[tuple[str, str]] = ()
    status: int = 200
    code: str | None = None
    method: str = "GET"
    body: bytes | None = None
    chunked: bool = False
    # Servers that rewrite this request before any WSGI code sees it (no raw target left):
    # the guard then judges the path the app routes on, with the usual token checks.
    rewritten_by: frozenset[str] = frozenset()


def auth(kind: str = "full") -> tuple[str, str]:
    """An Authorization header for the token ``kind`` (filled in per server)."""
    return ("Authorization", f"Bearer {{{kind}}}")


TABLE = "/v3/maps/carto_dw/table?name=proj.ds.stores"
QUERY = "/v3/sql/carto_dw/query"
JSON = ("Content-Type", "application/json")
SITE = "https://app.example.com"


def body(**fields: Any) -> bytes:
    """A JSON request body."""
    return json.dumps(fields).encode()


CASES = [
    pytest.param(Case(TABLE, [auth()]), id="allowed"),
    pytest.param(Case("/v3/maps/carto_dw/%74able?name=proj.ds.stores", [auth()]),
                 id="allowed-encoded-letter"),
    pytest.param(Case("/health"), id="outside-prefix"),
    pytest.param(Case(QUERY, [auth(), JSON], method="POST",
                      body=body(q="SELECT a FROM proj.shared.t", p="é")), id="allowed-body"),
    pytest.param(Case(QUERY, [auth(), JSON], method="POST", chunked=True,
                      body=body(q="SELECT a FROM proj.shared.t", pad="x" * 2000)),
                 id="allowed-chunked-body"),
    pytest.param(Case(TABLE, [auth(), auth()]), id="same-token-twice"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", SITE)]), id="allowed-origin"),
    pytest.param(Case(TABLE, [auth("site"), ("Referer", SITE + "/map?c=1,2")]),
                 id="allowed-referer-with-comma"),
    # 401
    pytest.param(Case(TABLE, status=401, code="missing_token"), id="missing"),
    pytest.param(Case(TABLE, [("Authorization", "Basic abc")], 401, "malformed_token"),
                 id="basic-scheme"),
    pytest.param(Case(TABLE, [("Authorization", "Bearer tgk_nope")], 401, "malformed_token"),
                 id="bad-checksum"),
    pytest.param(Case(TABLE, [auth("unknown")], 401, "invalid_token"), id="unknown-token"),
    pytest.param(Case(TABLE, [auth("revoked")], 401, "revoked_token"), id="revoked"),
    # 403
    pytest.param(Case("/v3/lds/geocoding/geocode?address=x", [auth()], 403, "api_not_allowed"),
                 id="api-not-allowed"),
    pytest.param(Case("/v3/maps/carto_dw/table?name=proj.ds.secret", [auth()], 403,
                      "source_not_granted"), id="source-not-granted"),
    pytest.param(Case(QUERY + "?q=DELETE%20FROM%20proj.ds.stores", [auth()], 403,
                      "query_not_allowed"), id="not-a-read"),
    pytest.param(Case("/v3/nothing/here", [auth()], 403, "unknown_route"), id="unknown-route"),
    pytest.param(Case("/V3/maps/carto_dw/table?name=proj.ds.stores", [auth()], 403,
                      "unknown_route"), id="upper-case-prefix"),
    pytest.param(Case(TABLE, [auth("site")], 403, "origin_not_allowed"), id="no-origin"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", "https://evil.example")], 403,
                      "origin_not_allowed"), id="wrong-origin"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", "null")], 403, "origin_not_allowed"),
                 id="null-origin"),
    # 400: ambiguous or malformed requests, path tricks
    pytest.param(Case(TABLE, [auth(), auth("site")], 400, "ambiguous_request"),
                 id="two-tokens"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", SITE), ("Origin", "https://evil.example")],
                      400, "ambiguous_request"), id="two-origins"),
    pytest.param(Case(TABLE, [auth("site"), ("Referer", SITE + "/"),
                              ("Referer", "https://evil.example/")], 400, "ambiguous_request"),
                 id="two-referers"),
    pytest.param(Case(TABLE + "&name=proj.ds.stores", [auth()], 400, "ambiguous_request"),
                 id="duplicate-source"),
    pytest.param(Case(TABLE + "&access_token=abc", [auth()], 400, "malformed_request"),
                 id="query-token-off"),
    pytest.param(Case("/v3/maps/carto_dw/../table?name=proj.ds.stores", [auth()], 400,
                      "malformed_request"), id="dot-segment"),
    pytest.param(Case("/v3/maps/carto_dw/%2e%2e/table?name=proj.ds.stores", [auth()], 400,
                      "malformed_request"), id="encoded-dot-segment"),
    pytest.param(Case("/v3/maps/carto_dw%2Ftable?name=proj.ds.stores", [auth()], 400,
                      "malformed_request"), id="encoded-slash"),
    # Python's http.server (under werkzeug's dev server) collapses a leading "//" to "/"
    # in the request line itself, so werkzeug passes "/v3/..." on as if it had been sent.
    pytest.param(Case("//v3/maps/carto_dw/table?name=proj.ds.stores", [auth()], 400,
                      "malformed_request", rewritten_by=frozenset({"werkzeug"})),
                 id="leading-double-slash"),
    pytest.param(Case("//v3/maps/carto_dw/table?name=proj.ds.stores", status=400,
                      code="malformed_request", rewritten_by=frozenset({"werkzeug"})),
                 id="leading-double-slash-no-token"),
    pytest.param(Case("/v3/maps//carto_dw/table?name=proj.ds.stores", [auth()], 400,
                      "malformed_request"), id="empty-segment"),
    pytest.param(Case("/v3/maps/carto_dw/table;x?name=proj.ds.stores", [auth()], 400,
                      "malformed_request"), id="matrix-parameter"),
    pytest.param(Case("/v3/maps/carto_dw/table%2525?name=proj.ds.stores", [auth()], 400,
                      "malformed_request"), id="double-encoding"),
    pytest.param(Case(QUERY, [auth()], 400, "malformed_request", "POST", b"q=SELECT 1"),
                 id="body-not-json"),
    pytest.param(Case(QUERY + "?q=SELECT%201", [auth(), JSON], 400, "ambiguous_request", "POST",
                      body(q="SELECT * FROM proj.ds.secret")), id="body-conflicts-with-query"),
    # 413
    pytest.param(Case(QUERY, [auth(), JSON], 413, "body_too_large", "POST",
                      body(q="SELECT 1", pad="x" * MAX_BODY)), id="body-too-large"),
    pytest.param(Case(QUERY, [auth(), JSON], 413, "body_too_large", "POST",
                      body(q="SELECT 1", pad="x" * MAX_BODY), chunked=True),
                 id="chunked-body-too-large"),
]


def run(case: Case, target: Target) -> Reply:
    """Send ``case`` to ``target`` with that server's token secrets."""
    headers = [(name, value.format(**target.secrets)) for name, value in case.headers]
    return send(target.port, case.method, case.path, headers, case.body, chunked=case.chunked)


@pytest.mark.parametrize("case", CASES)
def test_same_answer_from_every_adapter(targets: list[Target], case: Case) -> None:
    answers = {}
    for target in targets:
        reply = run(case, target)
        if target.name in case.rewritten_by:
            # Judged as the normalised request: allowed with the token, refused without.
            with_token = any(name == "Authorization" for name, _ in case.headers)
            assert reply.status == (200 if with_token else 401), (target.name, reply.body)
            continue
        assert reply.status == case.status, (target.name, reply.body)
        parsed = reply.json()
        if case.code is not None:
            assert parsed["code"] == case.code, (target.name, parsed)
            for secret in target.secrets.values():
                assert secret.encode() not in reply.body
        answers[target.name] = (reply.status, parsed, reply.headers.get("www-authenticate"))
    first = next(iter(answers.values()))
    assert all(answer == first for answer in answers.values()), answers


@pytest.mark.parametrize("adapter", ["uvicorn", "waitress"])
def test_concurrent_cache_misses_share_one_store_lookup(adapter: str) -> None:
    """Twelve simultaneous first requests with one token: one store lookup, twelve 200s."""
    store = CountingStore(delay=0.3)
    with ExitStack() as stack:
        if adapter == "uvicorn":
            server = stack.enter_context(serve(TokenGuard(
                starlette_app(), store=store, connections=CONNECTIONS)))
            port, call = server.port, server.call
        else:
            app = flask_app()
            guard = TokenGuardWSGI(app.wsgi_app, store=store, connections=CONNECTIONS)
            stack.callback(guard.close)
            app.wsgi_app = guard  # type: ignore[method-assign]
            port, call = stack.enter_context(serve_wsgi(app, "waitress")).port, guard.call
        token = call(lambda: store.create_token(FULL)).token
        statuses: list[int] = []
        barrier = threading.Barrier(12)

        def hit() -> None:
            barrier.wait()
            statuses.append(send(port, "GET", TABLE, [("Authorization", f"Bearer {token}")])
                            .status)

        threads = [threading.Thread(target=hit) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert statuses == [200] * 12
        assert store.lookups == 1
