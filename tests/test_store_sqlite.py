"""SQLiteStore: the shared contract on real files, plus what only a file store has:
schema versions and migration, WAL and locking between writers, bad rows, and the
cross-process change feed (with a second OS process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.store_contract import EVENT_WAIT, StoredBodyContract, wait_for
from tests.tokens import body
from token_guard.core.errors import ConfigurationError, StoreError, StoreUnavailable
from token_guard.core.records import ChangeEvent
from token_guard.core.secret import hash_secret, new_secret
from token_guard.core.spec import parse_token_spec
from token_guard.stores import SQLiteStore
from token_guard.stores.base import TokenStore
from token_guard.stores.schema import (
    LATEST_SQLITE_VERSION,
    SQLITE_MIGRATIONS,
    migrate_sqlite,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.anyio




def file_bytes(path: Path) -> bytes:
    """The database file and its WAL and shared-memory files, concatenated."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


class TestSQLiteStore(StoredBodyContract):
    """The contract on a real SQLite file under tmp_path."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[TokenStore]:
        """A fresh SQLiteStore on its own file."""
        s = SQLiteStore(tmp_path / "tokens.db", poll_interval=0.05)
        yield s
        await s.close()

    async def stored_bytes(self, store: TokenStore) -> bytes | None:
        """The raw bytes of the database, WAL included."""
        assert isinstance(store, SQLiteStore)
        return file_bytes(Path(store.path))

    async def stored_body(self, store: TokenStore, token_id: str) -> dict[str, Any]:
        """The body column, decoded."""
        assert isinstance(store, SQLiteStore)
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            (text,) = conn.execute("SELECT body FROM tokens WHERE id = ?", (token_id,)).fetchone()
        stored: dict[str, Any] = json.loads(text)
        return stored

    async def write_stored_body(
        self, store: TokenStore, token_id: str, stored: dict[str, Any]
    ) -> None:
        """Overwrite the body column with another process's connection."""
        assert isinstance(store, SQLiteStore)
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute("UPDATE tokens SET body = ? WHERE id = ?", (json.dumps(stored), token_id))


def test_sqlite_store_satisfies_the_protocol(tmp_path: Path) -> None:
    assert isinstance(SQLiteStore(tmp_path / "x.db"), TokenStore)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        pytest.param({"poll_interval": 0}, "poll_interval", id="poll-zero"),
        pytest.param({"busy_timeout": -1}, "busy_timeout", id="busy-negative"),
        pytest.param({"change_retention": True}, "change_retention", id="retention-bool"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    tmp_path: Path, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        SQLiteStore(tmp_path / "x.db", **kwargs)


# -- schema ------------------------------------------------------------------------------
async def test_open_creates_the_schema_in_wal_mode_at_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_SQLITE_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM token_secrets WHERE secret_hash = ?", ("x",)
        ).fetchall()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(tokens)")]
    assert "USING INDEX" in " ".join(str(row) for row in plan)
    assert columns == ["id", "body", "created_at", "revoked_at", "last_used_at", "disabled_at"]


