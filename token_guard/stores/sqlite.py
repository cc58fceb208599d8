"""SQLiteStore: the embedded default store, one file shared by the processes of one machine.

Choices, stated once:

* **Threading.** Two dedicated threads, each owning one connection (one-thread
  executors): the writer runs every write, migrations and the change-feed poll; the
  reader runs the lookups of the request path and the other reads. sqlite3 connections
  must not be shared between threads without a lock, and SQLite serialises writers
  anyway. Kept apart, a read never queues behind a write that is waiting for another
  process's write lock (in WAL mode readers proceed while a writer holds it).
  ``":memory:"`` has one connection only, so there everything runs on the writer.
* **Several processes.** WAL journal (readers never wait for the writer), a busy timeout
  (a writer waits for another process's write instead of failing; 1.5 s by default, less
  than the resolver's 2 s ``lookup_timeout``, so a request gets the store's own answer),
  ``BEGIN IMMEDIATE`` for every write and for migrations. ``synchronous`` stays FULL: a
  revocation that returned must survive a power cut.
* **Creating.** ``SQLiteStore(path)`` creates the file if it is missing (the embedded
  default); ``create=False`` refuses a missing file with ``StoreUnavailable`` naming the
  path (the CLI and ``serve`` use it unless given ``--create``), so a mistyped or deleted
  path never silently becomes an empty store.
* **Cross-process change feed.** Another process cannot push to us, so every write also
  appends to the ``changes`` table and each store with subscribers polls it every
  ``poll_interval`` seconds (default 0.5). That interval is the bound on how long a
  revocation made by one process may take to reach the caches of the others. Changes made
  through this instance are announced at once and skipped by its own poller.
* **Errors.** Any sqlite3 error (locked past the busy timeout, I/O, not a database)
  becomes ``StoreUnavailable``. A row whose data no longer reads is logged and treated as
  absent (``stores.rows``, shared with PostgreSQL): it is never allowed and never crashes
  a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from token_guard.core.errors import (
    ConfigurationError,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from token_guard.core.records import (
    AuditEntry,
    ChangeEvent,
    IssuedToken,
    OAuthClient,
    PublishedKey,
    SecretInfo,
    TokenRecord,
    UsageRow,
)
from token_guard.core.secret import hash_secret, new_secret, new_token_id, secret_prefix
from token_guard.core.spec import apply_update, format_datetime, parse_token_spec
from token_guard.stores.base import (
    AUDIT_CREATE,
    AUDIT_DISABLE,
    AUDIT_ENABLE,
    AUDIT_END_GRACE,
    AUDIT_REVOKE,
    AUDIT_ROTATE,
    AUDIT_UPDATE,
    DEFAULT_GRACE_SECONDS,
    ChangeListener,
    Listeners,
    TokenWrite,
    check_grace,
    check_limit,
    retired_key,
    revoked_is_final,
    utc_now,
)
from token_guard.stores.rows import (
    AUDIT_COLUMNS,
    CLIENT_COLUMNS,
    SECRET_COLUMNS,
    TOKEN_COLUMNS,
    audit_from_row,
    body_json,
    client_from_row,
    token_from_row,
)
from token_guard.stores.schema import format_timestamp, migrate_sqlite, parse_timestamp

logger = logging.getLogger("token_guard.stores")

R = TypeVar("R")

_CHANGE_KINDS = frozenset({"created", "updated", "revoked", "reset"})
# The token columns and its current secret's prefix (NULL for secrets issued before v4).
_TOKEN_SELECT = (
    f"{TOKEN_COLUMNS}, (SELECT prefix FROM token_secrets s WHERE s.token_id = tokens.id"
    " AND s.expires_at IS NULL ORDER BY s.rowid DESC LIMIT 1)"
)
_SECRET_LOOKUP = (
    "SELECT " + ", ".join(f"t.{c}" for c in TOKEN_COLUMNS.split(", "))
    + ", " + ", ".join(f"s.{c}" for c in SECRET_COLUMNS.split(", "))
    + " FROM token_secrets s JOIN tokens t ON t.id = s.token_id WHERE s.secret_hash = ?"
)
_POLL_BATCH = 1000


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so the busy timeout applies here instead of
    # a deadlock-prone lock upgrade halfway through.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (busy, I/O) leaves the transaction open; end it so the next
        # BEGIN on this connection does not fail too.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]


class _ReadThread:
    """The reader: one thread, its own connection, jobs in a queue, each answer posted to
    the loop that asked (``call_soon_threadsafe``).

    Lighter than a ``ThreadPoolExecutor`` and ``run_in_executor`` (its futures, locks and
    the chaining of a concurrent future to an asyncio one): a token lookup that misses the
    cache, which is every request of a flood of made-up tokens, costs ~110 k instructions
    less. A daemon thread: it only reads (``query_only``), and a store nobody closed must
    not hold the interpreter's exit.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders the last job before the stop
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], R]) -> asyncio.Future[R]:
        """The future of ``fn()`` on the reader thread (call it on the event loop's thread);
        RuntimeError once the reader is stopped."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("the reader thread was stopped")
            self._jobs.put((loop, answer, fn))
        return answer

    def stop(self) -> None:
        """Take no more jobs; the thread ends after those already queued."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run(*job)
            job = None  # nothing of it kept alive while waiting for the next one

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, answer: asyncio.Future[Any],
             fn: Callable[[], Any]) -> None:
        settle: Callable[[asyncio.Future[Any], Any], None]
        try:
            value = fn()
            settle = _settle
        except BaseException as exc:  # handed over, as a ThreadPoolExecutor's worker does
            value, settle = exc, _fail
        with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
            loop.call_soon_threadsafe(settle, answer, value)


