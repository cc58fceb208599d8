"""FlaskTokenGuard: a real Flask app with Flask-CORS, served by real waitress and gunicorn
processes on loopback (``tests/flask_app.py``), and in-process under waitress threads."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, g, jsonify

import token_guard as tg
from tests.flask_app import ALLOWED_ORIGIN
from tests.servers import Reply, bearer, free_port, interruptible, send, serve_wsgi
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.flask import EXTENSION_KEY, G_ATTRIBUTE

ROOT = Path(__file__).resolve().parent.parent
TABLE = "/v3/maps/carto_dw/table?name=proj.ds.stores"
UNGRANTED = "/v3/maps/carto_dw/table?name=proj.ds.secret"
FROM_APP = [("Origin", ALLOWED_ORIGIN)]
SERVERS = {
    "waitress": [sys.executable, "-m", "waitress", "--listen=127.0.0.1:{port}", "--threads=4",
                 "--call", "tests.flask_app:create_app"],
    # --preload: the app (and its guard) is made before the fork; each worker starts its
    # own loop thread and flushes its own usage at exit.
    "gunicorn": [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "2",
                 "--preload", "--graceful-timeout", "10", "tests.flask_app:create_app()"],
}
# waitress stops on Ctrl-C; gunicorn's graceful stop is SIGTERM (its workers then exit).
STOP = {"waitress": signal.SIGINT, "gunicorn": signal.SIGTERM}


def _store_call(path: Path, work: Any) -> Any:
    async def run() -> Any:
        store = tg.SQLiteStore(path)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@dataclass
class Served:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path
    token: tg.IssuedToken
    store_path: Path

    def get(self, path: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        return send(self.port, "GET", path, headers or [])

    def stop(self) -> str:
        """Stop the server as its operator would; its stderr."""
        self.process.send_signal(STOP[self.kind])
        self.process.wait(30)
        return self.stderr_path.read_text("utf-8", errors="replace")


@contextmanager
def flask_server(kind: str, tmp_path: Path) -> Iterator[Served]:
    """``tests/flask_app.py`` under a real ``kind`` server process, with one FULL token."""
    store_path = tmp_path / f"{kind}-tokens.db"
    issued = _store_call(store_path, lambda store: store.create_token(FULL))
    port = free_port()
    stderr_path = tmp_path / f"{kind}.stderr"
    env = {**os.environ, "TOKEN_GUARD_TEST_FLASK_STORE": str(store_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [part.format(port=port) for part in SERVERS[kind]], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=interruptible,
        )
    served = Served(kind, port, process, stderr_path, issued, store_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{kind} did not start: {stderr_path.read_text('utf-8')}"
                    ) from None
                time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    with flask_server(request.param, tmp_path_factory.mktemp(request.param)) as s:
        yield s


def test_views_find_the_token_on_flask_g(served: Served) -> None:
    r = served.get(TABLE, bearer(served.token.token))
    assert r.status == 200, r.body
    assert r.json() == {"token_id": served.token.id, "g_token_id": served.token.id}


def test_outside_the_prefix_flask_g_holds_none(served: Served) -> None:
    r = served.get("/health")
    assert r.status == 200 and r.json() == {"g_token": None}


@pytest.mark.parametrize(
    ("path", "auth", "status", "code"),
    [
        pytest.param(TABLE, False, 401, "missing_token", id="401-missing"),
        pytest.param(UNGRANTED, True, 403, "source_not_granted", id="403-ungranted"),
        pytest.param("/v3/nowhere", True, 403, "unknown_route", id="403-unknown-route"),
    ],
)
def test_refusals_carry_flask_cors_headers(
    served: Served, path: str, auth: bool, status: int, code: str
) -> None:
    """Flask-CORS labels the guard's refusals, so a browser page can read them."""
    headers = FROM_APP + (bearer(served.token.token) if auth else [])
    r = served.get(path, headers)
    assert r.status == status and r.json()["code"] == code
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert served.token.token not in r.body.decode()