@pytest.mark.parametrize("old_version", [1, 2])
async def test_an_older_schema_is_migrated_on_open_and_keeps_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, old_version: int
) -> None:
    path = tmp_path / "old.db"
    secret, other, broken = new_secret(), new_secret(), new_secret()
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate_sqlite(conn, SQLITE_MIGRATIONS[:old_version]) == old_version
    insert = (
        "INSERT INTO tokens (id, secret_hash, name, grants, referers, allowed_apis,"
        " expiration_date, created_at, revoked_at, last_used_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    grants = json.dumps([{"connection_name": "dw", "source": "p.d.t"}])
    conn.execute(insert, (
        "tok_old", hash_secret(secret), "from v1", grants, "[]", '["sql"]', None,
        "2024-01-02T03:04:05.000000Z", None, "2024-02-03T04:05:06.000007Z",
    ))
    conn.execute(insert, (
        "tok_dated", hash_secret(other), "dated", grants, '["https://example.com"]',
        '["maps", "sql"]', "2099-01-01T00:00:00.000000Z", "2024-01-02T03:04:05.000000Z",
        "2024-03-01T00:00:00.000000Z", None,
    ))
    # A row edited by hand into invalid JSON must not stop the upgrade of the others.
    conn.execute(insert, (
        "tok_broken", hash_secret(broken), "broken", "not json", "[]", '["sql"]', None,
        "2024-01-02T03:04:05.000000Z", None, None,
    ))
    conn.close()

    store = SQLiteStore(path)
    record = await store.get_by_secret_hash(hash_secret(secret))
    assert record is not None and record.id == "tok_old" and record.name == "from v1"
    assert [(g.connection_name, g.source) for g in record.grants] == [("dw", "p.d.t")]
    assert record.allowed_apis == ("sql",) and record.expiration_date is None
    assert record.last_used_at == datetime(2024, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
    dated = await store.get_by_secret_hash(hash_secret(other))
    assert dated is not None and dated.expiration_date == datetime(2099, 1, 1, tzinfo=UTC)
    assert dated.referers == ("https://example.com",)
    assert dated.revoked_at == datetime(2024, 3, 1, tzinfo=UTC)
    with caplog.at_level(logging.ERROR, logger="token_guard.stores"):
        assert await store.get_by_secret_hash(hash_secret(broken)) is None
    assert "tok_broken" in caplog.text
    events: list[ChangeEvent] = []
    store.subscribe(events.append)
    updated = await store.update_token("tok_old", {"name": "renamed"})
    await store.revoke_token("tok_old")  # the v2 change feed works on the migrated file
    with pytest.raises(StoreError, match="revoked"):
        await store.revoke_token("tok_broken")  # still revocable, still unreadable
    await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == LATEST_SQLITE_VERSION
        assert check.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 3
    assert events == [
        ChangeEvent("updated", "tok_old"),
        ChangeEvent("revoked", "tok_old"),
        ChangeEvent("revoked", "tok_broken"),
    ]
    assert updated.name == "renamed" and updated.grants == record.grants

    again = SQLiteStore(path)  # reopening an up-to-date file changes nothing
    assert (await again.get_token("tok_old")) is not None
    await again.close()


async def test_a_newer_schema_than_known_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_SQLITE_VERSION + 1}")
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="upgrade token_guard"):
        await store.open()
    await store.close()


async def test_a_file_that_is_not_a_database_makes_the_store_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match=r"garbage\.db"):
        await store.get_by_secret_hash(hash_secret(new_secret()))
    await store.close()


# -- several writers -------------------------------------------------------------------------
async def test_two_stores_on_one_file_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    a, b = SQLiteStore(path), SQLiteStore(path)
    issued = await asyncio.gather(
        *(s.create_token(body(name=f"n{i}")) for i in range(15) for s in (a, b))
    )
    listed = await a.list_tokens(limit=100)
    assert sorted(r.id for r in listed) == sorted(i.id for i in issued)
    await a.close()
    await b.close()


async def test_a_write_lock_held_past_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, busy_timeout=0.2)
    issued = await store.create_token(body())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's long write
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.revoke_token(issued.id)
        # Readers are not blocked by a writer in WAL mode.
        assert await store.get_token(issued.id) == issued.record
    finally:
        other.execute("ROLLBACK")
        other.close()
    revoked = await store.revoke_token(issued.id)
    assert revoked.revoked_at is not None
    await store.close()


