"""parse_store_url: the one reading of ``--store``, ``TOKEN_GUARD_STORE`` and open_store's URL."""

from __future__ import annotations

import pytest

from token_guard.cli.store import default_key_path
from token_guard.core.errors import ConfigurationError
from token_guard.stores import SQLiteStore, open_store
from token_guard.stores.urls import ENV_VAR, StoreURL, parse_store_url

PG = "postgresql://user:p%40ss@db.example.com:5432/app?sslmode=require"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///tokens.db", StoreURL("sqlite", "tokens.db"), id="sqlite-relative"),
        pytest.param(
            "sqlite:////var/lib/tg/tokens.db",
            StoreURL("sqlite", "/var/lib/tg/tokens.db"),
            id="sqlite-absolute",
        ),
        pytest.param(
            "sqlite:////data/my%20tokens%25.db",
            StoreURL("sqlite", "/data/my tokens%.db"),
            id="sqlite-percent-encoded",
        ),
        pytest.param("SQLite:///Tokens.db", StoreURL("sqlite", "Tokens.db"), id="scheme-any-case"),
        pytest.param("sqlite:///:memory:", StoreURL("sqlite", ":memory:"), id="sqlite-memory"),
        pytest.param("tokens.db", StoreURL("sqlite", "tokens.db"), id="bare-relative"),
        pytest.param(
            "/srv/my%20tokens.db", StoreURL("sqlite", "/srv/my%20tokens.db"), id="bare-literal"
        ),
        pytest.param(PG, StoreURL("postgresql", PG), id="postgresql-kept-whole"),
        pytest.param(
            "postgres://u@h/db", StoreURL("postgresql", "postgres://u@h/db"), id="postgres-alias"
        ),
    ],
)
def test_a_store_url_names_its_store(url: str, expected: StoreURL) -> None:
    assert parse_store_url(url, environ={}) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("sqlite://tokens.db", "names no file", id="sqlite-two-slashes"),
        pytest.param("sqlite:///", "names no file", id="sqlite-no-path"),
        pytest.param("mysql://u@h/db", "unknown URL scheme 'mysql'", id="unknown-scheme"),
        pytest.param("ftp+x://h/db", "unknown URL scheme 'ftp\\+x'", id="other-scheme"),
    ],
)
def test_a_bad_store_url_is_refused_saying_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_store_url(url, environ={})
    assert "sqlite:///" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "environ", "default", "expected"),
    [
        pytest.param(
            "a.db", {ENV_VAR: "sqlite:///env.db"}, "sqlite:///d.db", "a.db", id="url-wins"
        ),
        pytest.param(
            None, {ENV_VAR: "sqlite:///e%20v.db"}, "sqlite:///d.db", "e v.db", id="env-decoded"
        ),
        pytest.param(None, {ENV_VAR: ""}, "sqlite:///d.db", "d.db", id="empty-env-is-unset"),
        pytest.param(None, {}, "sqlite:///d.db", "d.db", id="default-last"),
    ],
)
def test_the_url_comes_from_the_argument_then_the_environment_then_the_default(
    url: str | None, environ: dict[str, str], default: str, expected: str
) -> None:
    assert parse_store_url(url, default=default, environ=environ).target == expected


def test_no_url_anywhere_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=ENV_VAR):
        parse_store_url(None, environ={})


def test_open_store_and_the_cli_read_a_url_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOKEN_GUARD_KEYS", raising=False)
    url = "sqlite:///dir%20one/tokens.db"
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == "dir one/tokens.db"
    assert str(default_key_path(url)) == "dir one/tokens.keys"
