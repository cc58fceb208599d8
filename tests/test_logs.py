"""No log line prints the token, the server's own included; refusals can be seen.

Real servers in their own processes, their output captured: uvicorn (h11 and httptools,
its default logging with the access log on), gunicorn with ``--access-logfile -``, and
werkzeug's development server (in a thread, its logger captured).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import token_guard as tg
from tests.servers import serve_wsgi
from tests.tokens import FULL
from token_guard.logs import RedactTokens
from token_guard.stores import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
LDS = {**FULL, "allowed_apis": ["lds"]}


def _secret(db: Path) -> str:
    async def make() -> str:
        store = SQLiteStore(str(db))
        try:
            return (await store.create_token(LDS)).token
        finally:
            await store.close()

    return anyio.run(make)


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TOKEN_GUARD_STORE"] = f"sqlite:///{db}"
    return env


def _wait(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            httpx.get(f"{base}/health", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def _run_and_capture(
    cmd: list[str], db: Path, base: str, calls: list[str]
) -> tuple[str, list[httpx.Response]]:
    """Start the server, make ``calls`` (paths), stop it; return its whole output."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(db), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait(base, proc)
        replies = [httpx.get(f"{base}{path}", timeout=10) for path in calls]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    return out.decode("utf-8", "replace"), replies


def _calls(secret: str) -> list[str]:
    return [
        f"/v3/lds/geocoding/geocode?address=Main+St&access_token={secret}",  # allowed
        f"/v3/lds/geocoding/geocode?access_token={secret}x",  # refused (malformed)
        f"/v3/lds/geocoding/geocode?access%5Ftoken={secret}",  # an encoded name
        f"/v3/lds/geocoding/geocode?ACCESS_TOKEN={secret}",  # another case
        f"/v3/lds/geocoding/geocode?a%63cess_token={secret}",  # read as access_token
        f"/v3/lds/geocoding/geocode?aCcEss_tOkEn={secret}",  # neither 'ccess' nor 'CCESS'
        f"/health?access_token={secret}",  # outside the prefix: passed, still redacted
    ]


def _assert_secret_nowhere(out: str, secret: str) -> None:
    assert secret not in out
    assert secret[4:] not in out  # not even without its prefix
    assert secret[4:20] not in out


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_access_log_never_prints_the_token(
    http: str, tmp_path: Path, free_port: int
) -> None:
    db = tmp_path / "tokens.db"
    secret = _secret(db)
    base = f"http://127.0.0.1:{free_port}"
    out, replies = _run_and_capture(
        [sys.executable, "-m", "uvicorn", "tests.guarded_app:app", "--port", str(free_port),
         "--http", http], db, base, _calls(secret),
    )
    allowed = replies[0]
    assert allowed.status_code == 200, allowed.text
    # The app beneath still works: it has the resolved token and its other parameters.
    assert allowed.json()["token"] and allowed.json()["address"] == "Main St"
    assert "REDACTED" in allowed.json()["query"] and secret not in allowed.json()["query"]
    assert replies[1].status_code == 401
    assert replies[-1].status_code == 200
    assert "access_token=REDACTED" in out  # the access log is on, and redacted
    assert out.count('"GET /') >= len(replies)
    _assert_secret_nowhere(out, secret)


def test_refusals_print_beside_uvicorns_lines_with_its_log_config(
    tmp_path: Path, free_port: int
) -> None:
    db = tmp_path / "tokens.db"
    secret = _secret(db)
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(tg.uvicorn_log_config()))
    base = f"http://127.0.0.1:{free_port}"
    out, replies = _run_and_capture(
        [sys.executable, "-m", "uvicorn", "tests.guarded_app:app", "--port", str(free_port),
         "--log-config", str(config)], db, base, _calls(secret),
    )
    assert replies[1].status_code == 401
    assert "denied GET /v3/lds/geocoding/geocode?access_token=REDACTED: malformed_token" in out
    _assert_secret_nowhere(out, secret)


def test_gunicorn_access_log_never_prints_the_token(tmp_path: Path, free_port: int) -> None:
    db = tmp_path / "tokens.db"
    secret = _secret(db)
    base = f"http://127.0.0.1:{free_port}"
    out, replies = _run_and_capture(
        [sys.executable, "-m", "gunicorn", "tests.gunicorn_app:app", "--bind",
         f"127.0.0.1:{free_port}", "--access-logfile", "-", "--access-logformat",
         '%(r)s %(q)s %(U)s %(s)s'], db, base, _calls(secret),
    )
    assert replies[0].status_code == 200, replies[0].text
    assert replies[0].json()["token"] and secret not in replies[0].json()["query"]
    assert replies[1].status_code == 401
    assert "access_token=REDACTED" in out
    _assert_secret_nowhere(out, secret)


@pytest.fixture
def werkzeug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """werkzeug's request lines, captured (it logs at INFO)."""
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        yield caplog


def test_werkzeug_dev_server_log_never_prints_the_token(
    tmp_path: Path, werkzeug_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "tokens.db"
    secret = _secret(db)
    monkeypatch.setenv("TOKEN_GUARD_STORE", f"sqlite:///{db}")
    from tests.guarded_app import make_wsgi_app  # reads TOKEN_GUARD_STORE on import

    app = make_wsgi_app()
    try:
        with serve_wsgi(app, "werkzeug") as server:
            replies = [httpx.get(f"{server.url}{path}", timeout=10) for path in _calls(secret)]
    finally:
        app.close()
    assert replies[0].status_code == 200 and replies[1].status_code == 401
    text = "\n".join(r.getMessage() for r in werkzeug_log.records if r.name == "werkzeug")
    assert "access_token=REDACTED" in text
    _assert_secret_nowhere(text, secret)


@pytest.mark.parametrize(
    ("message", "logged"),
    [
        pytest.param('"GET /a?access_token=tgk_abc HTTP/1.1" 200',
                     '"GET /a?access_token=REDACTED HTTP/1.1" 200', id="request-line"),
        pytest.param("q=1&ACCESS_TOKEN=tgk_x&b=2", "q=1&ACCESS_TOKEN=REDACTED&b=2", id="upper"),
        pytest.param("access%5Ftoken=tgk_x", "access%5Ftoken=REDACTED", id="encoded-name"),
        pytest.param("nothing here", "nothing here", id="untouched"),
    ],
)
def test_redact_tokens_filter(message: str, logged: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (message,), None)
    assert RedactTokens().filter(record) is True
    assert record.getMessage() == logged


def test_the_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("token_guard").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
