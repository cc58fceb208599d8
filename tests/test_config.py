"""The configuration file: read, overridden by the environment, validated naming file and field,
and taken by TokenGuard / TokenGuardWSGI so they decide exactly as keyword arguments would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import token_guard as tg
from tests.tokens import FULL
from token_guard.config import load_config

FULL_FILE = """
store = "sqlite:///tokens.db"
prefix = "/api/"
allow_query_token = true
include_default_routes = false
max_body_bytes = 4096
max_query_bytes = 2048
allowed_functions = ["carto-un.carto.*"]

[connections]
carto_dw = "bigquery"
pg = { dialect = "postgres", default_path = ["analytics", "public"] }

[cache]
ttl = 30
negative_ttl = 1

[[routes]]
api = "sql"
path = "/api/custom/{connection}/things"
source_param = "name"
methods = ["get"]
sql_params = [{ name = "dir", check = "keyword", choices = ["asc", "desc"] }]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "token_guard.toml"
    path.write_text(text, "utf-8")
    return path


def test_every_setting_is_read(tmp_path: Path) -> None:
    settings = load_config(_write(tmp_path, FULL_FILE), environ={})
    assert settings.store == f"sqlite:///{(tmp_path / 'tokens.db').resolve()}"
    assert settings.prefix == "/api/" and settings.allow_query_token is True
    assert settings.include_default_routes is False
    assert (settings.max_body_bytes, settings.max_query_bytes) == (4096, 2048)
    assert settings.allowed_functions == ("carto-un.carto.*",)
    assert settings.connections["carto_dw"] == tg.Connection("bigquery")
    assert settings.connections["pg"] == tg.Connection("postgres", ("analytics", "public"))
    assert settings.cache == tg.CacheSettings(ttl=30, negative_ttl=1)
    assert settings.routes == (tg.Route(
        api="sql", path="/api/custom/{connection}/things", source_param="name",
        methods=frozenset({"GET"}),
        sql_params=(tg.SqlParam("dir", "keyword", frozenset({"asc", "desc"})),),
    ),)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param('[conections]\nc = "bigquery"\n', "conections: unknown setting; did you "
                     "mean 'connections'?", id="misspelled-table"),
        pytest.param('prefix = "/v3/"\n', "connections: missing", id="no-connections"),
        pytest.param('[connections]\nc = "bigqeury"\n', "connections['c']: unknown dialect "
                     "'bigqeury'; did you mean 'bigquery'?", id="dialect-typo"),
        pytest.param('[connections]\nc = { dialect = "bigquery", default_path = "p.ds" }\n',
                     "connections.c.default_path: must be a list", id="default-path-string"),
        pytest.param('[connections]\nc = { dialekt = "bigquery" }\n',
                     "connections.c.dialekt: unknown setting; did you mean 'dialect'?",
                     id="connection-key-typo"),
        pytest.param('max_body_bytes = "1MB"\n[connections]\nc = "bigquery"\n',
                     "max_body_bytes: must be a whole number", id="size-as-text"),
        pytest.param('allow_query_token = "yes"\n[connections]\nc = "bigquery"\n',
                     "allow_query_token: must be true or false", id="bool-as-text"),
        pytest.param('[connections]\nc = "bigquery"\n[cache]\nttl = -1\n',
                     "cache: CacheSettings.ttl must be finite and more than zero",
                     id="negative-ttl"),
        pytest.param('[connections]\nc = "bigquery"\n[cache]\nttll = 1\n',
                     "cache.ttll: unknown setting; did you mean 'ttl'?", id="cache-key-typo"),
        pytest.param('[connections]\nc = "bigquery"\n[[routes]]\napi = "sql"\n',
                     "routes[0].path: missing", id="route-without-path"),
        pytest.param('[connections]\nc = "bigquery"\n[[routes]]\napi = "sql"\n'
                     'path = "/x/{connection}"\nsql_params = [{ name = "d", check = "keywrd" }]\n',
                     "routes[0].sql_params[0].check: 'keywrd' is not a check; did you mean "
                     "'keyword'?", id="sql-check-typo"),
        pytest.param('prefix = "v3"\n[connections]\nc = "bigquery"\n', "prefix",
                     id="bad-prefix"),
        pytest.param("[connections\n", "not valid TOML", id="not-toml"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, says: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(tg.ConfigurationError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert says in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(tg.ConfigurationError, match=r"nowhere\.toml: cannot read"):
        load_config(tmp_path / "nowhere.toml", environ={})
    with pytest.raises(tg.ConfigurationError, match="TOKEN_GUARD_CONFIG"):
        load_config(environ={})


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_FILE)
    settings = load_config(environ={
        "TOKEN_GUARD_CONFIG": str(path),
        "TOKEN_GUARD_STORE": "postgresql://db.internal/tokens",
        "TOKEN_GUARD_ALLOW_QUERY_TOKEN": "false",
        "TOKEN_GUARD_MAX_BODY_BYTES": "100",
        "TOKEN_GUARD_ALLOWED_FUNCTIONS": "st_area, h3_polyfill",
        "TOKEN_GUARD_CONNECTIONS": "warehouse=snowflake,demo=sqlite",
        "TOKEN_GUARD_CACHE_TTL": "5",
        "TOKEN_GUARD_INCLUDE_DEFAULT_ROUTES": "no",
    })
    assert settings.store == "postgresql://db.internal/tokens"
    assert settings.prefix == "/api/" and settings.allow_query_token is False
    assert settings.max_body_bytes == 100 and settings.max_query_bytes == 2048
    assert settings.allowed_functions == ("st_area", "h3_polyfill")
    assert dict(settings.connections) == {"warehouse": tg.Connection("snowflake"),
                                          "demo": tg.Connection("sqlite")}
    assert settings.cache == tg.CacheSettings(ttl=5, negative_ttl=1)


def test_an_environment_override_is_validated_with_the_file(tmp_path: Path) -> None:
    # The file's routes live under /api/: moving the prefix away from them is refused.
    path = _write(tmp_path, FULL_FILE)
    with pytest.raises(tg.ConfigurationError, match="must start with the prefix '/v3/'"):
        load_config(path, environ={"TOKEN_GUARD_PREFIX": "/v3/"})
    plain = _write(tmp_path, '[connections]\nc = "bigquery"\n')
    moved = load_config(plain, environ={"TOKEN_GUARD_PREFIX": "/data/",
                                        "TOKEN_GUARD_INCLUDE_DEFAULT_ROUTES": "false"})
    assert moved.prefix == "/data/" and moved.include_default_routes is False


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        pytest.param("TOKEN_GUARD_ALLOW_QUERY_TOKEN", "maybe", "must be true or false",
                     id="bool"),
        pytest.param("TOKEN_GUARD_MAX_QUERY_BYTES", "64k", "must be a whole number", id="int"),
        pytest.param("TOKEN_GUARD_CONNECTIONS", "carto_dw", "needs NAME=DIALECT", id="conn"),
        pytest.param("TOKEN_GUARD_CONNECTIONS", "c=bigqeury", "did you mean 'bigquery'",
                     id="dialect"),
        pytest.param("TOKEN_GUARD_CACHE_TTL", "soon", "must be a number", id="cache"),
    ],
)
def test_bad_environment_values_name_the_variable(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    path = _write(tmp_path, '[connections]\nc = "bigquery"\n')
    with pytest.raises(tg.ConfigurationError) as caught:
        load_config(path, environ={name: value})
    assert name in str(caught.value) and says in str(caught.value)


@pytest.mark.parametrize("store", ["sqlite:///:memory:", "postgresql://h/db",
                                   "sqlite:////abs/tokens.db"])
def test_only_relative_sqlite_paths_move_next_to_the_file(tmp_path: Path, store: str) -> None:
    path = _write(tmp_path, f'store = "{store}"\n[connections]\nc = "bigquery"\n')
    assert load_config(path, environ={}).store == store


CONFIG = """
[connections]
carto_dw = "bigquery"

[cache]
ttl = 7
"""


@pytest.mark.anyio
async def test_token_guard_takes_the_file_and_decides_as_with_keywords(tmp_path: Path) -> None:
    store = tg.MemoryStore()
    issued = await store.create_token(FULL)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    from_file = tg.TokenGuard(inner, store=store, config=_write(tmp_path, CONFIG))
    from_code = tg.TokenGuard(inner, store=store, connections={"carto_dw": "bigquery"},
                              cache=tg.CacheSettings(ttl=7))
    assert from_file.guard.resolver.settings.ttl == 7
    bearer = f"Bearer {issued.token}".encode()
    for path in (b"/v3/maps/carto_dw/table", b"/v3/maps/other/table"):
        for name in (b"proj.ds.stores", b"proj.secret.users", b"stores"):
            decided = [
                await g.guard.check_async("GET", path, b"name=" + name, bearer)
                for g in (from_file, from_code)
            ]
            assert repr(decided[0]) == repr(decided[1])


def test_keywords_override_the_configuration(tmp_path: Path) -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    path = _write(tmp_path, CONFIG)
    guard = tg.TokenGuard(inner, store=tg.MemoryStore(), config=tg.load_config(path),
                          cache=tg.CacheSettings(ttl=3), allow_query_token=True)
    assert guard.guard.resolver.settings.ttl == 3
    assert guard.guard.allow_query_token is True
    assert "carto_dw" in guard.guard.policy.connections


def test_the_store_comes_from_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'store = "tokens.db"\n' + CONFIG)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    guard = tg.TokenGuard(inner, config=path)
    assert isinstance(guard.guard.store, tg.SQLiteStore)
    assert guard.guard.store.path == str((tmp_path / "tokens.db").resolve())
    with pytest.raises(tg.ConfigurationError, match="TokenGuard: store: required"):
        tg.TokenGuard(inner, config=_write(tmp_path, CONFIG))


