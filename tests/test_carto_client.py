"""The real ``@carto/api-client`` (Node) against the demo API, unguarded and behind TokenGuard.

Needs node and npm; ``npm install`` fills ``tests/node/node_modules`` from the committed lock
file the first time. Without node/npm the tests skip by hand and fail under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.demo_process import demo_process
from tests.servers import serve
from tests.services import service_missing
from token_guard.adapters.asgi import TokenGuard
from token_guard.demo.app import CONNECTIONS, build_app
from token_guard.demo.data import DATABASE_FILE, STORE_COUNT, ensure_database
from token_guard.demo.tokens import SECRETS_FILE, read_secrets
from token_guard.stores.memory import MemoryStore

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "client_test.mjs"
STEPS = ("query", "queryPost", "vectorTableSource", "vectorQuerySource")


def _installed() -> bool:
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the harness's packages installed (npm install when missing)."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        service_missing("node and npm are needed to run @carto/api-client")
        raise AssertionError("unreachable")
    if not _installed():
        done = subprocess.run([npm_bin, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 or not _installed():
            service_missing(f"npm install in {NODE_DIR} failed: {done.stderr[-2000:]}")
    return node_bin


def run_client(node: str, base_url: str, token: str) -> dict[str, Any]:
    """Run the Node harness against ``base_url`` with ``token``; its JSON report."""
    done = subprocess.run([node, str(SCRIPT), base_url, token], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated demo database for the module."""
    path = tmp_path_factory.mktemp("demo")
    ensure_database(path)
    return path


@pytest.fixture(scope="module")
def unguarded_url(data_dir: Path) -> Iterator[str]:
    """The demo API with no guard in front."""
    with serve(build_app(data_dir)) as server:
        yield server.url


@pytest.fixture(scope="module")
def guarded(data_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The demo API behind TokenGuard, and tokens by purpose."""
    store = MemoryStore()
    bodies = {
        "stores": {"grants": [{"connection_name": "demo", "source": "stores"}],
                   "allowed_apis": ["maps", "sql"]},
        "cities_only": {"grants": [{"connection_name": "demo", "source": "cities"}],
                        "allowed_apis": ["maps", "sql"]},
        "sql_only": {"grants": [{"connection_name": "demo", "source": "stores"}],
                     "allowed_apis": ["sql"]},
    }

    # Any: asgi.py types scopes as dict, Starlette as MutableMapping (reported to the lead).
    inner: Any = build_app(data_dir)
    with serve(TokenGuard(inner, store=store, connections=CONNECTIONS)) as server:

        async def issue() -> dict[str, str]:
            return {purpose: (await store.create_token({"name": purpose, **body})).token
                    for purpose, body in bodies.items()}

        # On the server's loop, where the guard's cache and the store live.
        yield server.url, server.call(issue)


def _hypermarkets(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / DATABASE_FILE)) as db:
        sql = "SELECT count(*) FROM stores WHERE storetype = 'Hypermarket'"
        return int(db.execute(sql).fetchone()[0])


def _assert_everything_loads(report: dict[str, Any], data_dir: Path) -> None:
    query = report["query"]
    assert query["ok"], query
    assert sum(row["n"] for row in query["rows"]) == STORE_COUNT
    assert {f["name"] for f in query["schema"]} == {"storetype", "n"}

    post = report["queryPost"]
    assert post["ok"], post
    revenues = [row["revenue"] for row in post["rows"]]
    assert len(revenues) == 3 and revenues == sorted(revenues, reverse=True)

    for step, count in (("vectorTableSource", STORE_COUNT),
                        ("vectorQuerySource", _hypermarkets(data_dir))):
        source = report[step]
        assert source["ok"], source
        assert source["accessTokenSet"]
        kind = "table" if step == "vectorTableSource" else "query"
        assert f"/v3/maps/demo/{kind}/{{z}}/{{x}}/{{y}}?" in source["tiles"][0]
        assert source["world"]["status"] == 200
        assert source["world"]["features"] == count
        madrid = source["madrid"]
        assert madrid["status"] == 200 and madrid["bytes"] > 0 and madrid["features"] > 0
        lon, lat = madrid["first"]["geometry"]["coordinates"]
        assert abs(lon - -3.70) < 2.0 and abs(lat - 40.42) < 2.0
        assert madrid["first"]["properties"]["storetype"]


def test_real_client_reads_the_unguarded_demo(node: str, unguarded_url: str,
                                              data_dir: Path) -> None:
    _assert_everything_loads(run_client(node, unguarded_url, "any-token-string"), data_dir)


def test_real_client_reads_through_the_guard_with_a_granted_token(
    node: str, guarded: tuple[str, dict[str, str]], data_dir: Path
) -> None:
    url, tokens = guarded
    _assert_everything_loads(run_client(node, url, tokens["stores"]), data_dir)


def test_a_token_without_the_grant_makes_the_client_throw_the_guards_error(
    node: str, guarded: tuple[str, dict[str, str]]
) -> None:
    url, tokens = guarded
    report = run_client(node, url, tokens["cities_only"])
    for step in STEPS:
        result = report[step]
        assert not result["ok"], step
        assert result["name"] == "CartoAPIError"
        assert result["status"] == 403
        assert "stores" in result["serverError"]
        # CartoAPIError's message carries the guard's json.error for the person reading it.
        assert result["serverError"] in result["message"]
        assert tokens["cities_only"] not in result["message"]


def test_a_token_without_the_maps_api_can_query_but_not_map(
    node: str, guarded: tuple[str, dict[str, str]]
) -> None:
    url, tokens = guarded
    report = run_client(node, url, tokens["sql_only"])
    assert report["query"]["ok"] and report["queryPost"]["ok"]
    for step in ("vectorTableSource", "vectorQuerySource"):
        assert report[step]["status"] == 403
        assert "maps" in report[step]["serverError"]


def test_an_unknown_token_is_a_401_in_the_client(
    node: str, guarded: tuple[str, dict[str, str]]
) -> None:
    url, _ = guarded
    report = run_client(node, url, "not-a-token")
    assert {report[step]["status"] for step in STEPS} == {401}
    assert all(report[step]["serverError"] for step in STEPS)


def test_real_client_reads_the_demo_command_with_its_printed_token(
    node: str, tmp_path: Path
) -> None:
    # The whole `token-guard demo` (management beside CORS + TokenGuard), as a user starts it.
    with demo_process(tmp_path / "data", tmp_path / "logs") as demo:
        secrets = read_secrets(demo.data_dir / SECRETS_FILE)
        assert secrets is not None
        full = secrets.tokens["full"].token
        assert full in demo.stdout
        _assert_everything_loads(run_client(node, demo.url, full), demo.data_dir)
        maps_only = run_client(node, demo.url, secrets.tokens["maps_stores"].token)
        assert maps_only["query"]["status"] == 403
        assert maps_only["vectorTableSource"]["ok"]
        assert demo.interrupt() == 0
