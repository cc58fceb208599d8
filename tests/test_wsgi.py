"""TokenGuardWSGI end to end: real HTTP through threaded WSGI servers on loopback
(``tests/servers.py``: waitress and werkzeug pass the raw request target, ``wsgiref`` does
not, so it exercises the PATH_INFO fallback)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, Response, jsonify, request

import token_guard as tg
from tests.servers import Reply, ServerKind, WSGIServer, bearer, send, serve_wsgi
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.wsgi import ENVIRON_KEY, TokenGuardWSGI, current_token, get_token
from token_guard.guard import DecisionEvent
from token_guard.resolver import CacheSettings
from token_guard.stores import MemoryStore, SQLiteStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

TABLE = "/v3/maps/carto_dw/table?name=proj.ds.stores"


# -- the app under test --------------------------------------------------------------------
def flask_app() -> Flask:
    """A Flask app echoing the resolved token and the body it received."""
    app = Flask(__name__)

    def echo(**_: str) -> Response:
        token = get_token(request.environ)
        return jsonify(
            token_id=token.id if token else None,
            token_name=token.name if token else None,
            body=request.get_data().decode("utf-8"),
        )

    for rule in ("/v3/maps/<conn>/table", "/v3/sql/<conn>/query", "/v3/lds/geocoding/geocode"):
        app.add_url_rule(rule, rule, echo, methods=["GET", "POST"])

    @app.route("/v3/maps/<conn>/tileset")
    def tileset(conn: str) -> Response:
        return jsonify(token_name=current_token().name)

    @app.route("/health")
    def health() -> str:
        return "open"

    return app


@dataclass
class Env:
    guard: TokenGuardWSGI
    store: MemoryStore
    server: WSGIServer
    events: list[DecisionEvent]

    def create(self, body: Mapping[str, Any]) -> tg.IssuedToken:
        return self.guard.call(lambda: self.store.create_token(body))

    def get(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Reply:
        return send(self.server.port, "GET", path, headers)


@contextmanager
def guarded(
    kind: ServerKind = "waitress", store: MemoryStore | None = None, **options: Any
) -> Iterator[Env]:
    """A guarded Flask app served by ``kind``; the guard is closed afterwards."""
    store = store or MemoryStore()
    events: list[DecisionEvent] = []
    app = flask_app()
    options.setdefault("max_body_bytes", 4096)
    guard = TokenGuardWSGI(
        app.wsgi_app, store=store, connections=CONNECTIONS, on_decision=events.append,
        **options,
    )
    app.wsgi_app = guard  # type: ignore[method-assign]
    try:
        with serve_wsgi(app, kind) as server:
            yield Env(guard, store, server, events)
    finally:
        guard.close()


@pytest.fixture(params=["waitress", "werkzeug", "wsgiref"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with guarded(request.param) as e:
        yield e


def assert_denied(reply: Reply, status: int, code: str, secret: str = "") -> None:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["code"] == code
    assert body["error"] and body["hint"]
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    if status in (400, 401, 403):
        assert reply.headers["www-authenticate"].startswith("Bearer")
    if secret:
        assert secret.encode() not in reply.body


def test_current_token_in_a_view_is_the_guarded_token(env: Env) -> None:
    """Flask views read the resolved token with ``current_token()`` (the echo uses
    ``get_token``; the transport table checks it)."""
    issued = env.create(FULL)
    r = env.get("/v3/maps/carto_dw/tileset?name=proj.shared.t", bearer(issued.token))
    assert (r.status, r.json()) == (200, {"token_name": "full"})


def test_path_without_raw_uri_is_judged_as_the_app_sees_it() -> None:
    """wsgiref gives no raw URI: the guard classifies PATH_INFO, the path Flask routes on,
    and refuses what PATH_INFO cannot prove clean (a '%' or ';' left after decoding)."""
    with guarded("wsgiref") as env:
        issued = env.create(FULL)
        token = bearer(issued.token)
        assert env.get(TABLE, token).status == 200
        assert_denied(env.get("/v3/maps/carto_dw/table%2525?name=proj.ds.stores", token), 400,
                      "malformed_request")
        assert_denied(env.get("/v3/maps/carto_dw/tab%3Ble?name=proj.ds.stores", token), 400,
                      "malformed_request")
        assert_denied(env.get("/v3/maps/carto_dw/%2e%2e/table?name=proj.ds.stores", token),
                      400, "malformed_request")


def test_script_name_mount() -> None:
    """Under waitress's url_prefix the app sees SCRIPT_NAME=/app; the guard classifies the
    raw path after it."""
    store = MemoryStore()
    app = flask_app()
    guard = TokenGuardWSGI(app.wsgi_app, store=store, connections=CONNECTIONS)
    app.wsgi_app = guard  # type: ignore[method-assign]
    try:
        with serve_wsgi(app, "waitress", url_prefix="/app") as server:
            issued = guard.call(lambda: store.create_token(FULL))
            r = send(server.port, "GET", "/app" + TABLE, bearer(issued.token))
            assert r.status == 200 and r.json()["token_name"] == "full"
            assert_denied(send(server.port, "GET", "/app" + TABLE), 401, "missing_token")
            assert_denied(
                send(server.port, "GET", "/app/v3/maps/carto_dw%2Ftable?name=proj.ds.stores",
                     bearer(issued.token)),
                400, "malformed_request",
            )
            assert send(server.port, "GET", "/app/health").body == b"open"
    finally:
        guard.close()


@pytest.mark.parametrize(
    ("sent", "rewritten"),
    [
        pytest.param("/public/stores", "/v3/maps/carto_dw/table", id="outside-made-inside"),
        pytest.param("/v3/maps/carto_dw/tileset", "/v3/maps/carto_dw/table", id="other-route"),
    ],
)
def test_path_rewritten_outside_the_guard_is_refused(sent: str, rewritten: str) -> None:
    """A middleware around the guard that rewrites PATH_INFO: the raw URI no longer says
    what the app will route, so the guard refuses instead of judging the wrong path."""
    store = MemoryStore()
    app = flask_app()
    guard = TokenGuardWSGI(app.wsgi_app, store=store, connections=CONNECTIONS)
    app.wsgi_app = guard  # type: ignore[method-assign]

    def rewrite(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if environ["PATH_INFO"] == sent:
            environ["PATH_INFO"] = rewritten
        return app(environ, start_response)

    try:
        with serve_wsgi(rewrite, "waitress") as server:
            issued = guard.call(lambda: store.create_token(FULL))
            r = send(server.port, "GET", sent + "?name=proj.ds.stores", bearer(issued.token))
            assert_denied(r, 400, "malformed_request")
    finally:
        guard.close()


def test_many_threads_many_tokens_with_evictions() -> None:
    """Request threads read the cache while the loop thread fills and evicts it."""
    store = MemoryStore()
    with guarded("waitress", store=store, cache=CacheSettings(max_entries=5)) as env:
        tokens = [env.create(FULL).token for _ in range(20)]
        errors: list[str] = []

        def run(offset: int) -> None:
            for i in range(60):
                token = tokens[(i * 7 + offset) % len(tokens)]
                r = env.get(TABLE, bearer(token))
                if r.status != 200:
                    errors.append(f"{r.status} {r.body!r}")

        threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        stats = env.guard.guard.resolver.stats()
        assert stats["positive_entries"] <= 5


def test_close_flushes_usage_closes_store_and_refuses_after(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = SQLiteStore(str(path))
    with guarded("waitress", store=store) as env:  # type: ignore[arg-type]
        issued = env.create(FULL)
        assert env.get(TABLE, bearer(issued.token)).status == 200
        env.guard.close()
        env.guard.close()  # idempotent
        assert_denied(env.get(TABLE, bearer(issued.token)), 503, "store_unavailable")
        stop = threading.enumerate()
        assert not any(t.name == "token_guard-wsgi" for t in stop)

    async def last_used() -> datetime | None:
        reader = SQLiteStore(str(path))
        try:
            record = await reader.get_token(issued.id)
            return record.last_used_at if record else None
        finally:
            await reader.close()

    assert asyncio.run(last_used()) is not None


def test_current_token_refuses_when_guard_did_not_run() -> None:
    """A view reading the token without the guard around it is a misconfiguration: 401."""
    app = flask_app()
    with serve_wsgi(app, "werkzeug") as server:
        r = send(server.port, "GET", "/v3/maps/carto_dw/tileset?name=proj.ds.stores")
        assert r.status == 401 and b"wrap app.wsgi_app with TokenGuardWSGI" in r.body


def test_get_token_reads_the_environ() -> None:
    record = tg.TokenRecord("tok_1", tg.parse_token_spec(FULL), created_at=datetime.now())
    assert get_token({ENVIRON_KEY: record}) is record
    assert get_token({}) is None
    assert get_token({ENVIRON_KEY: "forged"}) is None


def test_preflight_passes_to_cors_layer_outside(env: Env) -> None:
    """The CORS layer wraps the guard; a preflight passes the guard untouched."""

    def cors(app: WSGIApplication) -> WSGIApplication:
        def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
            if environ["REQUEST_METHOD"] == "OPTIONS":
                start_response("204 No Content", [("Access-Control-Allow-Origin", "*")])
                return [b""]
            return app(environ, start_response)

        return wrapped

    with serve_wsgi(cors(env.guard), "waitress") as server:
        r = send(server.port, "OPTIONS", "/v3/maps/carto_dw/table",
                 [("Origin", "https://a.example"), ("Access-Control-Request-Method", "GET")])
        assert r.status == 204 and r.headers["access-control-allow-origin"] == "*"
    # Straight to the guard: a preflight passes to Flask, which answers OPTIONS itself.
    r = send(env.server.port, "OPTIONS", "/v3/maps/carto_dw/table",
             [("Origin", "https://a.example"), ("Access-Control-Request-Method", "GET")])
    assert r.status == 200 and "OPTIONS" in r.headers["allow"]
    r = send(env.server.port, "OPTIONS", "/v3/maps/carto_dw/table",
             [("Access-Control-Request-Method", "GET")])
    # Without Origin it is no browser's preflight: the guard judges it, and OPTIONS is no
    # declared method of the route.
    assert_denied(r, 403, "unknown_route")


@pytest.mark.parametrize("name", ["a%63cess_token", "access%5Ftoken"])
def test_an_escaped_access_token_next_to_the_header_is_two_tokens(env: Env, name: str) -> None:
    """Flask decodes ``a%63cess_token`` to ``access_token``: the guard reads it as a second
    token beside the header's, not as an unknown parameter (cold, then warm)."""
    issued = env.create(FULL)
    other = env.create(FULL)
    for _ in range(2):
        r = env.get(f"/v3/maps/carto_dw/tileset?name=proj.shared.t&{name}={other.token}",
                    bearer(issued.token))
        assert_denied(r, 400, "malformed_request", other.token)