def _settle(answer: asyncio.Future[Any], result: object) -> None:
    if not answer.done():  # not cancelled meanwhile (the asker's timeout)
        answer.set_result(result)


def _fail(answer: asyncio.Future[Any], exc: BaseException) -> None:
    if not answer.done():
        answer.set_exception(exc)


class SQLiteStore:
    """A ``TokenStore`` in one SQLite file (``":memory:"`` works for a single instance).

    ``busy_timeout`` is how long a write waits for another process's write (seconds).
    ``create``: make the file when it is missing (else refuse, naming the path).
    ``poll_interval`` bounds how late a change made by another process reaches this
    store's subscribers. Changes are kept in the feed ``change_retention`` seconds; a
    subscriber that fell further behind gets a ``reset`` event instead.
    """

    # The poller re-reads the feed table from its cursor after any failure, so no change
    # is lost while polling fails: the feed is late at worst, never broken.
    feed_healthy = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 1.5,
        poll_interval: float = 0.5,
        change_retention: float = 86_400.0,
        create: bool = True,
    ) -> None:
        for name, value in (
            ("busy_timeout", busy_timeout),
            ("poll_interval", poll_interval),
            ("change_retention", change_retention),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(
                    f"SQLiteStore {name} must be a positive number of seconds, got {value!r}"
                )
        self.path = os.fspath(path)
        self.create = create
        self.poll_interval = float(poll_interval)
        self._busy_timeout = float(busy_timeout)
        self._retention = timedelta(seconds=change_retention)
        self._origin = secrets.token_hex(8)  # tells this instance's changes from others'
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        # The reader thread and its connection (None for ":memory:": reads use the writer).
        self._reader: _ReadThread | None = None
        self._read_conn: sqlite3.Connection | None = None  # the reader thread only
        self._state = "new"  # new -> open -> closed -> open ...
        self._cursor = 0  # last change id seen; worker thread only
        self._listeners = Listeners()
        self._poller: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file, switch it to WAL, create or migrate the schema (idempotent)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="token_guard-sqlite")
        await self._submit(self._open_sync)
        if self._reader is None and self.path != ":memory:":
            reader = _ReadThread("token_guard-sqlite-read")
            try:
                await self._ask(reader, self._open_read_sync)
            except BaseException:
                reader.stop()
                raise
            self._reader = reader
        self._state = "open"
        if len(self._listeners):
            self._ensure_poller()

    async def close(self) -> None:
        """Stop polling and close the connection; calls then fail until ``open`` again."""
        self._state = "closed"
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                if poller.get_loop() is asyncio.get_running_loop():
                    await poller
        executor, self._executor = self._executor, None
        reader, self._reader = self._reader, None
        loop = asyncio.get_running_loop()
        if reader is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._ask(reader, self._close_read_sync)
            reader.stop()
        if executor is not None:
            with contextlib.suppress(StoreUnavailable):
                await loop.run_in_executor(executor, self._close_sync)
            executor.shutdown(wait=False)

    def _open_sync(self) -> None:
        if self._conn is not None:
            return
        conn: sqlite3.Connection | None = None
        if not self.create and self.path != ":memory:" and not os.path.exists(self.path):
            raise StoreUnavailable(
                f"no token store at {os.path.abspath(self.path)}: the file does not exist; "
                "check the path, or create a new empty store explicitly (--create)"
            )
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal" and self.path != ":memory:":
                logger.warning("SQLite file %s could not switch to WAL (mode %s)", self.path, mode)
            migrate_sqlite(conn)
            # Start the change feed at "now": earlier changes are already in the data.
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM changes").fetchone()
            self._cursor = int(row[0])
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _open_read_sync(self) -> None:
        # After the writer migrated the file: this connection only reads (query_only), and
        # in WAL mode it never waits for a writer; the short busy timeout covers the rare
        # moments (WAL recovery) when a reader must.
        conn = sqlite3.connect(
            self.path, timeout=min(self._busy_timeout, 1.0), isolation_level=None,
            check_same_thread=True,
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        self._read_conn = conn

    def _close_read_sync(self) -> None:
        conn, self._read_conn = self._read_conn, None
        if conn is not None:
            conn.close()

    async def _submit(self, fn: Callable[[], R]) -> R:
        executor = self._executor
        if executor is None:
            raise StoreUnavailable(f"the SQLite store {self.path} is closed; call open()")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except StoreUnavailable:
            raise
        except (sqlite3.Error, RuntimeError) as exc:
            raise self._unavailable(exc) from exc

    async def _ask(self, reader: _ReadThread, fn: Callable[[], R]) -> R:
        """``_submit``, on the reader thread."""
        try:
            return await reader.call(fn)
        except StoreUnavailable:
            raise
        except (sqlite3.Error, RuntimeError) as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error | RuntimeError) -> StoreUnavailable:
        if isinstance(exc, RuntimeError):
            # The thread was stopped (or the executor shut down) by a concurrent close().
            return StoreUnavailable(f"the SQLite store {self.path} is closed")
        return StoreUnavailable(
            f"the SQLite store {self.path} failed: {exc}; check that the file exists, is "
            "readable and writable, and is not held locked by another process"
        )

    async def _run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        if self._state != "open":
            if self._state == "closed":
                raise StoreUnavailable(
                    f"the SQLite store {self.path} is closed; call open() to use it again"
                )
            await self.open()

        def call() -> R:
            conn = self._conn
            if conn is None:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            return fn(conn)

        return await self._submit(call)

    async def _read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run a read on the reader thread (the writer's for ``":memory:"``)."""
        if self._state != "open":
            await self._run(lambda conn: None)  # opens, or raises as _run does
        reader = self._reader
        if reader is None:
            return await self._run(fn)

        def call() -> R:
            conn = self._read_conn
            if conn is None:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            return fn(conn)

        return await self._ask(reader, call)

    # -- token writes share these ------------------------------------------------------------
    async def _write(
        self,
        change: TokenWrite,
        op: Callable[[sqlite3.Connection], tuple[R, Mapping[str, Any]]],
    ) -> R:
        """Run ``op`` and record ``change`` (audit entry, ``changes`` row) in one transaction,
        then announce it (see ``TokenWrite``); ``op`` returns its result and the audit detail.
        """

        def run(conn: sqlite3.Connection) -> R:
            with _transaction(conn):
                result, detail = op(conn)
                self._log_change(conn, change, detail)
            return result

        try:
            result = await self._run(run)
        except (StoreUnavailable, asyncio.CancelledError):
            self._listeners.emit(change.event)  # it may have committed: announce anyway
            raise
        self._listeners.emit(change.event)
        return result

    def _log_change(
        self, conn: sqlite3.Connection, change: TokenWrite, detail: Mapping[str, Any]
    ) -> None:
        now = utc_now()
        conn.execute(
            "INSERT INTO audit (at, actor, action, token_id, detail) VALUES (?, ?, ?, ?, ?)",
            (
                format_timestamp(now), change.actor, change.action, change.token_id,
                json.dumps(dict(detail)),
            ),
        )
        conn.execute(
            "INSERT INTO changes (at, token_id, kind, origin) VALUES (?, ?, ?, ?)",
            (format_timestamp(now), change.token_id, change.kind, self._origin),
        )
        # Keep the newest row whatever its age, so the id sequence is never lost.
        conn.execute(
            "DELETE FROM changes WHERE at < ? AND id < (SELECT MAX(id) FROM changes)",
            (format_timestamp(now - self._retention),),
        )

    # -- tokens -----------------------------------------------------------------------------
    async def create_token(self, body: Mapping[str, Any], *, actor: str = "api") -> IssuedToken:
        """Validate ``body``, store the token under its secret's hash, return it with the secret."""
        spec = parse_token_spec(body)
        secret = new_secret()
        record = TokenRecord(
            id=new_token_id(), spec=spec, created_at=utc_now(),
            secret=SecretInfo(secret_prefix(secret)),
        )

        def op(conn: sqlite3.Connection) -> tuple[None, Mapping[str, Any]]:
            conn.execute(
                "INSERT INTO tokens (id, body, created_at) VALUES (?, ?, ?)",
                (record.id, body_json(spec), format_timestamp(record.created_at)),
            )
            self._add_secret(conn, secret, record.id)
            return None, {"name": spec.name}

        await self._write(TokenWrite("created", AUDIT_CREATE, record.id, actor), op)
        return IssuedToken(record, token=secret)

    @staticmethod
    def _add_secret(conn: sqlite3.Connection, secret: str, token_id: str) -> None:
        conn.execute(
            "INSERT INTO token_secrets (secret_hash, token_id, prefix) VALUES (?, ?, ?)",
            (hash_secret(secret), token_id, secret_prefix(secret)),
        )

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash`` (two primary-key lookups),
        revoked ones and replaced secrets included (``record.secret`` says until when)."""

        def read(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(_SECRET_LOOKUP, (secret_hash,)).fetchone()
            return row

        row = await self._read(read)
        return None if row is None else token_from_row(row, self.path)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with public id ``token_id``, or None (also when its row is unreadable)."""
        row = await self._read(lambda conn: self._token_row(conn, token_id))
        return None if row is None else token_from_row(row, self.path)

    @staticmethod
    def _token_row(conn: sqlite3.Connection, token_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            f"SELECT {_TOKEN_SELECT} FROM tokens WHERE id = ?", (token_id,)
        ).fetchone()
        return row

    async def list_tokens(
        self, *, limit: int = 100, after: str | None = None
    ) -> Sequence[TokenRecord]:
        """Tokens ordered by id, ``limit`` at most, after id ``after``; unreadable rows skipped."""
        check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                f"SELECT {_TOKEN_SELECT} FROM tokens WHERE id > ? ORDER BY id LIMIT ?",
                ("" if after is None else after, limit),
            ).fetchall()

        rows = await self._read(read)
        return [r for r in (token_from_row(row, self.path) for row in rows) if r is not None]

    async def update_token(
        self, token_id: str, changes: Mapping[str, Any], *, actor: str = "api"
    ) -> TokenRecord:
        """Apply a PATCH body (name, grants, referers, allowed_apis) and notify."""

        def op(conn: sqlite3.Connection) -> tuple[TokenRecord, Mapping[str, Any]]:
            row, record = self._readable(conn, token_id)
            updated = replace(record, spec=apply_update(record.spec, changes))
            conn.execute(
                "UPDATE tokens SET body = ? WHERE id = ?",
                (body_json(updated.spec, replacing=row), token_id),
            )
            return updated, {"fields": sorted(map(str, changes))}

        return await self._write(TokenWrite("updated", AUDIT_UPDATE, token_id, actor), op)

    def _readable(
        self, conn: sqlite3.Connection, token_id: str
    ) -> tuple[sqlite3.Row, TokenRecord]:
        row = self._token_row(conn, token_id)
        if row is None:
            raise NotFound(f"no token has id {token_id!r}; list tokens to find the right id")
        record = token_from_row(row, self.path)
        if record is None:
            raise StoreError(
                f"token {token_id!r} has unreadable data in {self.path}; revoke it and "
                "create a new one"
            )
        return row, record

    async def revoke_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Revoke (idempotent: the first revocation time is kept) and notify.

        The row is revoked even when its other data is unreadable; that case then raises
        ``StoreError`` after the revocation is committed and announced.
        """

        def op(conn: sqlite3.Connection) -> tuple[sqlite3.Row, Mapping[str, Any]]:
            # The raw row, not a record: a row too broken to read is still revoked.
            row = self._token_row(conn, token_id)
            if row is None:
                raise NotFound(f"no token has id {token_id!r}; list tokens to find the right id")
            already = row["revoked_at"] is not None
            if not already:
                conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ?",
                    (format_timestamp(utc_now()), token_id),
                )
            after = self._token_row(conn, token_id)
            assert after is not None  # same transaction as the read above
            return after, {"already_revoked": already}

        # Announced even when already revoked: a cache that missed the first one learns.
        row = await self._write(TokenWrite("revoked", AUDIT_REVOKE, token_id, actor), op)
        record = token_from_row(row, self.path)
        if record is None:
            raise StoreError(
                f"token {token_id!r} is revoked, but its stored data is unreadable; "
                "inspect the row in the tokens table"
            )
        return record

    async def rotate_token(
        self, token_id: str, *, grace_seconds: int = DEFAULT_GRACE_SECONDS, actor: str = "api"
    ) -> IssuedToken:
        """A new secret for the token; the current one works ``grace_seconds`` more."""
        grace = check_grace(grace_seconds)
        secret = new_secret()

        def op(conn: sqlite3.Connection) -> tuple[TokenRecord, Mapping[str, Any]]:
            _, record = self._readable(conn, token_id)
            revoked_is_final(record, "rotated")
            now = utc_now()
            until = now + timedelta(seconds=grace)
            conn.execute(
                "UPDATE token_secrets SET expires_at = ?, rotated_at = ?"
                " WHERE token_id = ? AND expires_at IS NULL",
                (format_timestamp(until), format_timestamp(now), token_id),
            )
            self._add_secret(conn, secret, token_id)
            detail = {"grace_seconds": grace, "old_secret_expires_at": format_datetime(until),
                      "prefix": secret_prefix(secret)}
            return replace(record, secret=SecretInfo(secret_prefix(secret))), detail

        change = TokenWrite("updated", AUDIT_ROTATE, token_id, actor)
        return IssuedToken(await self._write(change, op), token=secret)

    async def end_rotation_grace(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """End every replaced secret's grace period now (idempotent)."""

        def op(conn: sqlite3.Connection) -> tuple[TokenRecord, Mapping[str, Any]]:
            _, record = self._readable(conn, token_id)
            now = format_timestamp(utc_now())
            ended = conn.execute(
                "UPDATE token_secrets SET expires_at = ? WHERE token_id = ?"
                " AND expires_at IS NOT NULL AND expires_at > ?",
                (now, token_id, now),
            ).rowcount
            return record, {"secrets_ended": ended}

        return await self._write(TokenWrite("updated", AUDIT_END_GRACE, token_id, actor), op)

    async def disable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Refuse the token until ``enable_token`` (idempotent: the first time is kept)."""
        return await self._set_disabled(token_id, True, actor)

    async def enable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Undo ``disable_token`` (idempotent)."""
        return await self._set_disabled(token_id, False, actor)

    async def _set_disabled(self, token_id: str, disable: bool, actor: str) -> TokenRecord:
        def op(conn: sqlite3.Connection) -> tuple[TokenRecord, Mapping[str, Any]]:
            _, record = self._readable(conn, token_id)
            revoked_is_final(record, "disabled" if disable else "enabled")
            already = (record.disabled_at is not None) == disable
            if not already:
                at = utc_now() if disable else None
                conn.execute(
                    "UPDATE tokens SET disabled_at = ? WHERE id = ?",
                    (None if at is None else format_timestamp(at), token_id),
                )
                record = replace(record, disabled_at=at)
            key = "already_disabled" if disable else "already_enabled"
            return record, {key: already}

        action = AUDIT_DISABLE if disable else AUDIT_ENABLE
        return await self._write(TokenWrite("updated", action, token_id, actor), op)

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Set ``last_used_at`` per token id in one transaction, never moving it backwards."""
        if not last_used:
            return
        params = [
            (format_timestamp(at), tid, format_timestamp(at)) for tid, at in last_used.items()
        ]

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    "UPDATE tokens SET last_used_at = ? WHERE id = ?"
                    " AND (last_used_at IS NULL OR last_used_at < ?)",
                    params,
                )

        await self._run(write)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add the rows' counts in one transaction."""
        if not rows:
            return
        params = [(r.token_id, format_timestamp(r.hour), r.api, r.code, r.count) for r in rows]

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO token_usage (token_id, hour, api, code, count)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (token_id, hour, api, code)"
                    " DO UPDATE SET count = count + excluded.count",
                    params,
                )

        await self._run(write)

    async def get_usage(
        self, token_id: str, start: datetime, end: datetime
    ) -> Sequence[UsageRow]:
        """The token's rows with ``start <= hour < end``, oldest first."""

        def read(conn: sqlite3.Connection) -> list[UsageRow]:
            rows = conn.execute(
                "SELECT hour, api, code, count FROM token_usage WHERE token_id = ?"
                " AND hour >= ? AND hour < ? ORDER BY hour, api, code",
                (token_id, format_timestamp(start), format_timestamp(end)),
            ).fetchall()
            return [UsageRow(token_id, parse_timestamp(h) or start, a, c, int(n))
                    for h, a, c, n in rows]

        return await self._run(read)

    async def prune_usage(self, before: datetime) -> int:
        """Delete rows of hours before ``before``."""

        def delete(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    "DELETE FROM token_usage WHERE hour < ?", (format_timestamp(before),)
                )
            return int(cur.rowcount)

        return await self._run(delete)

    # -- change feed ------------------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every change: this instance's at once, other processes' within
        ``poll_interval`` seconds. Returns the unsubscriber.
        """
        unsubscribe = self._listeners.add(listener)
        if self._state == "open":
            self._ensure_poller()
        # Otherwise the poller starts when the store opens (lazily, on first use).
        return unsubscribe

    def _ensure_poller(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: open() starts it
        poller = self._poller
        if poller is not None and not poller.done() and poller.get_loop() is loop:
            return
        if poller is not None and not poller.done():
            poller.cancel()  # it belonged to an earlier event loop
        self._poller = loop.create_task(self._poll_forever(), name=f"poll {self.path}")

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.poll_interval)
            if not len(self._listeners):
                continue
            try:
                events = await self._run(self._poll_sync)
            except StoreError as exc:
                if not failing:
                    logger.warning("polling %s for changes failed: %s", self.path, exc)
                failing = True
                continue
            if failing:
                logger.warning("polling %s for changes works again", self.path)
                failing = False
            for event in events:
                self._listeners.emit(event)

    def _poll_sync(self, conn: sqlite3.Connection) -> list[ChangeEvent]:
        rows = conn.execute(
            "SELECT id, token_id, kind, origin FROM changes WHERE id > ? ORDER BY id LIMIT ?",
            (self._cursor, _POLL_BATCH),
        ).fetchall()
        events: list[ChangeEvent] = []
        if rows and int(rows[0]["id"]) > self._cursor + 1:
            # Changes we never saw were pruned: nobody can say which tokens they touched.
            events.append(ChangeEvent("reset"))
        for row in rows:
            self._cursor = int(row["id"])
            if row["origin"] == self._origin:
                continue
            kind = row["kind"]
            if kind not in _CHANGE_KINDS:
                events.append(ChangeEvent("reset"))  # a newer writer's kind: be safe
                continue
            events.append(ChangeEvent(kind, row["token_id"]))
        return events

    # -- public signing keys ------------------------------------------------------------------
    async def publish_signing_key(self, key: PublishedKey) -> None:
        """Add ``key`` (a kid already present is kept); prune keys past ``verify_until``."""

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "DELETE FROM signing_keys WHERE verify_until <= ?",
                    (format_timestamp(utc_now()),),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO signing_keys (kid, public_pem, created_at,"
                    " verify_until, token_lifetime, retired_at) VALUES (?, ?, ?, ?, ?, ?)",
                    _key_params(key),
                )

        await self._run(write)

    async def list_signing_keys(self) -> Sequence[PublishedKey]:
        """Every published key not yet pruned, oldest first."""

        def read(conn: sqlite3.Connection) -> list[PublishedKey]:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"
            ).fetchall()
            return [_key_from_row(row) for row in rows]

        return await self._run(read)

    async def retire_signing_keys(self, at: datetime) -> Sequence[PublishedKey]:
        """Retire every active key at ``at``; return the keys retired."""

        def write(conn: sqlite3.Connection) -> list[PublishedKey]:
            with _transaction(conn):
                rows = conn.execute(
                    f"SELECT {_KEY_COLUMNS} FROM signing_keys WHERE retired_at IS NULL"
                    " ORDER BY created_at, kid"
                ).fetchall()
                retired = [retired_key(_key_from_row(row), at) for row in rows]
                for key in retired:
                    conn.execute(
                        "UPDATE signing_keys SET retired_at = ?, verify_until = ? WHERE kid = ?",
                        (format_timestamp(at), format_timestamp(key.verify_until), key.kid),
                    )
                return retired

        return await self._run(write)

    # -- OAuth clients and audit --------------------------------------------------------------
    async def create_client(
        self, client_id: str, secret_hash: str, name: str, scopes: Sequence[str]
    ) -> OAuthClient:
        """Store a new OAuth client; an id already in use raises ``StoreError``."""
        client = OAuthClient(client_id, name, tuple(scopes), utc_now())

        def write(conn: sqlite3.Connection) -> None:
            try:
                with _transaction(conn):
                    conn.execute(
                        "INSERT INTO oauth_clients (client_id, secret_hash, name, scopes,"
                        " created_at) VALUES (?, ?, ?, ?, ?)",
                        (
                            client_id, secret_hash, name, json.dumps(list(client.scopes)),
                            format_timestamp(client.created_at),
                        ),
                    )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"an OAuth client with id {client_id!r} exists; choose another id"
                ) from None

        await self._run(write)
        return client

    async def get_client(self, client_id: str) -> tuple[OAuthClient, str] | None:
        """The client and its secret hash, or None."""

        def read(conn: sqlite3.Connection) -> tuple[OAuthClient, str] | None:
            row = conn.execute(
                f"SELECT {CLIENT_COLUMNS}, secret_hash FROM oauth_clients WHERE client_id = ?",
                (client_id,),
            ).fetchone()
            if row is None:
                return None
            client = client_from_row(row, self.path)
            return None if client is None else (client, str(row["secret_hash"]))

        return await self._read(read)

    async def list_clients(self) -> Sequence[OAuthClient]:
        """All OAuth clients ordered by id, revoked ones included."""

        def read(conn: sqlite3.Connection) -> list[OAuthClient]:
            rows = conn.execute(
                f"SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY client_id"
            ).fetchall()
            clients = (client_from_row(row, self.path) for row in rows)
            return [c for c in clients if c is not None]

        return await self._read(read)

    async def revoke_client(self, client_id: str) -> OAuthClient:
        """Revoke an OAuth client (idempotent)."""

        def write(conn: sqlite3.Connection) -> sqlite3.Row:
            with _transaction(conn):
                conn.execute(
                    "UPDATE oauth_clients SET revoked_at = ? WHERE client_id = ?"
                    " AND revoked_at IS NULL",
                    (format_timestamp(utc_now()), client_id),
                )
                row: sqlite3.Row | None = conn.execute(
                    f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = ?",
                    (client_id,),
                ).fetchone()
                if row is None:
                    raise NotFound(f"no OAuth client has id {client_id!r}")
                return row

        client = client_from_row(await self._run(write), self.path)
        if client is None:
            raise StoreError(
                f"OAuth client {client_id!r} is revoked, but its stored data is unreadable"
            )
        return client

    async def add_audit(
        self, actor: str, action: str, token_id: str | None, detail: Mapping[str, Any]
    ) -> None:
        """Append an audit entry. Never pass a secret in ``detail``."""
        text = json.dumps(dict(detail))

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO audit (at, actor, action, token_id, detail)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (format_timestamp(utc_now()), actor, action, token_id, text),
                )

        await self._run(write)

    async def list_audit(
        self, *, limit: int = 100, before: int | None = None, token_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Audit entries, newest first, ``limit`` at most, with id below ``before``, only
        ``token_id``'s when given (the audit_token_id index)."""
        check_limit(limit)
        upper = 2**63 - 1 if before is None else before

        def read(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if token_id is not None:
                return conn.execute(
                    f"SELECT {AUDIT_COLUMNS} FROM audit WHERE token_id = ? AND id < ?"
                    " ORDER BY id DESC LIMIT ?",
                    (token_id, upper, limit),
                ).fetchall()
            return conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE id < ?"
                " ORDER BY id DESC LIMIT ?",
                (upper, limit),
            ).fetchall()

        entries = (audit_from_row(row, self.path) for row in await self._read(read))
        return [e for e in entries if e is not None]


_KEY_COLUMNS = "kid, public_pem, created_at, verify_until, token_lifetime, retired_at"


def _key_params(key: PublishedKey) -> tuple[Any, ...]:
    return (
        key.kid, key.public_pem, format_timestamp(key.created_at),
        format_timestamp(key.verify_until), key.token_lifetime,
        format_timestamp(key.retired_at) if key.retired_at is not None else None,
    )


def _key_from_row(row: sqlite3.Row) -> PublishedKey:
    created, until = parse_timestamp(row["created_at"]), parse_timestamp(row["verify_until"])
    assert created is not None and until is not None  # NOT NULL columns
    return PublishedKey(
        kid=str(row["kid"]), public_pem=str(row["public_pem"]), created_at=created,
        verify_until=until, token_lifetime=int(row["token_lifetime"]),
        retired_at=parse_timestamp(row["retired_at"]),
    )