def test_an_error_in_the_file_names_the_class_the_file_and_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, '[connections]\nc = "bigqeury"\n')
    with pytest.raises(tg.ConfigurationError) as caught:
        tg.TokenGuardWSGI(lambda e, s: [], store=tg.MemoryStore(), config=path)
    assert str(caught.value).startswith(f"TokenGuardWSGI: {path}: connections['c']")


def test_token_guard_wsgi_takes_the_file(tmp_path: Path) -> None:
    guard = tg.TokenGuardWSGI(lambda e, s: [], store=tg.MemoryStore(),
                              config=_write(tmp_path, CONFIG))
    try:
        assert guard.guard.resolver.settings.ttl == 7
        assert "carto_dw" in guard.guard.policy.connections
    finally:
        guard.close()


def test_a_store_opened_from_the_file_is_read_at_start_up_and_closed_at_shutdown(
    tmp_path: Path,
) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    path = _write(tmp_path, 'store = "tokens.db"\n' + CONFIG)
    guard = tg.TokenGuard(Starlette(), config=path)
    store = guard.guard.store
    assert isinstance(store, tg.SQLiteStore)
    with TestClient(guard):
        assert (tmp_path / "tokens.db").exists()  # the start-up probe opened it
        assert store._state == "open"
    assert store._state == "closed"


def test_flask_token_guard_takes_the_file(tmp_path: Path) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)
    guard = tg.FlaskTokenGuard(app, store=tg.MemoryStore(), config=_write(tmp_path, CONFIG))
    try:
        assert guard.wsgi is not None and guard.wsgi.guard.resolver.settings.ttl == 7
    finally:
        guard.close()
