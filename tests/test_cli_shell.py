"""The token-guard CLI as shells use it: ``--version``, global options on either side of
the command, a pipe closed early, the order of ``tokens list``, plain help, and what
``serve`` prints. Each command is a real subprocess."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import token_guard
from tests.test_cli import _env, existing_store, tg, tg_json
from tests.tokens import FULL
from token_guard.cli import build_parser
from token_guard.stores import SQLiteStore

# Every command here runs on ./tokens.db made beforehand, as --create would (autouse).
__all__ = ["existing_store"]

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_package_version(tmp_path: Path) -> None:
    done = tg(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"token-guard {token_guard.__version__}"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--store", "{db}", "tokens", "list", "--json"], id="before-command"),
        pytest.param(["tokens", "--store", "{db}", "list", "--json"], id="between"),
        pytest.param(["tokens", "list", "--store", "{db}", "--json"], id="after-command"),
        pytest.param(["--json", "--store", "{db}", "tokens", "list"], id="json-before"),
        pytest.param(["--store", "other.db", "tokens", "list", "--store", "{db}", "--json"],
                     id="later-wins"),
    ],
)
def test_global_options_before_or_after_the_command(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "named.db"
    made = _many_tokens(db, 1)
    done = tg(tmp_path, *[a.format(db=db) for a in args])
    assert done.returncode == 0, done.stderr
    assert [t["id"] for t in json.loads(done.stdout)["tokens"]] == made
    with contextlib.closing(sqlite3.connect(tmp_path / "tokens.db")) as default:
        # never fell back to the default store (made empty by the autouse fixture)
        assert default.execute("SELECT count(*) FROM tokens").fetchone() == (0,)


def _many_tokens(db: Path, n: int) -> list[str]:
    async def make() -> list[str]:
        store = SQLiteStore(db)
        await store.open()
        try:
            return [(await store.create_token({**FULL, "name": f"t{i}"})).id for i in range(n)]
        finally:
            await store.close()

    return asyncio.run(make())


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """A store with more tokens than a pipe buffer holds as a table (1,200 rows)."""
    db = tmp_path_factory.mktemp("crowded") / "tokens.db"
    yield db, _many_tokens(db, 1200)


def test_a_pipe_closed_early_prints_no_traceback(crowded: tuple[Path, list[str]]) -> None:
    db, _ = crowded
    # token-guard --store DB tokens list --all | head -1, through a real pipe.
    cli = subprocess.Popen(
        [sys.executable, "-m", "token_guard.cli", "--store", str(db), "tokens", "list", "--all"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert cli.stdout is not None and cli.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=cli.stdout, capture_output=True, timeout=120)
    cli.stdout.close()  # only head holds the read end now: when it exits, the pipe breaks
    stderr = cli.stderr.read().decode()
    assert cli.wait(60) == 0, stderr
    assert head.stdout.split() == [b"ID", b"SECRET", b"NAME", b"APIS", b"GRANTS", b"STATE",
                                   b"EXPIRES", b"LIMITS"]
    assert stderr == ""


def test_tokens_list_is_newest_first_and_pages_in_that_order(
    crowded: tuple[Path, list[str]], tmp_path: Path
) -> None:
    db, made = crowded
    newest = list(reversed(made))
    first = tg_json(tmp_path, "--store", str(db), "tokens", "list", "--limit", "3")
    assert [t["id"] for t in first["tokens"]] == newest[:3] and first["next"] == newest[2]
    then = tg_json(tmp_path, "--store", str(db), "tokens", "list", "--limit", "2",
                   "--after", first["next"])
    assert [t["id"] for t in then["tokens"]] == newest[3:5]
    every = tg_json(tmp_path, "--store", str(db), "tokens", "list", "--all")
    assert [t["id"] for t in every["tokens"]] == newest and every["next"] is None


def test_tokens_list_after_an_unknown_id_says_so(tmp_path: Path) -> None:
    done = tg(tmp_path, "tokens", "list", "--after", "tok_nope")
    assert done.returncode == 1 and "no token's id" in done.stderr


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, str]]:
    yield name, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


REST_MARKUP = re.compile(r"``|:[a-z]+:`|`[^`\s]+`_?")


def test_no_help_text_holds_rest_markup(tmp_path: Path) -> None:
    helps = dict(_parsers(build_parser(), "token-guard"))
    assert {"token-guard tokens create", "token-guard serve", "token-guard check"} <= set(helps)
    marked = {name: REST_MARKUP.findall(text) for name, text in helps.items()}
    assert {name: found for name, found in marked.items() if found} == {}
    for command in (["--help"], ["tokens", "list", "--help"], ["demo", "--help"]):
        done = tg(tmp_path, *command)
        assert done.returncode == 0 and not REST_MARKUP.search(done.stdout), done.stdout


def test_serve_prints_the_developers_page_and_api_documentation(
    tmp_path: Path, free_port: int
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "token_guard.cli", "serve", "--port", str(free_port),
         "--log-level", "warning"],
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any("API documentation" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        urls = re.findall(r"(http://\S+)$", "".join(lines), re.MULTILINE)
        base = f"http://127.0.0.1:{free_port}"
        assert f"{base}/developers" in urls and f"{base}/openapi.json" in urls
        # The URLs are printed as the server starts; it may take a moment to listen.
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=10)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None, lines
                time.sleep(0.1)
        for url in (f"{base}/developers", f"{base}/openapi.json"):
            assert httpx.get(url, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
