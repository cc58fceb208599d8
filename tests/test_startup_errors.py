"""A misconfigured guard stops the server at start-up, naming the setting, in every form.

Each case starts a real uvicorn process on an app module written to a temporary directory
and asserts that it exits non-zero and that its output names the setting; the in-process
cases check the refusals made at construction (naming the public class, not ``Guard``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import token_guard as tg
from token_guard.adapters.asgi import MisconfiguredGuard
from token_guard.core.secret import new_secret

ROOT = Path(__file__).resolve().parent.parent

FASTAPI_TYPO = """
    import token_guard as tg
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(tg.TokenGuard, store=tg.MemoryStore(), connections={"c": "bigqeury"})

    @app.get("/health")
    def health():
        return {"ok": True}
"""
STARLETTE_TYPO = """
    import token_guard as tg
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    app = Starlette(middleware=[
        Middleware(tg.TokenGuard, store=tg.MemoryStore(), connections={"c": "bigqeury"}),
    ])
"""
STARLETTE_MISSPELLED_OPTION = """
    import token_guard as tg
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    app = Starlette(middleware=[
        Middleware(tg.TokenGuard, store=tg.MemoryStore(), connections={"c": "bigquery"},
                   allow_query_tokens=True),
    ])
"""
DIRECT_TYPO = """
    import token_guard as tg
    from starlette.applications import Starlette

    app = tg.TokenGuard(Starlette(), store=tg.MemoryStore(), connections={"c": "bigqeury"})
"""
CORRUPT_SQLITE = """
    import token_guard as tg
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(tg.TokenGuard, store=tg.SQLiteStore(r"{db}"),
                       connections={{"c": "bigquery"}})
"""
POSTGRES_DOWN = """
    import token_guard as tg
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    store = tg.PostgresStore("postgresql://someone:s3cretpw@127.0.0.1:{port}/test",
                             connect_timeout=2)
    app = Starlette(middleware=[
        Middleware(tg.TokenGuard, store=store, connections={{"c": "bigquery"}}),
    ])
