"""One table of requests, run against both adapters over real HTTP: ASGI ``TokenGuard`` under
uvicorn, WSGI ``TokenGuardWSGI`` under werkzeug, waitress (threaded, raw request target) and
wsgiref (PATH_INFO only). Each case must get the expected status and code, and the same
status, JSON body and headers from every server; an allowed request reaches the app with its
token and its body intact, and every guarded request reports one decision with no secret.
What only one adapter does (websockets, lifespan, mounting, the WSGI loop thread) is tested
in test_asgi.py and test_wsgi.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import token_guard as tg
from tests.servers import Reply, bearer, send, serve, serve_wsgi
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.asgi import TokenGuard, get_token
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core.secret import new_secret
from token_guard.guard import DecisionEvent
from token_guard.stores import MemoryStore

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


Call = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]
ADAPTERS = ("uvicorn", "werkzeug", "waitress", "wsgiref")


@contextmanager
def serve_guarded(adapter: str, store: MemoryStore, **options: Any) -> Iterator[tuple[int, Call]]:
    """The echo app behind the guard, served by ``adapter``: its port, and how to run a
    coroutine on the loop the store lives on."""
    with ExitStack() as stack:
        if adapter == "uvicorn":
            server = stack.enter_context(serve(TokenGuard(
                starlette_app(), store=store, connections=CONNECTIONS, **options)))
            yield server.port, server.call
        else:
            app = flask_app()
            guard = TokenGuardWSGI(app.wsgi_app, store=store, connections=CONNECTIONS,
                                   **options)
            stack.callback(guard.close)
            app.wsgi_app = guard  # type: ignore[method-assign]
            yield stack.enter_context(serve_wsgi(app, adapter)).port, guard.call  # type: ignore[arg-type]


@dataclass
class Target:
    """One server: its port, the tokens created in its own store (secret and id by kind)
    and the decisions its guard reported."""

    name: str
    port: int
    call: Call
    store: MemoryStore
    secrets: dict[str, str]
    ids: dict[str, str]
    events: list[DecisionEvent]


def make_tokens(call: Call, store: MemoryStore) -> tuple[dict[str, str], dict[str, str]]:
    """Create the TOKENS in ``store`` (via ``call``, on the loop the store lives on)."""
    secrets, ids = {}, {}
    for kind, token_body in TOKENS.items():
        issued = call(partial(store.create_token, token_body))
        secrets[kind], ids[kind] = issued.token, issued.id
        if kind == "revoked":
            call(partial(store.revoke_token, issued.id))
    secrets["unknown"] = UNKNOWN
    return secrets, ids


@pytest.fixture(scope="module")
def targets() -> Iterator[list[Target]]:
    with ExitStack() as stack:
        found = []
        for adapter in ADAPTERS:
            store, events = MemoryStore(), list[DecisionEvent]()
            port, call = stack.enter_context(serve_guarded(
                adapter, store, max_body_bytes=MAX_BODY, on_decision=events.append))
            found.append(Target(adapter, port, call, store, *make_tokens(call, store), events))
        yield found


@dataclass(frozen=True, slots=True)
class Case:
    """A request (``{kind}`` in the path or a header stands for that token's secret) and its
    answer."""

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
    # Servers this request is not sent to (wsgiref cannot read a chunked body).
    skipped_by: frozenset[str] = frozenset()
    token: str = "full"  # the token the handler sees when the request is allowed


def auth(kind: str = "full") -> tuple[str, str]:
    """An Authorization header for the token ``kind`` (filled in per server)."""
    return ("Authorization", f"Bearer {{{kind}}}")


TABLE = "/v3/maps/carto_dw/table?name=proj.ds.stores"
QUERY = "/v3/sql/carto_dw/query"
JSON = ("Content-Type", "application/json")
SITE = "https://app.example.com"


def body(**fields: Any) -> bytes:
    """A JSON request body."""
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


AGGREGATION = "/v3/maps/carto_dw/table?name=proj.ds.stores&aggregationExp="


WSGIREF = frozenset({"wsgiref"})  # PATH_INFO only: the path as decoded (see test_wsgi.py)
CHUNKED_SKIP = WSGIREF


def path_trick(path: str, trick: str, rewritten_by: frozenset[str] = frozenset(),
               skipped_by: frozenset[str] = frozenset()) -> list[Any]:
    """A path trick is refused as malformed, with a token and without one (the path is
    judged before the token)."""
    return [
        pytest.param(Case(path, [auth()], 400, "malformed_request", rewritten_by=rewritten_by,
                          skipped_by=skipped_by), id=trick),
        pytest.param(Case(path, status=400, code="malformed_request", rewritten_by=rewritten_by,
                          skipped_by=skipped_by), id=f"{trick}-no-token"),
    ]


CASES = [
    pytest.param(Case(TABLE + "&v=3.4&client=deck", [auth()]), id="allowed"),
    pytest.param(Case("/v3/maps/carto_dw/%74able?name=proj.ds.stores", [auth()]),
                 id="allowed-encoded-letter"),
    pytest.param(Case(QUERY + "?q=SELECT%20*%20FROM%20proj.shared.x", [auth()]),
                 id="allowed-query"),
    pytest.param(Case("/health"), id="outside-prefix"),
    pytest.param(Case(QUERY, [auth(), JSON], method="POST",
                      body=body(q="SELECT name FROM proj.shared.cities",
                                queryParameters={"x": 1}, pad="é" * 100)),
                 id="allowed-body"),
    pytest.param(Case(QUERY, [auth(), JSON], method="POST", chunked=True,
                      body=body(q="SELECT a FROM proj.shared.t", pad="x" * 2500),
                      skipped_by=CHUNKED_SKIP),
                 id="allowed-chunked-body"),
    pytest.param(Case(TABLE, [auth(), auth()]), id="same-token-twice"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", SITE)], token="site"),
                 id="allowed-origin"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", SITE), ("Origin", SITE)], token="site"),
                 id="same-origin-twice"),
    pytest.param(Case(TABLE, [auth("site"), ("Referer", SITE + "/map?c=1,2")], token="site"),
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
    pytest.param(Case(QUERY, [auth(), JSON], 403, "source_not_granted", "POST",
                      body(q="SELECT * FROM proj.ds.secret")), id="body-source-not-granted"),
    pytest.param(Case(QUERY + "?q=DELETE%20FROM%20proj.ds.stores", [auth()], 403,
                      "query_not_allowed"), id="not-a-read"),
    pytest.param(Case("/v3/nothing/here", [auth()], 403, "unknown_route"), id="unknown-route"),
    pytest.param(Case("/v3/nothing/here", [("Authorization", "Bearer x")], 403,
                      "unknown_route"), id="unknown-route-before-token-format"),
    pytest.param(Case(TABLE, [auth("site")], 403, "origin_not_allowed"), id="no-origin"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", "https://evil.example")], 403,
                      "origin_not_allowed"), id="wrong-origin"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", "null")], 403, "origin_not_allowed"),
                 id="null-origin"),
    # aggregationExp is evaluated by the backend as SQL, so it is checked as SQL
    pytest.param(Case(AGGREGATION + "count(*)", [auth()]), id="aggregation-plain"),
    pytest.param(Case(AGGREGATION + "avg(revenue)%20AS%20r,%20max(size)%20AS%20s", [auth()]),
                 id="aggregation-several"),
    pytest.param(Case(AGGREGATION + "(SELECT%20count(*)%20FROM%20proj.shared.cities)",
                      [auth()]), id="aggregation-subquery-granted"),
    pytest.param(Case(AGGREGATION + "(SELECT%20max(salary)%20FROM%20proj.ds.secret)", [auth()],
                      403, "source_not_granted"), id="aggregation-subquery-ungranted"),
    pytest.param(Case(AGGREGATION + "1%3B%20DROP%20TABLE%20proj.ds.stores", [auth()], 403,
                      "query_not_allowed"), id="aggregation-statement-break"),
    pytest.param(Case(AGGREGATION + "1%20FROM%20proj.ds.secret%20--", [auth()], 403,
                      "source_not_granted"), id="aggregation-from-smuggling"),
    # 400: ambiguous or malformed requests
    pytest.param(Case(TABLE, [auth(), auth("site")], 400, "ambiguous_request"),
                 id="two-tokens"),
    pytest.param(Case(TABLE, [auth("site"), ("Origin", SITE), ("Origin", "https://evil.example")],
                      400, "ambiguous_request"), id="two-origins"),
    pytest.param(Case(TABLE, [auth("site"), ("Referer", SITE + "/"),
                              ("Referer", "https://evil.example/")], 400, "ambiguous_request"),
                 id="two-referers"),
    pytest.param(Case(TABLE + "&name=proj.ds.stores", [auth()], 400, "ambiguous_request"),
                 id="duplicate-source"),
    pytest.param(Case(TABLE + "&name=proj.ds.stores", [("Authorization", "Bearer x")], 400,
                      "ambiguous_request"), id="duplicate-source-before-token-format"),
    pytest.param(Case(TABLE + "&access_token={full}", [auth()], 400, "malformed_request"),
                 id="query-token-off"),
    pytest.param(Case(TABLE + "&access_token={full}", status=400, code="malformed_request"),
                 id="query-token-off-alone"),
    pytest.param(Case(QUERY, [auth()], 400, "malformed_request", "POST", b"q=SELECT 1"),
                 id="body-not-json"),
    pytest.param(Case(QUERY, [auth(), JSON], 400, "malformed_request", "POST",
                      b'{"q": "SELECT * FROM proj.shared.x", "q": "SELECT * FROM proj.ds.secret"}'),
                 id="body-duplicate-keys"),
    pytest.param(Case(QUERY + "?q=SELECT%201", [auth(), JSON], 400, "ambiguous_request", "POST",
                      body(q="SELECT * FROM proj.ds.secret")), id="body-conflicts-with-query"),
    # 400: path tricks, refused whatever the server decodes
    *path_trick("/v3/maps/carto_dw/../table?name=proj.ds.stores", "dot-segment"),
    *path_trick("/v3/maps/carto_dw/%2e%2e/table?name=proj.ds.stores", "encoded-dot-segment"),
    *path_trick("/v3/maps/carto_dw%2Ftable?name=proj.ds.stores", "encoded-slash",
                rewritten_by=WSGIREF),
    # Python's http.server (under werkzeug's dev server and wsgiref) collapses a leading "//"
    # to "/" in the request line itself, so they pass "/v3/..." on as if it had been sent.
    *path_trick("//v3/maps/carto_dw/table?name=proj.ds.stores", "leading-double-slash",
                rewritten_by=frozenset({"werkzeug", "wsgiref"})),
    *path_trick("/v3/maps//carto_dw/table?name=proj.ds.stores", "empty-segment"),
    *path_trick("/v3/maps/carto_dw/table;x?name=proj.ds.stores", "matrix-parameter"),
    *path_trick("/v3/maps/carto_dw/table%3Bx?name=proj.ds.stores", "encoded-semicolon"),
    *path_trick("/v3/maps/carto_dw/table%2525?name=proj.ds.stores", "double-encoding"),
    # wsgiref refuses it too, as the dot segment its PATH_INFO shows (another message)
    *path_trick("/x/..%2Fv3/maps/carto_dw/table?name=proj.ds.stores", "climb-in",
                skipped_by=WSGIREF),
    pytest.param(Case("/V3/maps/carto_dw/table?name=proj.ds.stores", [auth()], 403,
                      "unknown_route"), id="upper-case-prefix"),
    pytest.param(Case("/V3/maps/carto_dw/table?name=proj.ds.stores", status=403,
                      code="unknown_route"), id="upper-case-prefix-no-token"),
    # 413 (the token is resolved before the body is read: an unknown one is 401 first)
    pytest.param(Case(QUERY, [auth(), JSON], 413, "body_too_large", "POST",
                      body(q="SELECT 1", pad="x" * MAX_BODY)), id="body-too-large"),
    pytest.param(Case(QUERY, [auth(), JSON], 413, "body_too_large", "POST",
                      body(q="SELECT 1", pad="x" * MAX_BODY), chunked=True,
                      skipped_by=CHUNKED_SKIP),
                 id="chunked-body-too-large"),
    pytest.param(Case(QUERY, [auth("unknown"), JSON], 401, "invalid_token", "POST",
                      body(q="SELECT 1", pad="x" * MAX_BODY)), id="body-too-large-unknown-token"),
]


def run(case: Case, target: Target) -> Reply:
    """Send ``case`` to ``target`` with that server's token secrets."""
    headers = [(name, value.format(**target.secrets)) for name, value in case.headers]
    path = case.path.format(**target.secrets)
    return send(target.port, case.method, path, headers, case.body, chunked=case.chunked)


def expected_echo(case: Case) -> dict[str, Any]:
    """What the app answers an allowed ``case``: the token it saw and the body, intact."""
    if case.path == "/health":
        return {"open": True}
    return {"token": case.token, "body": (case.body or b"").decode("utf-8")}


def check_denial(reply: Reply, case: Case, target: Target) -> None:
    """A refusal: the JSON people and clients read, the RFC 6750 challenge, no secret."""
    parsed = reply.json()
    assert parsed["code"] == case.code, (target.name, parsed)
    assert parsed["error"] and parsed["hint"], (target.name, parsed)
    assert reply.headers["content-type"] == "application/json", target.name
    assert reply.headers["cache-control"] == "no-store", target.name
    if case.status in (400, 401, 403):
        assert reply.headers["www-authenticate"].startswith("Bearer"), target.name
    for secret in target.secrets.values():
        assert secret.encode() not in reply.body


def check_events(events: Sequence[DecisionEvent], case: Case, target: Target,
                 status: int) -> None:
    """One decision per guarded request, none outside the prefix, no secret in any."""
    if case.path == "/health":
        assert events == [], target.name
        return
    assert [e.allowed for e in events] == [status == 200], (target.name, events)
    if status == 200:
        assert events[0].token_id == target.ids[case.token], target.name
    for event in events:
        assert all(secret not in event.path for secret in target.secrets.values())
        if "access_token=" in case.path:
            assert "access_token=REDACTED" in event.path, (target.name, event.path)


@pytest.mark.parametrize("case", CASES)
def test_same_answer_from_every_adapter(targets: list[Target], case: Case) -> None:
    answers = {}
    for target in targets:
        if target.name in case.skipped_by:
            continue
        seen = len(target.events)
        reply = run(case, target)
        if target.name in case.rewritten_by:
            # Judged as the normalised request: allowed with the token, refused without.
            with_token = any(name == "Authorization" for name, _ in case.headers)
            assert reply.status == (200 if with_token else 401), (target.name, reply.body)
            continue
        assert reply.status == case.status, (target.name, reply.body)
        check_events(target.events[seen:], case, target, reply.status)
        parsed = reply.json()
        if case.code is None:
            assert parsed == expected_echo(case), target.name
        else:
            check_denial(reply, case, target)
        headers = {name: reply.headers.get(name)
                   for name in ("www-authenticate", "content-type", "cache-control")}
        answers[target.name] = (reply.status, parsed, headers)
    first = next(iter(answers.values()))
    assert all(answer == first for answer in answers.values()), answers


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_revocation_takes_effect_on_a_cached_token(targets: list[Target], adapter: str) -> None:
    target = next(t for t in targets if t.name == adapter)
    issued = target.call(lambda: target.store.create_token(FULL))
    assert send(target.port, "GET", TABLE, bearer(issued.token)).status == 200
    target.call(lambda: target.store.revoke_token(issued.id))
    reply = send(target.port, "GET", TABLE, bearer(issued.token))
    assert (reply.status, reply.json()["code"]) == (401, "revoked_token")
    assert issued.token.encode() not in reply.body


def test_expiry_takes_effect_on_a_cached_token(targets: list[Target]) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    secrets = {}
    for target in targets:
        issued = target.call(partial(target.store.create_token, dict(FULL, expiration_date=soon)))
        secrets[target.name] = issued.token
        assert send(target.port, "GET", TABLE, bearer(secrets[target.name])).status == 200
    time.sleep(1.1)
    for target in targets:
        reply = send(target.port, "GET", TABLE, bearer(secrets[target.name]))
        assert (reply.status, reply.json()["code"]) == (401, "expired_token"), target.name


class DownStore(MemoryStore):
    """A store that cannot answer a lookup once ``down`` (it answers the start-up probe)."""

    down = False

    async def get_by_secret_hash(self, secret_hash: str) -> tg.TokenRecord | None:
        if self.down:
            raise tg.StoreUnavailable("the store is down")
        return await super().get_by_secret_hash(secret_hash)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_store_down_uncached_token_is_503(adapter: str) -> None:
    store = DownStore()
    with serve_guarded(adapter, store) as (port, call):
        issued = call(lambda: store.create_token(FULL))
        store.down = True
        reply = send(port, "GET", TABLE, bearer(issued.token))
        assert (reply.status, reply.json()["code"]) == (503, "store_unavailable")
        assert reply.json()["error"] and reply.headers["cache-control"] == "no-store"
        assert reply.headers["retry-after"]


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_bad_configuration_fails_at_startup(adapter: str) -> None:
    def build(**options: Any) -> object:
        if adapter == "asgi":
            return TokenGuard(starlette_app(), store=MemoryStore(), **options)
        return TokenGuardWSGI(flask_app().wsgi_app, store=MemoryStore(), **options)

    with pytest.raises(tg.ConfigurationError, match="connections"):
        build(connections={"c": "nosuchdialect"})
    with pytest.raises(tg.ConfigurationError, match="max_body_bytes"):
        build(connections=CONNECTIONS, max_body_bytes=0)


@pytest.mark.parametrize("adapter", ["uvicorn", "waitress"])
def test_concurrent_cache_misses_share_one_store_lookup(adapter: str) -> None:
    """Twelve simultaneous first requests with one token: one store lookup, twelve 200s."""
    store = CountingStore(delay=0.3)
    with serve_guarded(adapter, store) as (port, call):
        token = call(lambda: store.create_token(FULL)).token
        store.lookups = 0  # the ASGI guard read the store once at start-up (its probe)
        statuses: list[int] = []
        barrier = threading.Barrier(12)

        def hit() -> None:
            barrier.wait()
            statuses.append(send(port, "GET", TABLE, bearer(token)).status)

        threads = [threading.Thread(target=hit) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert statuses == [200] * 12
        assert store.lookups == 1
