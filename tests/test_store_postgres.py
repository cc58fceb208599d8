"""PostgresStore: the shared store contract on the real PostgreSQL, plus what only it has:
schema versions shared with SQLite, the unique index, bad rows, configuration, and the
LISTEN/NOTIFY change feed between two instances.

Every test works in its own PostgreSQL schema (``tg_test_<random>``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.store_contract import EVENT_WAIT, StoredBodyContract, wait_for
from tests.tokens import body
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError, StoreError, StoreUnavailable
from token_guard.core.records import ChangeEvent, TokenRecord
from token_guard.core.secret import hash_secret, new_secret
from token_guard.core.spec import parse_token_spec
from token_guard.resolver import Resolver
from token_guard.stores.base import TokenStore
from token_guard.stores.postgres import (
    POSTGRES_MIGRATIONS,
    SCHEMA_VERSION,
    PostgresStore,
    migrate_postgres,
)
from token_guard.stores.schema import LATEST_SQLITE_VERSION, SQLITE_MIGRATIONS

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]




@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped (with everything in it) afterwards."""
    name = f"tg_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


async def execute(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a direct connection (as an operator or another tool would)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(statement, params)
        return await cur.fetchall() if cur.description else []


class TestPostgresStore(StoredBodyContract):
    """The contract on the real PostgreSQL, each test in its own schema."""

    @pytest.fixture
    async def store(self, postgres_dsn: str, schema: str) -> AsyncIterator[TokenStore]:
        """A fresh PostgresStore on its own schema."""
        s = PostgresStore(postgres_dsn, schema=schema, pool_max=4)
        yield s
        await s.close()

    async def stored_bytes(self, store: TokenStore) -> bytes | None:
        """Every row of every table of the store's schema, as text."""
        assert isinstance(store, PostgresStore)
        dsn = store._dsn
        out = []
        for table in ("tokens", "token_secrets", "oauth_clients", "audit", "meta"):
            rows = await execute(dsn, f"SELECT t::text FROM {store.schema}.{table} AS t")
            out += [r[0] for r in rows]
        return "\n".join(out).encode()

    async def stored_body(self, store: TokenStore, token_id: str) -> dict[str, Any]:
        """The body column (psycopg decodes JSONB)."""
        assert isinstance(store, PostgresStore)
        rows = await execute(
            store._dsn, f"SELECT body FROM {store.schema}.tokens WHERE id = %s", (token_id,)
        )
        stored: dict[str, Any] = rows[0][0]
        return stored

    async def write_stored_body(
        self, store: TokenStore, token_id: str, stored: dict[str, Any]
    ) -> None:
        """Overwrite the body column from another connection."""
        assert isinstance(store, PostgresStore)
        await execute(
            store._dsn, f"UPDATE {store.schema}.tokens SET body = %s::jsonb WHERE id = %s",
            (json.dumps(stored), token_id),
        )


def test_postgres_store_satisfies_the_protocol() -> None:
    assert isinstance(PostgresStore("postgresql://x@127.0.0.1/db"), TokenStore)


def test_schema_versions_follow_sqlite_step_for_step() -> None:
    assert SCHEMA_VERSION == LATEST_SQLITE_VERSION
    assert [m.version for m in POSTGRES_MIGRATIONS] == [m.version for m in SQLITE_MIGRATIONS]
    assert POSTGRES_MIGRATIONS[0].description == SQLITE_MIGRATIONS[0].description
    assert POSTGRES_MIGRATIONS[2].description == SQLITE_MIGRATIONS[2].description


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        pytest.param(("sqlite:///tokens.db",), {}, "postgresql://", id="sqlite-url"),
        pytest.param(("postgresql://h/db",), {"schema": "a-b"}, "schema", id="schema-dash"),
        pytest.param(("postgresql://h/db",), {"schema": "1abc"}, "schema", id="schema-digit"),
        pytest.param(("postgresql://h/db",), {"schema": "x" * 51}, "schema", id="schema-long"),
        pytest.param(("postgresql://h/db",), {"pool_min": 5, "pool_max": 2}, "pool_min",
                     id="pool-inverted"),
        pytest.param(("postgresql://h/db",), {"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param(("postgresql://h/db",), {"feed_heartbeat": -1}, "feed_heartbeat",
                     id="heartbeat-negative"),
        pytest.param(("host=h port=notaport x",), {}, "DSN", id="dsn-garbled"),
    ],
)
def test_bad_configuration_is_refused_naming_the_setting(
    args: tuple[str, ...], kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        PostgresStore(*args, **kwargs)


def test_dsn_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKEN_GUARD_STORE", raising=False)
    with pytest.raises(ConfigurationError, match="TOKEN_GUARD_STORE"):
        PostgresStore()
    monkeypatch.setenv("TOKEN_GUARD_STORE", "postgresql://u@127.0.0.1:5999/db")
    assert PostgresStore()._where == "127.0.0.1:5999"


async def test_unreachable_server_is_unavailable_and_never_shows_the_password(
    free_port: int,
) -> None:
    store = PostgresStore(
        f"postgresql://u:hunter2secret@127.0.0.1:{free_port}/db", timeout=1.0, connect_timeout=1
    )
    with pytest.raises(StoreUnavailable) as info:
        await store.get_by_secret_hash("0" * 64)
    assert "hunter2secret" not in str(info.value)
    assert f"127.0.0.1:{free_port}" in str(info.value)
    await store.close()


async def test_lookup_by_hash_is_backed_by_a_unique_index(postgres_dsn: str, schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=schema):
        rows = await execute(
            postgres_dsn,
            "SELECT i.indisunique, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'token_secrets'",
            (schema,),
        )
        columns = await execute(
            postgres_dsn,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'tokens' ORDER BY ordinal_position",
            (schema,),
        )
    unique_on_hash = [d for unique, d in rows if unique and "(secret_hash)" in d]
    assert len(unique_on_hash) == 1, rows
    assert [c for c, _ in columns] == [
        "id", "created_at", "revoked_at", "last_used_at", "body", "disabled_at"
    ]
    assert dict(columns)["body"] == "jsonb"


async def test_a_schema_made_by_an_older_version_migrates_and_keeps_its_tokens(
    postgres_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret, broken = new_secret(), new_secret()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        assert await migrate_postgres(conn, schema, POSTGRES_MIGRATIONS[:2]) == 2
        insert = sql.SQL(
            "INSERT INTO {}.tokens (id, secret_hash, name, grants, referers, allowed_apis, "
            "expiration_date, created_at, last_used_at) VALUES (%s, %s, %s, %s, %s, %s, %s, "
            "%s, %s)"
        ).format(sql.Identifier(schema))
        grants = '[{"connection_name": "dw", "source": "p.d.t"}]'
        await conn.execute(insert, (
            "tok_old", hash_secret(secret), "from v2", grants, '["https://example.com"]',
            '["maps", "sql"]', datetime(2099, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
            datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 2, 3, tzinfo=UTC),
        ))
        # A row edited by hand into invalid JSON must not stop the upgrade of the others.
        await conn.execute(insert, (
            "tok_broken", hash_secret(broken), "broken", "[{not json", "[]", '["sql"]', None,
            datetime(2024, 1, 2, tzinfo=UTC), None,
        ))
    async with PostgresStore(postgres_dsn, schema=schema) as store:
        record = await store.get_by_secret_hash(hash_secret(secret))
        assert record is not None and record.id == "tok_old" and record.name == "from v2"
        assert [(g.connection_name, g.source) for g in record.grants] == [("dw", "p.d.t")]
        assert record.referers == ("https://example.com",)
        assert record.allowed_apis == ("maps", "sql")
        assert record.expiration_date == datetime(2099, 1, 1, 0, 0, 0, 5, tzinfo=UTC)
        assert record.created_at == datetime(2024, 1, 2, tzinfo=UTC)
        assert record.last_used_at == datetime(2024, 2, 3, tzinfo=UTC)
        with caplog.at_level(logging.ERROR, logger="token_guard.stores"):
            assert await store.get_by_secret_hash(hash_secret(broken)) is None
        assert "tok_broken" in caplog.text
        renamed = await store.update_token("tok_old", {"name": "renamed"})
        assert renamed.grants == record.grants
        assert (await store.revoke_token("tok_old")).revoked_at is not None
        with pytest.raises(StoreError, match="revoked"):
            await store.revoke_token("tok_broken")  # still revocable, still unreadable
    version = await execute(
        postgres_dsn, f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'"
    )
    assert version == [(str(SCHEMA_VERSION),)]


async def test_open_migrates_once_and_reopens_an_existing_schema(
    postgres_dsn: str, schema: str
) -> None:
    # Two instances opening a fresh schema at once: the advisory lock serialises them.
    a = PostgresStore(postgres_dsn, schema=schema)
    b = PostgresStore(postgres_dsn, schema=schema)
    await asyncio.gather(a.open(), b.open())
    issued = await a.create_token(body())
    await a.close()
    await b.close()
    version = await execute(
        postgres_dsn, f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'"
    )
    assert version == [(str(SCHEMA_VERSION),)]
    async with PostgresStore(postgres_dsn, schema=schema) as again:
        assert await again.get_token(issued.id) == issued.record


async def test_a_newer_schema_is_refused_not_downgraded(postgres_dsn: str, schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=schema):
        pass
    await execute(
        postgres_dsn,
        f"UPDATE {schema}.meta SET value = %s WHERE key = 'schema_version'",
        (str(SCHEMA_VERSION + 1),),
    )
    store = PostgresStore(postgres_dsn, schema=schema)
    with pytest.raises(StoreError, match="upgrade token_guard") as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)
    await store.close()


def stored_body(**changes: Any) -> str:
    """The example body as the store keeps it, with some fields replaced (... removes one)."""
    out = {**parse_token_spec(body()).as_json(), **changes}
    return json.dumps({k: v for k, v in out.items() if v is not ...})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"a string"', id="body-not-an-object"),
        pytest.param(stored_body(grants={"connection_name": "c"}), id="grants-not-a-list"),
        pytest.param(
            stored_body(grants=[{"connection_name": "c", "source": "p.*"}]), id="grant-invalid"
        ),
        pytest.param(stored_body(allowed_apis=["maps", "ftp"]), id="api-unknown"),
        pytest.param(stored_body(allowed_apis=...), id="required-field-missing"),
        pytest.param(stored_body(referers=None), id="referers-null"),
        pytest.param(stored_body(expiration_date="soon"), id="expiry-garbage"),
    ],
)
async def test_a_row_that_does_not_validate_is_a_denial_not_a_crash(
    postgres_dsn: str, schema: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with PostgresStore(postgres_dsn, schema=schema) as store:
        issued = await store.create_token(body())
        await execute(
            postgres_dsn, f"UPDATE {schema}.tokens SET body = %s::jsonb WHERE id = %s",
            (value, issued.id),
        )
        with caplog.at_level(logging.ERROR, logger="token_guard"):
            assert await store.get_by_secret_hash(hash_secret(issued.token)) is None
        assert issued.id in caplog.text and issued.token not in caplog.text
        assert await store.get_token(issued.id) is None
        assert issued.id not in [r.id for r in await store.list_tokens()]
        with pytest.raises(StoreError, match="unreadable"):
            await store.update_token(issued.id, {"name": "x"})
        # Revocation still works on a broken row: it must never be stuck "active".
        with pytest.raises(StoreError, match="revoked"):
            await store.revoke_token(issued.id)
        rows = await execute(
            postgres_dsn, f"SELECT revoked_at IS NOT NULL FROM {schema}.tokens WHERE id = %s",
            (issued.id,),
        )
        assert rows == [(True,)]


# -- the change feed between instances --------------------------------------------------------
async def test_a_revocation_in_one_instance_reaches_the_others_subscribers(
    postgres_dsn: str, schema: str
) -> None:
    async with (
        PostgresStore(postgres_dsn, schema=schema) as a,
        PostgresStore(postgres_dsn, schema=schema) as b,
    ):
        assert await b.wait_feed_ready(EVENT_WAIT)
        seen_by_b: list[ChangeEvent] = []
        b.subscribe(seen_by_b.append)
        issued = await a.create_token(body())
        await a.update_token(issued.id, {"name": "renamed"})
        await a.revoke_token(issued.id)
        expected = [
            ChangeEvent("created", issued.id),
            ChangeEvent("updated", issued.id),
            ChangeEvent("revoked", issued.id),
        ]
        await wait_for(lambda: seen_by_b == expected, f"b to hear {expected}")
        found = await b.get_by_secret_hash(hash_secret(issued.token))
        assert found is not None and found.revoked_at is not None


async def test_own_changes_are_announced_once_not_again_by_the_feed(
    postgres_dsn: str, schema: str
) -> None:
    async with (
        PostgresStore(postgres_dsn, schema=schema) as a,
        PostgresStore(postgres_dsn, schema=schema) as b,
    ):
        assert await a.wait_feed_ready(EVENT_WAIT) and await b.wait_feed_ready(EVENT_WAIT)
        seen_by_a: list[ChangeEvent] = []
        seen_by_b: list[ChangeEvent] = []
        a.subscribe(seen_by_a.append)
        b.subscribe(seen_by_b.append)
        first = await a.create_token(body())
        second = await a.create_token(body())
        # b hearing the second proves a's feed delivered the first back to a as well.
        await wait_for(lambda: ChangeEvent("created", second.id) in seen_by_b, "b's events")
        await wait_for(lambda: len(seen_by_b) == 2, "both events at b")
        assert seen_by_a == [ChangeEvent("created", first.id), ChangeEvent("created", second.id)]


async def test_an_unknown_notification_resets_caches(postgres_dsn: str, schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=schema) as store:
        assert await store.wait_feed_ready(EVENT_WAIT)
        seen: list[ChangeEvent] = []
        store.subscribe(seen.append)
        await execute(postgres_dsn, "SELECT pg_notify(%s, 'something-new')", (store._channel,))
        await wait_for(lambda: seen == [ChangeEvent("reset")], "a reset")


async def test_the_listener_reconnects_after_its_connection_is_killed(
    postgres_dsn: str, schema: str
) -> None:
    async with PostgresStore(postgres_dsn, schema=schema) as a:
        assert await a.wait_feed_ready(EVENT_WAIT)
        seen: list[ChangeEvent] = []
        a.subscribe(seen.append)
        # Kill a's listener backend the way an operator or a failover would.
        killed = await execute(
            postgres_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query ILIKE %s AND pid <> pg_backend_pid()",
            (f'LISTEN "{a._channel}"%',),
        )
        assert killed == [(True,)]
        await wait_for(lambda: ChangeEvent("reset") in seen, "a reset after reconnecting")
        assert a.feed_healthy
        async with PostgresStore(postgres_dsn, schema=schema) as b:
            issued = await b.create_token(body())
            await wait_for(
                lambda: ChangeEvent("created", issued.id) in seen, "events after reconnecting"
            )


def test_repr_names_host_and_schema_but_never_the_password() -> None:
    store = PostgresStore("postgresql://u:hunter2secret@db.internal:6432/x", schema="tg")
    assert repr(store) == "PostgresStore('db.internal:6432', schema='tg')"


async def test_lifecycle_changes_on_one_instance_evict_the_other_instances_cache(
    postgres_dsn: str, schema: str
) -> None:
    async with (
        PostgresStore(postgres_dsn, schema=schema) as mine,
        PostgresStore(postgres_dsn, schema=schema) as other,
    ):
        assert await mine.wait_feed_ready(EVENT_WAIT) and await other.wait_feed_ready(EVENT_WAIT)
        issued = await mine.create_token(body())
        resolver: Resolver[TokenRecord] = Resolver(mine, lambda r: r)
        await resolver.start()
        assert isinstance(await resolver.resolve(issued.token), TokenRecord)
        rotated = await other.rotate_token(issued.id, grace_seconds=3600)
        await wait_for(lambda: resolver.lookup(issued.token) is None, "the rotation's eviction")
        assert isinstance(await resolver.resolve(issued.token), TokenRecord)  # in its grace
        await other.end_rotation_grace(issued.id)
        await wait_for(lambda: resolver.lookup(issued.token) is None, "the early end's eviction")
        refused = await resolver.resolve(issued.token)
        assert isinstance(refused, Denial) and refused.code == "token_rotated"
        await other.disable_token(issued.id)
        await wait_for(lambda: resolver.lookup(rotated.token) is None, "the disable's eviction")
        refused = await resolver.resolve(rotated.token)
        assert isinstance(refused, Denial) and refused.code == "token_disabled"
        await other.enable_token(issued.id)
        await wait_for(lambda: resolver.lookup(rotated.token) is None, "the enable's eviction")
        assert isinstance(await resolver.resolve(rotated.token), TokenRecord)
        await resolver.close()
