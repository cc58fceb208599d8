"""The token-guard CLI, driven as a user drives it: a subprocess per command."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from token_guard.cli import parse_expires
from token_guard.core.secret import is_well_formed, secret_prefix
from token_guard.stores.schema import migrate_sqlite

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def existing_store(tmp_path: Path) -> Path:
    """``tokens.db`` in the test's directory, made as ``--create`` would (a missing store is
    an error for every other command; see the tests of that below)."""
    path = tmp_path / "tokens.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        migrate_sqlite(conn)
    return path


def tg(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``token-guard ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "token_guard.cli", *args], cwd=cwd, env=env or _env(),
        capture_output=True, text=True, input=stdin, timeout=60,
    )


def tg_json(cwd: Path, *args: str) -> Any:
    done = tg(cwd, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CREATE = [
    "tokens", "create", "--name", "storefront", "--api", "maps", "--api", "sql",
    "--grant", "carto_dw:proj.ds.*", "--grant", "carto_dw:proj.other.stores",
    "--referer", "https://*.example.com", "--expires", "30d",
]


def test_create_shows_the_secret_once_and_never_again(tmp_path: Path) -> None:
    done = tg(tmp_path, *CREATE)
    assert done.returncode == 0, done.stderr
    secret = next(w for w in done.stdout.split() if is_well_formed(w))
    assert "only time the token secret is shown" in done.stderr
    token_id = next(w for w in done.stdout.split() if w.startswith("tok_"))
    for args in (["tokens", "list"], ["tokens", "list", "--json"], ["tokens", "show", token_id],
                 ["tokens", "show", token_id, "--json"], ["audit"], ["audit", "--json"]):
        again = tg(tmp_path, *args)
        assert again.returncode == 0, again.stderr
        assert token_id in again.stdout
        assert secret not in again.stdout + again.stderr, args
    assert secret.encode() not in (tmp_path / "tokens.db").read_bytes()


def test_flags_become_the_tokens_api_body(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    assert created["allowed_apis"] == ["maps", "sql"]
    assert created["grants"] == [
        {"connection_name": "carto_dw", "source": "proj.ds.*"},
        {"connection_name": "carto_dw", "source": "proj.other.stores"},
    ]
    assert created["referers"] == ["https://*.example.com"]
    expires = datetime.fromisoformat(created["expiration_date"])
    assert 29 <= (expires - datetime.now(UTC)).days <= 30
    shown = tg_json(tmp_path, "tokens", "show", created["id"])
    assert "token" not in shown and shown["grants"] == created["grants"]


def test_body_file_update_and_revoke(tmp_path: Path) -> None:
    body = {"name": "from file", "allowed_apis": ["lds"]}
    (tmp_path / "body.json").write_text(json.dumps(body))
    created = tg_json(tmp_path, "tokens", "create", "--body", "body.json")
    assert (created["name"], created["allowed_apis"]) == ("from file", ["lds"])
    tid = created["id"]
    updated = tg_json(tmp_path, "tokens", "update", tid, "--name", "renamed", "--api", "maps,sql")
    assert (updated["name"], updated["allowed_apis"]) == ("renamed", ["maps", "sql"])
    revoked = tg_json(tmp_path, "tokens", "revoke", tid)
    assert revoked["state"] == "revoked"
    table = tg(tmp_path, "tokens", "list")
    assert "revoked" in table.stdout and "renamed" in table.stdout
    actions = [(e["actor"], e["action"]) for e in tg_json(tmp_path, "audit")["entries"]]
    me = f"cli:{getpass.getuser()}"
    assert actions == [(me, "token.revoke"), (me, "token.update"), (me, "token.create")]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        pytest.param(["tokens", "show", "tok_missing"], 1, "no token has id", id="show-unknown"),
        pytest.param(["tokens", "revoke", "tok_missing"], 1, "no token has id",
                     id="revoke-unknown"),
        pytest.param(["clients", "revoke", "tgc_missing"], 1, "no OAuth client",
                     id="client-unknown"),
        pytest.param(["tokens", "create", "--api", "ftp"], 2, "allowed_apis", id="bad-api"),
        pytest.param(["tokens", "create", "--api", "maps", "--grant", "carto_dw:proj.*"], 2,
                     "grants[0].source", id="short-wildcard"),
        pytest.param(["tokens", "create", "--api", "maps", "--grant", "nocolon"], 2,
                     "CONNECTION:SOURCE", id="grant-shape"),
        pytest.param(["tokens", "create", "--api", "maps", "--expires", "0d"], 2,
                     "not in the future", id="expires-now"),
        pytest.param(["tokens", "create", "--body", "missing.json"], 2, "--body", id="no-file"),
        pytest.param(["tokens", "update", "tok_x", "--expires", "1d"], 2, "only at creation",
                     id="update-expiry"),
        pytest.param(["tokens", "update", "tok_x"], 2, "nothing to change", id="update-empty"),
        pytest.param(["tokens", "frobnicate"], 2, "invalid choice", id="bad-command"),
        pytest.param(["clients", "create", "--name", "x"], 2, "--scope", id="client-no-scope"),
        pytest.param(["keys", "list", "--keys", "missing.keys"], 2, "keys rotate",
                     id="no-key-file"),
        pytest.param(["tokens", "list", "--store", "mysql://x"], 2, "unknown URL scheme",
                     id="bad-store"),
    ],
)
def test_exit_codes_and_messages(tmp_path: Path, args: list[str], code: int, says: str) -> None:
    done = tg(tmp_path, *args)
    assert done.returncode == code, done.stderr
    assert says in done.stderr


def test_store_from_environment_and_flag(tmp_path: Path) -> None:
    env = _env(TOKEN_GUARD_STORE=f"sqlite:///{tmp_path / 'env.db'}")
    done = tg(tmp_path, "tokens", "create", "--api", "lds", "--json", "--create", env=env)
    assert done.returncode == 0, done.stderr
    tid = json.loads(done.stdout)["id"]
    assert (tmp_path / "env.db").exists()
    assert tg_json(tmp_path, "tokens", "list")["tokens"] == []  # not in ./tokens.db
    listed = tg(tmp_path, "tokens", "list", "--store", str(tmp_path / "env.db"), "--json")
    assert [t["id"] for t in json.loads(listed.stdout)["tokens"]] == [tid]


def test_a_missing_store_file_is_an_error_naming_it_unless_create(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for command in (["tokens", "list"], ["tokens", "revoke", "tok_x"], CREATE):
        done = tg(tmp_path, *command, "--store", str(missing))
        assert done.returncode == 2
        assert str(missing) in done.stderr and "--create" in done.stderr
        assert "no token has id" not in done.stderr
    assert not missing.exists()
    done = tg(tmp_path, *CREATE, "--store", str(missing), "--create")
    assert done.returncode == 0, done.stderr
    assert len(tg_json(tmp_path, "tokens", "list", "--store", str(missing))["tokens"]) == 1


def test_a_revocation_while_the_store_is_locked_says_it_was_not_done(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    holder = sqlite3.connect(tmp_path / "tokens.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write
    try:
        done = tg(tmp_path, "tokens", "revoke", created["id"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 1
    assert "not done" in done.stderr and "locked" in done.stderr
    assert "revoked" not in done.stdout
    shown = tg_json(tmp_path, "tokens", "show", created["id"])
    assert shown["revoked_at"] is None


def test_clients_create_list_revoke(tmp_path: Path) -> None:
    done = tg(tmp_path, "clients", "create", "--name", "ci", "--scope", "read:tokens")
    assert done.returncode == 0 and "only time the client secret" in done.stderr
    secret = next(w for w in done.stdout.split() if w.startswith("tgcs_"))
    cid = next(w for w in done.stdout.split() if w.startswith("tgc_"))
    listed = tg(tmp_path, "clients", "list")
    assert cid in listed.stdout and "active" in listed.stdout and secret not in listed.stdout
    assert tg(tmp_path, "clients", "revoke", cid).returncode == 0
    clients = tg_json(tmp_path, "clients", "list")["clients"]
    assert clients[0]["client_id"] == cid and clients[0]["revoked_at"] is not None
    audit = tg(tmp_path, "audit", "--json")
    assert secret not in audit.stdout
    assert [e["action"] for e in json.loads(audit.stdout)["entries"]] == [
        "client.revoke", "client.create"
    ]


@pytest.mark.parametrize(
    ("url", "origin", "code", "says"),
    [
        pytest.param("https://api.test/v3/maps/carto_dw/table?name=proj.ds.stores",
                     "https://shop.example.com", 0, "ALLOWED", id="allowed"),
        pytest.param("https://api.test/v3/maps/carto_dw/table?name=proj.secret.users",
                     "https://shop.example.com", 1, "source_not_granted", id="source"),
        pytest.param("https://api.test/v3/maps/carto_dw/table?name=proj.ds.stores",
                     "https://evil.test", 1, "origin_not_allowed", id="origin"),
        pytest.param("https://api.test/v3/lds/geocoding/geocode?address=x",
                     "https://shop.example.com", 1, "api_not_allowed", id="api"),
    ],
)
def test_check_explains_the_decision(
    tmp_path: Path, url: str, origin: str, code: int, says: str
) -> None:
    created = tg_json(tmp_path, *CREATE)
    done = tg(tmp_path, "check", "GET", url, "--origin", origin,
              "--connection", "carto_dw=bigquery", stdin=created["token"] + "\n")
    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout
    assert created["token"] not in done.stdout + done.stderr
    if code:
        assert "reason:" in done.stdout and "hint:" in done.stdout


def test_check_of_a_revoked_token_says_revoked(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    tg(tmp_path, "tokens", "revoke", created["id"])
    out = tg(tmp_path, "check", "GET",
             "/v3/maps/carto_dw/table?name=proj.ds.stores", "--origin", "https://a.example.com",
             "--json", stdin=created["token"])
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert (result["status"], result["code"]) == (401, "revoked_token")


def test_check_refuses_a_token_on_the_command_line(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    done = tg(tmp_path, "check", created["token"], "GET", "/v3/maps/carto_dw/table?name=x")
    assert done.returncode == 2
    assert "command line" in done.stderr and "TOKEN_GUARD_TOKEN" in done.stderr
    assert created["token"] not in done.stdout + done.stderr


def test_check_reads_the_token_from_the_environment(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    env = {**_env(), "TOKEN_GUARD_TOKEN": created["token"]}
    done = tg(tmp_path, "check", "GET", "/v3/maps/carto_dw/table?name=proj.ds.stores",
              "--origin", "https://a.example.com", "--connection", "carto_dw=bigquery",
              env=env)
    assert done.returncode == 0, done.stderr
    assert "ALLOWED" in done.stdout


_CONFIG = """
store = "sqlite:///data/tokens.db"