# -- bad data ------------------------------------------------------------------------------
def stored_body(**changes: Any) -> str:
    """The example body as the store keeps it, with some fields replaced (... removes one)."""
    out = {**parse_token_spec(body()).as_json(), **changes}
    return json.dumps({k: v for k, v in out.items() if v is not ...})


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("body", "not json", id="body-unparseable"),
        pytest.param("body", "[]", id="body-not-an-object"),
        pytest.param(
            "body", stored_body(grants=[{"connection_name": "dw", "source": "p.*"}]),
            id="grant-invalid",
        ),
        pytest.param("body", stored_body(allowed_apis=["root"]), id="api-unknown"),
        pytest.param("body", stored_body(allowed_apis=...), id="required-field-missing"),
        pytest.param("body", stored_body(referers="https://x.com"), id="referers-not-list"),
        pytest.param("body", stored_body(expiration_date="soon"), id="expiry-garbage"),
        pytest.param("created_at", "yesterday", id="timestamp-garbage"),
    ],
)
async def test_a_row_with_bad_data_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, column: str, value: str
) -> None:
    path = tmp_path / "bad.db"
    store = SQLiteStore(path)
    issued = await store.create_token(body())
    good = await store.create_token(body(name="good"))
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE tokens SET {column} = ? WHERE id = ?", (value, issued.id))
    with caplog.at_level(logging.ERROR, logger="token_guard.stores"):
        assert await store.get_by_secret_hash(hash_secret(issued.token)) is None
        assert await store.get_token(issued.id) is None
        assert [r.id for r in await store.list_tokens()] == [good.id]
    assert issued.id in caplog.text
    assert issued.token not in caplog.text
    with pytest.raises(StoreError, match=issued.id):
        await store.update_token(issued.id, {"name": "fixed?"})
    with pytest.raises(StoreError, match="revoked"):
        await store.revoke_token(issued.id)  # revoked even so
    with sqlite3.connect(path) as conn:
        (revoked_at,) = conn.execute(
            "SELECT revoked_at FROM tokens WHERE id = ?", (issued.id,)
        ).fetchone()
    assert revoked_at is not None
    await store.close()


# -- the change feed ---------------------------------------------------------------------------
async def test_a_second_store_on_the_file_hears_changes_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "feed.db"
    writer = SQLiteStore(path)
    reader = SQLiteStore(path, poll_interval=0.05)
    events: list[ChangeEvent] = []
    reader.subscribe(events.append)
    await reader.open()
    issued = await writer.create_token(body())
    await writer.revoke_token(issued.id)
    expected = [ChangeEvent("created", issued.id), ChangeEvent("revoked", issued.id)]
    await wait_for(lambda: events == expected, "the writer's changes")
    # The writer's own subscribers hear its changes once (at once, not again by polling).
    own: list[ChangeEvent] = []
    writer.subscribe(own.append)
    await writer.update_token(issued.id, {"name": "x"})
    await wait_for(lambda: ChangeEvent("updated", issued.id) in events, "the update")
    await asyncio.sleep(0.2)
    assert own == [ChangeEvent("updated", issued.id)]
    await writer.close()
    await reader.close()


async def test_old_changes_are_pruned_but_the_newest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "pruned.db"
    writer = SQLiteStore(path, change_retention=1e-6)
    issued = await writer.create_token(body())
    for _ in range(3):
        await writer.revoke_token(issued.id)
    await writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM changes").fetchall() == [(4,)]


async def test_a_subscriber_that_missed_pruned_changes_gets_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "gap.db"
    writer = SQLiteStore(path)
    issued = await writer.create_token(body())  # change 1
    reader = SQLiteStore(path, poll_interval=0.05)
    events: list[ChangeEvent] = []
    reader.subscribe(events.append)
    await reader.open()  # the reader's feed starts after change 1
    with sqlite3.connect(path) as conn:
        # Changes 2..4 were pruned before the reader could poll them; 5 remains.
        conn.execute(
            "INSERT INTO changes (id, at, token_id, kind, origin)"
            " VALUES (5, '2030-01-01T00:00:00.000000Z', ?, 'revoked', 'elsewhere')",
            (issued.id,),
        )
    await wait_for(lambda: len(events) >= 2, "the reset and the change")
    assert events == [ChangeEvent("reset"), ChangeEvent("revoked", issued.id)]
    await writer.close()
    await reader.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from token_guard.stores import SQLiteStore

    async def main(path, token_id):
        store = SQLiteStore(path)
        await store.revoke_token(token_id, actor="other-process")
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_revocation_in_another_process_reaches_this_one(tmp_path: Path) -> None:
    path = tmp_path / "two-processes.db"
    store = SQLiteStore(path, poll_interval=0.1)
    events: list[ChangeEvent] = []
    store.subscribe(events.append)
    issued = await store.create_token(body())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(path), issued.id, env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(child.communicate(), EVENT_WAIT * 3)
    assert child.returncode == 0, err.decode()
    await wait_for(
        lambda: ChangeEvent("revoked", issued.id) in events, "the other process's revocation"
    )
    record = await store.get_token(issued.id)
    assert record is not None and record.revoked_at is not None
    assert (await store.list_audit(limit=1))[0].actor == "other-process"
    await store.close()


