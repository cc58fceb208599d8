"""The SQL stores' shared row codec (stores/rows.py): an unreadable row reads the same in both.

The rule under test: the row is logged as an error naming its id (never a secret) and is
treated as absent -- a token refused as unknown, an OAuth client unknown, an audit entry
left out -- while the readable rows around it are still served.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.tokens import body
from token_guard.core.errors import StoreError
from token_guard.core.secret import hash_secret
from token_guard.stores.base import TokenStore
from token_guard.stores.postgres import PostgresStore
from token_guard.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

Corrupt = Callable[[str, str, str, str, Any], Awaitable[None]]




@dataclass
class SqlStore:
    """A SQL store and a way to overwrite one of its cells behind its back."""

    store: TokenStore
    corrupt: Corrupt  # (table, column, value, key column, key)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def sql_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlStore]:
    """Each SQL store in turn, with a cell-overwriting helper speaking its dialect."""
    if request.param == "sqlite":
        path = tmp_path / "rows.db"
        store: TokenStore = SQLiteStore(path)

        async def corrupt_sqlite(table: str, column: str, value: str, key: str, at: Any) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (value, at))
            conn.close()

        yield SqlStore(store, corrupt_sqlite)
        await store.close()
        return
    dsn = request.getfixturevalue("postgres_dsn")
    schema = f"tg_test_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(dsn, schema=schema, pool_max=2)

    async def corrupt_postgres(table: str, column: str, value: str, key: str, at: Any) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            statement = sql.SQL("UPDATE {}.{} SET {} = %s WHERE {} = %s").format(
                sql.Identifier(schema), sql.Identifier(table), sql.Identifier(column),
                sql.Identifier(key),
            )
            await conn.execute(statement, (value, at))

    try:
        yield SqlStore(store, corrupt_postgres)
    finally:
        await store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_an_unreadable_token_is_logged_by_id_and_absent_in_every_read(
    sql_store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = sql_store.store
    bad = await store.create_token(body(name="bad"))
    good = await store.create_token(body(name="good"))
    # Valid JSON (a JSONB column takes nothing else) that is not a valid body.
    await sql_store.corrupt("tokens", "body", '{"allowed_apis": "sql"}', "id", bad.id)
    with caplog.at_level(logging.ERROR, logger="token_guard.stores"):
        assert await store.get_by_secret_hash(hash_secret(bad.token)) is None
        assert await store.get_token(bad.id) is None
        assert [r.id for r in await store.list_tokens()] == sorted([good.id])
    assert bad.id in caplog.text and "unreadable" in caplog.text
    assert bad.token not in caplog.text and hash_secret(bad.token) not in caplog.text
    with pytest.raises(StoreError, match=bad.id):
        await store.update_token(bad.id, {"name": "fixed?"})
    with pytest.raises(StoreError, match="revoked"):
        await store.revoke_token(bad.id)  # revoked first, so it can never stay active


async def test_a_secret_hash_past_its_expiry_is_found_marked_rotated(sql_store: SqlStore) -> None:
    # What secret rotation relies on: the old hash works until expires_at, then the record
    # it finds says so (state "rotated"), so the guard refuses it with its own code.
    store = sql_store.store
    issued = await store.create_token(body())
    by_hash = hash_secret(issued.token)
    now = datetime.now(UTC)
    await sql_store.corrupt(
        "token_secrets", "expires_at", "2999-01-01T00:00:00.000000Z", "token_id", issued.id
    )
    found = await store.get_by_secret_hash(by_hash)
    assert found is not None and found.state(now) == "active"
    await sql_store.corrupt(
        "token_secrets", "expires_at", "2000-01-01T00:00:00.000000Z", "token_id", issued.id
    )
    found = await store.get_by_secret_hash(by_hash)
    assert found is not None and found.id == issued.id
    assert found.state(now) == "rotated" and found.secret_expired(now)
    assert found.secret is not None
    assert found.secret.expires_at == datetime(2000, 1, 1, tzinfo=UTC)


async def test_an_unreadable_oauth_client_is_logged_by_id_and_unknown(
    sql_store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = sql_store.store
    await store.create_client("bad-client", hash_secret("s1"), "bad", ["read:tokens"])
    await store.create_client("good-client", hash_secret("s2"), "good", ["read:tokens"])
    await sql_store.corrupt("oauth_clients", "scopes", '{"read": 1}', "client_id", "bad-client")
    with caplog.at_level(logging.ERROR, logger="token_guard.stores"):
        assert await store.get_client("bad-client") is None
        assert [c.client_id for c in await store.list_clients()] == ["good-client"]
    assert "bad-client" in caplog.text and hash_secret("s1") not in caplog.text
    with pytest.raises(StoreError, match="bad-client"):
        await store.revoke_client("bad-client")
    found = await store.get_client("good-client")
    assert found is not None and found[1] == hash_secret("s2")


async def test_an_unreadable_audit_entry_is_logged_by_id_and_left_out(
    sql_store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = sql_store.store
    await store.add_audit("t", "first", None, {"n": 1})
    await store.add_audit("t", "second", None, {"n": 2})
    first = next(e for e in await store.list_audit() if e.action == "first")
    await sql_store.corrupt("audit", "detail", "[1, 2]", "id", first.id)
    with caplog.at_level(logging.ERROR, logger="token_guard.stores"):
        assert [e.action for e in await store.list_audit()] == ["second"]
    assert f"audit entry {first.id}" in caplog.text
