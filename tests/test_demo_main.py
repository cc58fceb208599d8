"""``python -m token_guard.demo`` as a new user runs it: a real process, its printed curl lines run.

The demo process is the real command on a free loopback port with its own ``--data-dir``; the
printed walkthrough is parsed and each step is run with the real ``curl`` in ``bash``, as a
user pasting it would. Routing attacks speak raw HTTP over a socket so no client tidies the path.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.demo_process import DemoProcess, demo_process
from tests.services import service_missing
from token_guard.demo import base_url, keep_out_of_git, main, parse_args
from token_guard.demo.compose import is_management_path
from token_guard.demo.tokens import (
    PLANS,
    SECRETS_FILE,
    TOKENS_DB,
    DemoSecrets,
    Prepared,
    read_secrets,
    reconcile,
    save,
)
from token_guard.stores.sqlite import SQLiteStore

_STEP = re.compile(r"^  # (?P<title>.+) \(expect (?P<status>\d{3})(?: (?P<code>\w+))?\)$")


@dataclass(frozen=True)
class Step:
    """One printed walkthrough step: its title, expected status and code, and shell lines."""

    title: str
    status: int
    code: str | None
    lines: tuple[str, ...]


def parse_steps(output: str) -> list[Step]:
    """The walkthrough steps in the demo's output (a ``# ... (expect ...)`` line, then shell)."""
    steps: list[Step] = []
    in_step = False
    for line in output.splitlines():
        match = _STEP.match(line)
        if match:
            steps.append(Step(match["title"], int(match["status"]), match["code"], ()))
            in_step = True
        elif in_step and re.match(r"^  [^ #]", line):
            last = steps[-1]
            steps[-1] = Step(last.title, last.status, last.code, (*last.lines, line[2:]))
        else:
            in_step = False
    return steps