"""


def _serve(tmp_path: Path, source: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    (tmp_path / "badapp.py").write_text(textwrap.dedent(source), "utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "badapp:app", "--port", "0", "--host", "127.0.0.1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.mark.parametrize(
    ("source", "names"),
    [
        pytest.param(FASTAPI_TYPO, ["TokenGuard", "connections['c']", "bigqeury", "bigquery"],
                     id="fastapi-add_middleware"),
        pytest.param(STARLETTE_TYPO, ["TokenGuard", "connections['c']", "bigqeury"],
                     id="starlette-Middleware"),
        pytest.param(STARLETTE_MISSPELLED_OPTION,
                     ["TokenGuard", "allow_query_tokens", "did you mean 'allow_query_token'"],
                     id="misspelled-option"),
        pytest.param(DIRECT_TYPO, ["ConfigurationError", "connections['c']"],
                     id="direct-construction"),
    ],
)
def test_uvicorn_exits_naming_the_setting(tmp_path: Path, source: str, names: list[str]) -> None:
    result = _serve(tmp_path, source)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for name in names:
        assert name in output, output
    assert "appears unsupported" not in output


def test_uvicorn_exits_on_a_corrupt_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "tokens.db"
    db.write_bytes(b"not a database at all " * 200)
    result = _serve(tmp_path, CORRUPT_SQLITE.format(db=db))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "store" in output and str(db) in output and "not a database" in output, output


def test_uvicorn_exits_on_an_unreachable_postgres_without_its_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _serve(tmp_path, POSTGRES_DOWN.format(port=port))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"127.0.0.1:{port}" in output and "start-up" in output, output
    assert "s3cretpw" not in output


def test_lazy_misconfigured_guard_refuses_requests_naming_the_setting() -> None:
    # With lifespan off (no start-up to fail), every request is a 500 naming the setting.
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.testclient import TestClient

    app = Starlette(middleware=[
        Middleware(tg.TokenGuard, store=tg.MemoryStore(), connections={"c": "bigqeury"}),
    ])
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no start-up
    response = client.get("/health")
    assert response.status_code == 500
    assert "connections['c']" in response.json()["error"]
    assert "bigqeury" in response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        pytest.param({"store": tg.MemoryStore, "connections": {"c": "bigquery"}},
                     ["TokenGuard: store", "class MemoryStore", "instance"], id="store-class"),
        pytest.param({"store": tg.MemoryStore(), "connections": {"c": "bigquery"},
                      "cache": {"ttl": 5}},
                     ["TokenGuard: cache", "tg.CacheSettings"], id="cache-dict"),
        pytest.param({"store": tg.MemoryStore(), "connections": {}},
                     ["TokenGuard: connections", "empty"], id="connections-empty"),
        pytest.param({"store": tg.MemoryStore(), "connections": {"c": "bigquery"},
                      "prefx": "/api/"},
                     ["TokenGuard: prefx", "did you mean 'prefix'"], id="misspelled-option"),
        pytest.param({"store": tg.MemoryStore()},
                     ["TokenGuard: connections", "required"], id="no-connections"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, object],
                                                  names: list[str]) -> None:
    async def inner(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    with pytest.raises(tg.ConfigurationError) as caught:
        tg.TokenGuard(inner, **kwargs)  # type: ignore[arg-type]
    for name in names:
        assert name in str(caught.value)
    assert "Guard.__init__" not in str(caught.value)


def test_wsgi_names_its_public_class() -> None:
    with pytest.raises(tg.ConfigurationError, match=r"^TokenGuardWSGI: conections: unknown"):
        tg.TokenGuardWSGI(lambda e, s: [], store=tg.MemoryStore(),  # type: ignore[call-arg]
                          conections={"c": "bigquery"})


def test_misconfigured_class_is_a_token_guard() -> None:
    assert issubclass(MisconfiguredGuard, tg.TokenGuard)


def test_default_path_given_as_a_string_is_refused() -> None:
    with pytest.raises(tg.ConfigurationError, match=r"default_path.*\('p', 'ds'\)"):
        tg.Connection("bigquery", default_path="p.ds")  # type: ignore[arg-type]


def test_wsgi_start_names_an_unreadable_store(tmp_path: Path) -> None:
    db = tmp_path / "tokens.db"
    db.write_bytes(b"not a database at all " * 200)
    guard = tg.TokenGuardWSGI(lambda e, s: [], store=tg.SQLiteStore(db),
                              connections={"c": "bigquery"})
    try:
        with pytest.raises(tg.ConfigurationError) as caught:
            guard.start()
        assert str(caught.value).startswith("TokenGuardWSGI: store: ")
        assert str(db) in str(caught.value) and "not a database" in str(caught.value)
    finally:
        guard.close()


def test_wsgi_logs_an_unreadable_store_on_first_use(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "tokens.db"
    db.write_bytes(b"not a database at all " * 200)
    guard = tg.TokenGuardWSGI(lambda e, s: [], store=tg.SQLiteStore(db),
                              connections={"c": "bigquery"})
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
        statuses.append(status)
        return lambda data: None

    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v3/maps/c/table",
               "QUERY_STRING": "name=p.d.t", "HTTP_AUTHORIZATION": f"Bearer {new_secret()}"}
    try:
        with caplog.at_level("ERROR", logger="token_guard"):
            b"".join(guard(environ, start_response))
        assert statuses == ["503 Service Unavailable"]
        assert any("cannot be read at start-up" in r.getMessage() and str(db) in r.getMessage()
                   for r in caplog.records), caplog.text
    finally:
        guard.close()


def test_wsgi_start_passes_on_a_readable_store() -> None:
    guard = tg.TokenGuardWSGI(lambda e, s: [], store=tg.MemoryStore(),
                              connections={"c": "bigquery"})
    try:
        guard.start()
    finally:
        guard.close()