[connections]
carto_dw = "bigquery"
"""


@pytest.mark.parametrize(
    ("grant", "field"),
    [
        pytest.param("carto_dwh:proj.ds.stores", "grants[0].connection_name", id="unknown-conn"),
        pytest.param("carto_dw:stores", "grants[0].source", id="unqualified"),
    ],
)
def test_tokens_create_with_a_config_refuses_grants_the_app_cannot_serve(
    tmp_path: Path, grant: str, field: str
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "token_guard.toml").write_text(_CONFIG, "utf-8")
    args = ["tokens", "create", "--config", "token_guard.toml", "--name", "x", "--api", "maps"]
    done = tg(tmp_path, *args, "--grant", grant)
    assert done.returncode == 2, done.stdout + done.stderr
    assert field in done.stderr
    made = tg(tmp_path, *args, "--grant", "carto_dw:proj.ds.stores", "--json", "--create")
    assert made.returncode == 0, made.stderr
    # the store named in the file (relative to it) got the token, the default one nothing
    assert (tmp_path / "data" / "tokens.db").exists()
    assert tg_json(tmp_path, "tokens", "list")["tokens"] == []  # the default (empty) store got none
    via_env = tg(tmp_path, "tokens", "create", "--name", "y", "--api", "maps", "--grant", grant,
                 env=_env(TOKEN_GUARD_CONFIG=str(tmp_path / "token_guard.toml")))
    assert via_env.returncode == 2 and field in via_env.stderr


def test_serve_with_a_config_refuses_unservable_grants(tmp_path: Path, free_port: int) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "token_guard.toml").write_text(_CONFIG, "utf-8")
    client = tg_json(tmp_path, "clients", "create", "--name", "ci", "--store",
                     "sqlite:///data/tokens.db", "--create", "--scope", "write:tokens")
    proc = subprocess.Popen(
        [sys.executable, "-m", "token_guard.cli", "serve", "--port", str(free_port),
         "--log-level", "warning", "--config", "token_guard.toml"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_port(free_port, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as http:
            access = http.post("/oauth/token", auth=(client["client_id"], client["client_secret"]),
                               data={"grant_type": "client_credentials"}).json()["access_token"]
            body = {"name": "x", "allowed_apis": ["maps"],
                    "grants": [{"connection_name": "elsewhere", "source": "p.d.t"}]}
            r = http.post("/v3/tokens", json=body, headers={"Authorization": f"Bearer {access}"})
            assert r.status_code == 400 and r.json()["field"] == "grants[0].connection_name"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("token-guard serve did not start")


def test_serve_issues_tokens_and_survives_a_key_rotation(tmp_path: Path, free_port: int) -> None:
    client = tg_json(tmp_path, "clients", "create", "--name", "ci",
                     "--scope", "read:tokens", "--scope", "write:tokens")
    made = tg_json(tmp_path, *CREATE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "token_guard.cli", "serve", "--port", str(free_port),
         "--log-level", "warning"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_port(free_port, proc)
        base = f"http://127.0.0.1:{free_port}"
        creds = (client["client_id"], client["client_secret"])
        form = {"grant_type": "client_credentials"}
        with httpx.Client(base_url=base, timeout=10) as http:
            first = http.post("/oauth/token", auth=creds, data=form).json()["access_token"]
            listed = http.get("/v3/tokens", headers={"Authorization": f"Bearer {first}"})
            assert [t["id"] for t in listed.json()["tokens"]] == [made["id"]]
            assert not (tmp_path / "tokens.keys").exists()  # keys: published in the store
            first_kid = jwt.get_unverified_header(first)["kid"]
            assert [k["kid"] for k in tg_json(tmp_path, "keys", "list")["keys"]] == [first_kid]

            rotated = tg_json(tmp_path, "keys", "rotate")
            assert rotated["retired"] == [first_kid]
            second = http.post("/oauth/token", auth=creds, data=form).json()["access_token"]
            second_kid = jwt.get_unverified_header(second)["kid"]
            assert second_kid != first_kid
            for token in (first, second):
                r = http.get("/v3/tokens", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200
            kids = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
            assert kids == {first_kid, second_kid}

            api_token = http.get(
                "/v3/tokens", headers={"Authorization": f"Bearer {made['token']}"}
            )
            assert api_token.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    actions = {e["action"] for e in tg_json(tmp_path, "audit")["entries"]}
    assert {"oauth.token", "keys.rotate", "client.create", "token.create"} <= actions


def test_demo_is_dispatched_with_its_own_flags(tmp_path: Path) -> None:
    done = tg(tmp_path, "demo", "--help")
    if done.returncode == 2 and "not built yet" in done.stderr:
        pytest.skip("the demo package is not built in this tree")
    assert done.returncode == 0 and "usage" in done.stdout.lower()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30d", 30 * 86_400, id="days"),
        pytest.param("12h", 12 * 3600, id="hours"),
        pytest.param("2w", 14 * 86_400, id="weeks"),
        pytest.param("1d12h", 36 * 3600, id="combined"),
    ],
)
def test_parse_expires_durations(text: str, seconds: int) -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    out = datetime.fromisoformat(parse_expires(text, now))
    assert (out - now).total_seconds() == seconds


def test_parse_expires_passes_dates_through() -> None:
    assert parse_expires("2027-01-01T00:00:00Z") == "2027-01-01T00:00:00Z"


def test_limits_are_set_by_flag_updated_and_shown(tmp_path: Path) -> None:
    limits = {"rate": [{"requests": 600, "per": "minute", "api": "sql"}],
              "quota": {"requests": 1000000, "per": "month"}}
    created = tg_json(tmp_path, *CREATE, "--limits", json.dumps(limits))
    assert created["limits"] == limits
    shown = tg(tmp_path, "tokens", "show", created["id"])
    assert "limits:      600/minute sql, 1000000/month" in shown.stdout
    assert "600/minute sql, 1000000/month" in tg(tmp_path, "tokens", "list").stdout
    updated = tg_json(tmp_path, "tokens", "update", created["id"], "--limits", "null")
    assert updated["limits"] is None
    bad = tg(tmp_path, "tokens", "update", created["id"], "--limits",
             '{"rate": [{"requests": 5, "per": "week"}]}')
    assert bad.returncode != 0 and "limits.rate[0].per" in bad.stderr


def test_tokens_usage_prints_a_table_and_json(tmp_path: Path) -> None:
    import asyncio
    from datetime import timedelta

    from token_guard.core.records import UsageRow
    from token_guard.stores import SQLiteStore

    created = tg_json(tmp_path, *CREATE)
    hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)

    async def seed() -> None:
        store = SQLiteStore(str(tmp_path / "tokens.db"))
        await store.add_usage([UsageRow(created["id"], hour, "maps", "", 41),
                               UsageRow(created["id"], hour, "maps", "rate_limited", 2)])
        await store.close()

    asyncio.run(seed())
    done = tg(tmp_path, "tokens", "usage", created["id"])
    assert done.returncode == 0, done.stderr
    assert "ALLOWED" in done.stdout and "41" in done.stdout and "rate_limited 2" in done.stdout
    report = tg_json(tmp_path, "tokens", "usage", created["id"])
    assert report["days"] == [{"day": hour.date().isoformat(), "allowed": 41,
                               "refused": {"rate_limited": 2}}]
    bad = tg(tmp_path, "tokens", "usage", created["id"], "--from", "soon")
    assert bad.returncode != 0 and "--from" in bad.stderr


def test_rotate_disable_enable_from_the_command_line(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    token_id, old = created["id"], created["token"]
    listed = tg(tmp_path, "tokens", "list")
    assert secret_prefix(old) + "..." in listed.stdout and old not in listed.stdout
    done = tg(tmp_path, "tokens", "rotate", token_id, "--grace", "2h")
    assert done.returncode == 0, done.stderr
    new = next(w for w in done.stdout.split() if is_well_formed(w))
    assert new != old and "old secret:  works until" in done.stdout
    assert "only time the new secret is shown" in done.stderr
    shown = tg(tmp_path, "tokens", "show", token_id)
    assert secret_prefix(new) + "..." in shown.stdout and new not in shown.stdout
    rotated = tg_json(tmp_path, "tokens", "rotate", token_id, "--grace", "0")
    assert rotated["grace_seconds"] == 0 and rotated["id"] == token_id
    assert tg_json(tmp_path, "tokens", "end-grace", token_id)["state"] == "active"
    assert tg_json(tmp_path, "tokens", "disable", token_id)["state"] == "disabled"
    assert "disabled" in tg(tmp_path, "tokens", "list").stdout
    assert tg_json(tmp_path, "tokens", "enable", token_id)["state"] == "active"
    audit = tg(tmp_path, "audit", "--json")
    for action in ("token.rotate", "token.rotate.expire", "token.disable", "token.enable"):
        assert action in audit.stdout
    assert f"cli:{getpass.getuser()}" in audit.stdout
    assert tg(tmp_path, "tokens", "revoke", token_id).returncode == 0
    refused = tg(tmp_path, "tokens", "enable", token_id)
    assert refused.returncode == 1 and "revocation is final" in refused.stderr


@pytest.mark.parametrize("grace", ["forever", "-5", "31d", "1y"])
def test_a_bad_grace_is_a_usage_error(tmp_path: Path, grace: str) -> None:
    token_id = tg_json(tmp_path, *CREATE)["id"]
    done = tg(tmp_path, "tokens", "rotate", token_id, "--grace", grace)
    assert done.returncode == 2 and "--grace" in done.stderr


def test_find_names_the_token_of_a_secret_read_from_stdin(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    done = tg(tmp_path, "tokens", "find", stdin=created["token"] + "\n")
    assert done.returncode == 0, done.stderr
    assert created["id"] in done.stdout and "the token's current secret" in done.stdout
    assert created["token"] not in done.stdout
    tg_json(tmp_path, "tokens", "rotate", created["id"], "--grace", "1h")
    found = tg(tmp_path, "tokens", "find", "--json", stdin=created["token"])
    assert json.loads(found.stdout)["secret"]["current"] is False
    unknown = tg(tmp_path, "tokens", "find", stdin="tgk_" + "0" * 38)
    assert unknown.returncode == 2 and "no token_guard secret" in unknown.stderr


def test_check_in_report_only_mode_says_the_refusal_is_not_enforced(tmp_path: Path) -> None:
    created = tg_json(tmp_path, *CREATE)
    url = "/v3/maps/carto_dw/table?name=proj.secret.salaries"
    done = tg(tmp_path, "check", "GET", url, "--origin", "https://a.example.com",
              "--report-only", stdin=created["token"])
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("WOULD_REFUSE (403 source_not_granted)")
    assert "NOT enforced" in done.stdout and "REPORT-ONLY" in done.stderr
    as_json = tg(tmp_path, "check", "GET", url, "--origin", "https://a.example.com",
                 "--report-only", "sql", "--json", stdin=created["token"])
    result = json.loads(as_json.stdout)  # maps is not in report-only: enforced
    assert (result["decision"], result["enforced"]) == ("denied", True)
    bad = tg(tmp_path, "check", "GET", url, "--report-only", "ftp", stdin=created["token"])
    assert bad.returncode == 2 and "report_only" in bad.stderr