# -- readers and the write lock ------------------------------------------------------------
_LOCK_HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM changes WHERE id < 0")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
""")


async def test_lookups_do_not_wait_behind_a_write_stuck_on_another_process_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.db"
    store = SQLiteStore(path, busy_timeout=2.0)
    tokens = [await store.create_token(body(name=str(i))) for i in range(20)]
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LOCK_HOLDER, str(path), "4", stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    assert await asyncio.wait_for(holder.stdout.readline(), EVENT_WAIT) == b"locked\n"
    try:
        # A write queued first waits for the other process's lock on the writer thread...
        write = asyncio.ensure_future(store.revoke_token(tokens[0].id))
        await asyncio.sleep(0.05)
        # ...while every lookup is answered by the reader, during the lock.
        for issued in tokens:
            assert await store.get_by_secret_hash(hash_secret(issued.token)) == issued.record
        assert not write.done(), "the lookups waited for the write to give up"
        assert holder.returncode is None, "the lock was released before the lookups finished"
        with pytest.raises(StoreUnavailable, match="locked"):
            await write  # refused plainly, not applied
        got = await store.get_token(tokens[0].id)
        assert got is not None and got.revoked_at is None
    finally:
        await holder.wait()
    await store.close()


async def test_create_false_refuses_a_missing_file_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    store = SQLiteStore(path, create=False)
    with pytest.raises(StoreUnavailable, match=r"missing\.db.*does not exist"):
        await store.get_token("tok_x")
    assert not path.exists()
    created = SQLiteStore(path)  # the default creates it
    await created.open()
    await created.close()
    opened = SQLiteStore(path, create=False)
    assert await opened.list_tokens() == []
    await opened.close()


# -- the reader thread ------------------------------------------------------------------------
async def test_reads_after_close_fail_at_once_and_a_reopen_reads_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    issued = await store.create_token(body())
    reader = store._reader
    assert reader is not None
    await store.close()
    reader._thread.join()  # the thread ended with the store
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get_by_secret_hash(hash_secret(issued.token))
    with pytest.raises(RuntimeError):  # a stopped reader takes no job (none would be run)
        reader.call(lambda: None)
    await store.open()
    assert await store.get_by_secret_hash(hash_secret(issued.token)) == issued.record
    await store.close()


async def test_a_read_given_up_on_leaves_the_reader_answering_the_next(tmp_path: Path) -> None:
    import threading

    store = SQLiteStore(tmp_path / "t.db")
    first = await store.create_token(body(name="first"))
    second = await store.create_token(body(name="second"))
    assert store._reader is not None
    gate = threading.Event()
    held = store._reader.call(gate.wait)  # the reader is busy until the gate opens
    lookup = asyncio.ensure_future(store.get_by_secret_hash(hash_secret(first.token)))
    await asyncio.sleep(0)
    lookup.cancel()  # the asker gives up (its timeout) while its read is queued
    gate.set()
    assert await held is True
    with pytest.raises(asyncio.CancelledError):
        await lookup
    # The abandoned answer is dropped; the next read gets its own.
    assert await store.get_by_secret_hash(hash_secret(second.token)) == second.record
    with pytest.raises(StoreUnavailable, match="failed"):  # errors still arrive as before
        await store._read(lambda conn: conn.execute("SELECT * FROM no_such_table"))
    await store.close()


def test_a_read_answering_a_closed_loop_does_not_stop_the_reader(tmp_path: Path) -> None:
    import threading

    from token_guard.stores.sqlite import _ReadThread

    reader = _ReadThread("test-reader")
    gate = threading.Event()
    first = asyncio.new_event_loop()

    async def ask() -> asyncio.Future[bool]:
        return reader.call(gate.wait)

    first.run_until_complete(ask())
    first.close()  # gone before the answer: posting it fails, and is ignored
    gate.set()
    second = asyncio.new_event_loop()

    async def ask_and_wait() -> int:
        return await reader.call(lambda: 7)

    assert second.run_until_complete(ask_and_wait()) == 7
    second.close()
    reader.stop()
    reader._thread.join()