def run_step(step: Step, scratch: Path) -> tuple[int, Any]:
    """Run a step's lines in bash as pasted; the last curl's status and JSON body."""
    body = scratch / "body.json"
    body.unlink(missing_ok=True)
    *setup, last = step.lines
    script = "\n".join(["set -eo pipefail", *setup,
                        f"{last} -o {body} -w '%{{http_code}}'"])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, f"{step.title}: {done.stderr}"
    return int(done.stdout.strip()), json.loads(body.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def curl() -> str:
    """The real curl the printed lines call."""
    path = shutil.which("curl")
    if path is None:
        service_missing("curl is needed to run the demo's printed lines")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """One demo process for the module's read-only checks."""
    root = tmp_path_factory.mktemp("demo")
    with demo_process(root / "data", root / "logs") as running:
        yield running


# --- the printed walkthrough ---------------------------------------------------------------


def test_the_walkthrough_covers_an_allowed_call_and_each_kind_of_refusal(
    demo: DemoProcess,
) -> None:
    steps = parse_steps(demo.stdout)
    assert [s.status for s in steps if s.status == 200], demo.stdout
    assert {s.code for s in steps if s.code} == {
        "missing_token", "malformed_token", "api_not_allowed", "source_not_granted",
        "origin_not_allowed", "revoked_token",
    }
    assert all(line.startswith(("curl ", "ACCESS=$(curl ")) for s in steps for line in s.lines)


def test_every_printed_curl_line_gets_the_answer_it_describes(
    demo: DemoProcess, curl: str, tmp_path: Path,
) -> None:
    steps = parse_steps(demo.stdout)
    assert len(steps) >= 8, demo.stdout
    for step in steps:
        status, body = run_step(step, tmp_path)
        assert status == step.status, (step.title, body)
        if step.code is not None:
            assert body["code"] == step.code, (step.title, body)
            assert body["error"] and body["hint"], (step.title, body)
        elif "/v3/tokens" in step.lines[-1]:
            names = {t["name"] for t in body["tokens"]}
            assert {str(p.body["name"]) for p in PLANS} <= names, body
        elif "/v3/maps/" in step.lines[-1]:
            assert body["nrows"] > 0 and body["tilejson"]["url"], (step.title, body)
        else:
            assert len(body["rows"]) == 3, (step.title, body)


def test_no_printed_line_leaks_a_secret_into_a_url(demo: DemoProcess) -> None:
    for step in parse_steps(demo.stdout):
        for line in step.lines:
            assert "access_token=" not in line
            assert not re.search(r"https?://\S*tgk_", line), line


def test_the_secrets_file_is_private_and_says_it_is_for_the_demo_only(
    demo: DemoProcess,
) -> None:
    path = demo.data_dir / SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["warning"].startswith("DEMO ONLY")
    secrets = read_secrets(path)
    assert secrets is not None
    for key, token in secrets.tokens.items():
        assert f"{token.id}  {token.token}" in demo.stdout, key


# --- CORS and the split between management and the guarded API ------------------------------


def test_a_refusal_carries_cors_headers_a_browser_can_read(demo: DemoProcess) -> None:
    response = httpx.get(f"{demo.url}/v3/sql/demo/query", params={"q": "SELECT 1"},
                         headers={"Origin": "https://anywhere.example"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.json()["code"] == "missing_token"


def test_a_preflight_passes_without_a_token(demo: DemoProcess) -> None:
    response = httpx.options(f"{demo.url}/v3/sql/demo/query", headers={
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    })
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers


def test_the_tokens_api_is_served_beside_the_guard_and_wants_oauth(demo: DemoProcess) -> None:
    secrets = read_secrets(demo.data_dir / SECRETS_FILE)
    assert secrets is not None
    # An API access token is not an OAuth token: the management app, not the guard, says so.
    api_token = secrets.tokens["full"].token
    response = httpx.get(f"{demo.url}/v3/tokens",
                         headers={"Authorization": f"Bearer {api_token}"})
    assert response.status_code == 401
    assert "OAuth" in response.text or "oauth" in response.text
    assert httpx.get(f"{demo.url}/openapi.json").json()["openapi"].startswith("3.")
    assert httpx.get(f"{demo.url}/.well-known/jwks.json").json()["keys"]
    developers = httpx.get(f"{demo.url}/developers", follow_redirects=True)
    assert developers.status_code == 200 and "text/html" in developers.headers["content-type"]
    assert f"{demo.url}/developers" in demo.stdout


def test_the_printed_oauth_client_gets_a_token_signed_by_the_demos_key(
    demo: DemoProcess,
) -> None:
    secrets = read_secrets(demo.data_dir / SECRETS_FILE)
    assert secrets is not None
    response = httpx.post(f"{demo.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(secrets.client_id, secrets.client_secret))
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"read:tokens", "write:tokens"}
    # The key file sits beside tokens.db, where `token-guard serve` on that store looks.
    keys = demo.data_dir / "tokens.keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent byte for byte (no client normalises it)."""
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Connection: close\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


_CUSTOMERS = "q=SELECT%20*%20FROM%20customers"


@pytest.mark.parametrize(("target", "status"), [
    pytest.param(f"/v3/tokens/../sql/demo/query?{_CUSTOMERS}", 400, id="dot-dot-from-tokens"),
    pytest.param(f"/v3/tokens/./../sql/demo/query?{_CUSTOMERS}", 400, id="dot-then-dot-dot"),
    pytest.param(f"/v3/audit/../sql/demo/query?{_CUSTOMERS}", 400, id="dot-dot-from-audit"),
    pytest.param(f"/oauth/../v3/sql/demo/query?{_CUSTOMERS}", 400, id="dot-dot-from-oauth"),
    pytest.param(f"/.well-known/../v3/sql/demo/query?{_CUSTOMERS}", 400, id="from-well-known"),
    pytest.param(f"/developers/../v3/sql/demo/query?{_CUSTOMERS}", 400, id="from-developers"),
    pytest.param(f"/v3/tokens/%2e%2e/sql/demo/query?{_CUSTOMERS}", 400, id="encoded-dots"),
    pytest.param(f"/v3/tokens/%2E%2E%2Fsql%2Fdemo%2Fquery?{_CUSTOMERS}", 400,
                 id="encoded-dots-and-slashes"),
    pytest.param(f"/v3/tokens/..%5csql/demo/query?{_CUSTOMERS}", 400, id="encoded-backslash"),
    pytest.param(f"/v3/tokens/..\\sql/demo/query?{_CUSTOMERS}", 400, id="raw-backslash"),
    pytest.param(f"/v3/tokensX/../sql/demo/query?{_CUSTOMERS}", 400, id="not-a-prefix"),
    pytest.param(f"/v3/sql/demo/query/../../tokens?{_CUSTOMERS}", 400, id="dot-dot-to-tokens"),
    pytest.param(f"//v3/tokens/../sql/demo/query?{_CUSTOMERS}", 400, id="double-slash"),
    pytest.param(f"//v3/sql/demo/query?{_CUSTOMERS}", 400, id="double-slash-data"),
    pytest.param(f"/v3/tokens;/../sql/demo/query?{_CUSTOMERS}", 400, id="semicolon-segment"),
    pytest.param(f"/V3/tokens/../sql/demo/query?{_CUSTOMERS}", 400, id="upper-case"),
    pytest.param(f"/v3/sql/demo/query?{_CUSTOMERS}", 401, id="plain-no-token"),
])
def test_no_path_trick_reaches_the_data_api_around_the_guard(
    demo: DemoProcess, target: str, status: int,
) -> None:
    # 400s come from the split (management-looking paths) or from the guard (all others).
    got, body = _raw_get(demo.port, target)
    assert b"@example.com" not in body
    assert got == status, body
    if got == 400:
        assert json.loads(body)["code"] == "malformed_request"


@pytest.mark.parametrize(("path", "management"), [
    pytest.param(b"/v3/tokens", True, id="tokens"),
    pytest.param(b"/v3/tokens/tok_abc", True, id="one-token"),
    pytest.param(b"/v3/audit", True, id="audit"),
    pytest.param(b"/oauth/token", True, id="oauth"),
    pytest.param(b"/.well-known/jwks.json", True, id="jwks"),
    pytest.param(b"/openapi.json", True, id="openapi"),
    pytest.param(b"/developers", True, id="developers"),
    pytest.param(b"/developers/app.js", True, id="developers-asset"),
    pytest.param(b"/v3/tokensX", False, id="longer-segment"),
    pytest.param(b"/v3/auditlog", False, id="audit-longer"),
    pytest.param(b"/oauth", False, id="oauth-bare"),
    pytest.param(b"/openapi.json/x", False, id="openapi-subpath"),
    pytest.param(b"/V3/tokens", False, id="case"),
    pytest.param(b"//v3/tokens", False, id="double-slash"),
    pytest.param(b"/v3/sql/demo/query", False, id="data"),
    pytest.param(b"/v3//tokens", False, id="empty-segment"),
])
def test_management_paths_are_segment_exact_prefixes(path: bytes, management: bool) -> None:
    assert is_management_path(path) is management


# --- starting again, fresh tokens, Ctrl-C ----------------------------------------------------


def _token_lines(output: str) -> list[str]:
    keys = tuple(f"  {p.key} " for p in PLANS)
    return [line for line in output.splitlines() if line.startswith(keys)]


def test_a_second_start_reuses_the_tokens_and_ctrl_c_exits_0(tmp_path: Path, curl: str) -> None:
    data = tmp_path / "data"
    with demo_process(data, tmp_path / "logs") as first:
        assert "created now" in first.stdout
        printed = _token_lines(first.stdout)
        assert first.interrupt() == 0
    assert "Application shutdown complete" in first.stderr
    with demo_process(data, tmp_path / "logs") as second:
        assert "reused" in second.stdout
        assert _token_lines(second.stdout) == printed
        allowed = next(s for s in parse_steps(second.stdout) if s.status == 200)
        assert run_step(allowed, tmp_path)[0] == 200
        assert second.interrupt() == 0


def test_without_the_secrets_file_a_start_creates_fresh_working_tokens(
    tmp_path: Path, curl: str,
) -> None:
    data = tmp_path / "data"
    with demo_process(data, tmp_path / "logs") as first:
        old = _token_lines(first.stdout)
        assert first.interrupt() == 0
    (data / SECRETS_FILE).unlink()
    with demo_process(data, tmp_path / "logs") as second:
        assert "created now" in second.stdout
        new = _token_lines(second.stdout)
        assert set(new).isdisjoint(old)
        for step in parse_steps(second.stdout)[:4]:
            assert run_step(step, tmp_path)[0] == step.status, step.title
        assert second.interrupt() == 0


# --- reconcile: when the secrets file is trusted (in process, real SQLite files) -----------


def _reconcile(data: Path, known: DemoSecrets | None) -> Prepared:
    data.mkdir(parents=True, exist_ok=True)

    async def go() -> Prepared:
        store = SQLiteStore(data / TOKENS_DB)
        await store.open()
        try:
            return await reconcile(store, known)
        finally:
            await store.close()

    return asyncio.run(go())


def test_secrets_matching_the_store_are_reused(tmp_path: Path) -> None:
    first = _reconcile(tmp_path, None)
    assert first.created
    save(tmp_path / SECRETS_FILE, first)
    again = _reconcile(tmp_path, read_secrets(tmp_path / SECRETS_FILE))
    assert not again.created
    assert again.secrets == first.secrets


def test_secrets_from_another_store_are_replaced(tmp_path: Path) -> None:
    other = _reconcile(tmp_path / "other", None).secrets
    mine = _reconcile(tmp_path / "mine", other)
    assert mine.created
    assert mine.secrets.tokens["full"].token != other.tokens["full"].token


def test_secrets_whose_token_was_revoked_since_are_replaced(tmp_path: Path) -> None:
    first = _reconcile(tmp_path, None).secrets

    async def revoke() -> None:
        store = SQLiteStore(tmp_path / TOKENS_DB)
        await store.open()
        await store.revoke_token(first.tokens["full"].id, actor="test")
        await store.close()

    asyncio.run(revoke())
    assert _reconcile(tmp_path, first).created


@pytest.mark.parametrize("content", [
    pytest.param("", id="empty"),
    pytest.param("{", id="broken-json"),
    pytest.param("[]", id="not-an-object"),
    pytest.param('{"version": 99, "tokens": {}, "oauth_client": {}}', id="other-version"),
    pytest.param('{"version": 1, "tokens": {"full": "x"}, "oauth_client": {}}', id="bad-token"),
])
def test_an_unreadable_secrets_file_counts_as_missing(tmp_path: Path, content: str) -> None:
    path = tmp_path / SECRETS_FILE
    path.write_text(content)
    assert read_secrets(path) is None


def test_a_reused_secrets_file_is_made_private_again(tmp_path: Path) -> None:
    prepared = _reconcile(tmp_path, None)
    path = tmp_path / SECRETS_FILE
    save(path, prepared)
    path.chmod(0o644)
    save(path, Prepared(prepared.secrets, created=False))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the command line --------------------------------------------------------------------


def test_options_default_to_loopback_port_8000() -> None:
    options = parse_args([])
    assert (options.host, options.port) == ("127.0.0.1", 8000)


@pytest.mark.parametrize(("host", "url"), [
    pytest.param("127.0.0.1", "http://127.0.0.1:8000", id="loopback"),
    pytest.param("0.0.0.0", "http://127.0.0.1:8000", id="wildcard"),
    pytest.param("::", "http://[::1]:8000", id="v6-wildcard"),
    pytest.param("::1", "http://[::1]:8000", id="v6-loopback"),
    pytest.param("localhost", "http://localhost:8000", id="name"),
])
def test_printed_urls_name_a_reachable_address(host: str, url: str) -> None:
    assert base_url(host, 8000) == url


def test_an_unwritable_data_dir_is_a_usage_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["--data-dir", str(blocker / "data"), "--port", "1"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("data_dir", [None, "elsewhere/demo"], ids=["default", "custom"])
def test_a_demo_run_in_a_clone_leaves_nothing_to_commit(
    tmp_path: Path, data_dir: str | None
) -> None:
    """Secrets, keys and stores stay out of `git add -A`, even in a repository that
    ignores nothing (the demo's folder ignores itself)."""
    if shutil.which("git") is None:
        service_missing("git is not installed")
    repo = tmp_path / "clone"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README.md").write_text("a project\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x")
    with demo_process(repo / data_dir if data_dir else None, tmp_path / "logs", cwd=repo) as d:
        assert d.interrupt() == 0
    assert (d.data_dir / SECRETS_FILE).exists() and (d.data_dir / "tokens.keys").exists()
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_data_dir_holding_other_files_gets_no_gitignore(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    keep_out_of_git(tmp_path)
    assert not (tmp_path / ".gitignore").exists()
    empty = tmp_path / "fresh"
    empty.mkdir()
    keep_out_of_git(empty)
    assert (empty / ".gitignore").read_text().splitlines()[-1] == "*"


# --- the CLI decides as the demo's API does, from the demo's own configuration -------------


@pytest.mark.parametrize(
    ("plan", "path", "params"),
    [
        pytest.param("full", "/v3/sql/demo/query",
                     {"q": "SELECT name, revenue FROM stores ORDER BY revenue DESC LIMIT 3"},
                     id="allowed-query"),
        pytest.param("maps_stores", "/v3/maps/demo/table", {"name": "stores"},
                     id="allowed-table"),
        pytest.param("maps_stores", "/v3/sql/demo/query", {"q": "SELECT 1"}, id="api"),
        pytest.param("maps_stores", "/v3/maps/demo/table", {"name": "customers"}, id="source"),
        pytest.param("revoked", "/v3/sql/demo/query", {"q": "SELECT 1"}, id="revoked"),
    ],
)
def test_check_with_the_demos_config_decides_as_its_api(
    demo: DemoProcess, plan: str, path: str, params: dict[str, str]
) -> None:
    from tests.test_cli import _env

    secrets = read_secrets(demo.data_dir / SECRETS_FILE)
    assert secrets is not None
    token = secrets.tokens[plan].token
    served = httpx.get(demo.url + path, params=params,
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    url = str(httpx.URL(demo.url + path, params=params))
    done = subprocess.run(
        [sys.executable, "-m", "token_guard.cli", "check", "--json", "--config",
         str(demo.data_dir / "token_guard.toml"), "GET", url],
        input=token + "\n", capture_output=True, text=True, timeout=60, env=_env(),
        cwd=demo.data_dir.parent, check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    decided = json.loads(done.stdout)
    if served.status_code == 200:
        assert decided["decision"] == "allowed", decided
    else:
        assert (decided["status"], decided["code"]) == (served.status_code,
                                                       served.json()["code"]), decided
    assert token not in done.stdout + done.stderr


def test_check_without_a_config_still_assumes_bigquery_and_says_so(demo: DemoProcess) -> None:
    from tests.test_cli import _env

    secrets = read_secrets(demo.data_dir / SECRETS_FILE)
    assert secrets is not None
    url = f"{demo.url}/v3/maps/demo/table?name=stores"
    done = subprocess.run(
        [sys.executable, "-m", "token_guard.cli", "check", "--store",
         str(demo.data_dir / TOKENS_DB), "GET", url],
        input=secrets.tokens["maps_stores"].token, capture_output=True, text=True,
        timeout=60, env=_env(), check=False,
    )
    assert "DENIED" in done.stdout and "assumed to be BigQuery" in done.stderr
    assert "--config" in done.stderr
