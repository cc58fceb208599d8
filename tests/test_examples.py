"""The examples run as written: each starts as a real server process on a free port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.servers import free_port
from token_guard.stores import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
TOKEN_BODY = {
    "name": "example",
    "allowed_apis": ["maps"],
    "referers": [],
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
}


def create_token(db: Path) -> str:
    """A token in the example's SQLite file, created as the examples' docstring shows."""

    async def create() -> str:
        store = SQLiteStore(str(db))
        try:
            return (await store.create_token(TOKEN_BODY)).token
        finally:
            await store.close()

    return asyncio.run(create())


@contextmanager
def running(command: list[str], port: int, db: Path) -> Iterator[str]:
    """Run ``command`` from the repository root until its port answers; stop it afterwards."""
    # The store URL as users write it; the path percent-encoded, as parse_store_url reads it.
    env = dict(os.environ, TOKEN_GUARD_STORE=f"sqlite:///{quote(str(db))}", PORT=str(port))
    # As installed with `pip install -e .`: token_guard importable from anywhere.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"{command} exited with {process.returncode}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{command} did not listen on port {port}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def uvicorn(target: str, port: int) -> list[str]:
    """The command line serving ``target`` with uvicorn on ``port``."""
    return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(lambda port: uvicorn("examples.starlette_app:app", port), id="starlette"),
        pytest.param(lambda port: uvicorn("examples.fastapi_app:app", port), id="fastapi"),
        pytest.param(
            lambda port: [sys.executable, "-m", "flask", "--app", "examples/flask_app", "run",
                          "--port", str(port)],
            id="flask-run",
        ),
        pytest.param(lambda port: [sys.executable, "examples/flask_app.py"], id="flask-script"),
    ],
)
def test_example_allows_and_refuses(command: Callable[[int], list[str]], tmp_path: Path) -> None:
    db = tmp_path / "tokens.db"
    token = create_token(db)
    port = free_port()
    with running(command(port), port, db) as url:
        path = "/v3/maps/carto_dw/table?name=proj.ds.stores"
        r = httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["token"] == "example"
        assert r.json()["rows"]

        origin = {"Origin": "http://localhost:3000"}
        r = httpx.get(url + path, headers=origin, timeout=10)
        assert r.status_code == 401 and r.json()["code"] == "missing_token"
        # CORS sits outside the guard: the browser may read the refusal.
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"

        r = httpx.get(url + "/v3/maps/carto_dw/table?name=proj.ds.secret",
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 403 and r.json()["code"] == "source_not_granted"

        r = httpx.options(url + path, headers={**origin, "Access-Control-Request-Method": "GET",
                                               "Access-Control-Request-Headers": "authorization"},
                          timeout=10)
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