def test_a_refusal_to_another_origin_gets_no_cors_headers(served: Served) -> None:
    r = served.get(TABLE, [("Origin", "https://evil.example")])
    assert r.status == 401 and "access-control-allow-origin" not in r.headers


def test_a_preflight_is_answered_by_flask_cors(served: Served) -> None:
    r = send(served.port, "OPTIONS", "/v3/maps/carto_dw/table",
             [*FROM_APP, ("Access-Control-Request-Method", "GET"),
              ("Access-Control-Request-Headers", "Authorization")])
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_exit_writes_the_last_usage_without_a_traceback(kind: str, tmp_path: Path) -> None:
    """Usage is written at exit, before concurrent.futures stops the store's thread."""
    with flask_server(kind, tmp_path) as s:
        for _ in range(4):  # both gunicorn workers, likely
            assert s.get(TABLE, bearer(s.token.token)).status == 200
        stderr = s.stop()
    assert "Traceback" not in stderr, stderr
    assert "cannot schedule new futures" not in stderr, stderr
    assert "could not record token usage" not in stderr, stderr

    async def last_used(store: tg.SQLiteStore) -> datetime | None:
        record = await store.get_token(s.token.id)
        return record.last_used_at if record else None

    assert _store_call(s.store_path, last_used) is not None


# -- in-process: the extension's own choices ------------------------------------------------
def _app() -> Flask:
    app = Flask(__name__)

    @app.get("/v3/maps/<connection>/table")
    def table(connection: str) -> Response:
        return jsonify(name=getattr(g, G_ATTRIBUTE).name)

    return app


def test_init_app_later_factory_pattern() -> None:
    store = tg.MemoryStore()
    ext = tg.FlaskTokenGuard(store=store, connections=CONNECTIONS)
    app = _app()
    ext.init_app(app)
    assert app.extensions[EXTENSION_KEY] is ext and ext.wsgi is not None
    try:
        issued = ext.wsgi.call(lambda: store.create_token(FULL))
        with serve_wsgi(app, "waitress") as server:
            r = send(server.port, "GET", TABLE, bearer(issued.token))
            assert r.status == 200 and r.json() == {"name": "full"}
    finally:
        ext.close()


def test_a_second_app_is_refused() -> None:
    ext = tg.FlaskTokenGuard(_app(), store=tg.MemoryStore(), connections=CONNECTIONS)
    try:
        with pytest.raises(tg.ConfigurationError, match="one FlaskTokenGuard"):
            ext.init_app(_app())
    finally:
        ext.close()


def test_bad_configuration_is_refused_at_init_app() -> None:
    with pytest.raises(tg.ConfigurationError):
        tg.FlaskTokenGuard(_app(), store=tg.MemoryStore(), connections={"c": "bigqeury"})


@pytest.mark.parametrize(
    "hook",
    [
        pytest.param("raises", id="hook-raises"),
        pytest.param("ok-200", id="hook-turns-it-into-200"),
    ],
)
def test_an_after_request_hook_cannot_unmake_a_refusal(hook: str) -> None:
    """A hook may label a refusal; one that fails or changes its status is ignored."""
    app = _app()

    @app.after_request
    def meddle(response: Response) -> Response:
        if hook == "raises":
            raise RuntimeError("a hook that assumed a view ran")
        return jsonify(rows=["secret"])

    ext = tg.FlaskTokenGuard(app, store=tg.MemoryStore(), connections=CONNECTIONS)
    try:
        with serve_wsgi(app, "waitress") as server:
            r = send(server.port, "GET", TABLE)
            assert r.status == 401 and r.json()["code"] == "missing_token"
    finally:
        ext.close()


def test_before_request_hooks_do_not_run_for_a_refusal() -> None:
    app = _app()
    ran: list[str] = []

    @app.before_request
    def note() -> None:
        ran.append("before")

    ext = tg.FlaskTokenGuard(app, store=tg.MemoryStore(), connections=CONNECTIONS)
    try:
        with serve_wsgi(app, "waitress") as server:
            assert send(server.port, "GET", TABLE).status == 401
        assert ran == []
    finally:
        ext.close()
