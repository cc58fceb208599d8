"""PostgresStore: tokens in PostgreSQL, shared by many app instances, with a change feed.

Install with ``pip install token_guard[postgres]`` (psycopg 3 and psycopg_pool).

Storage. Everything lives in one PostgreSQL schema (``token_guard`` by default), created
and migrated on open under an advisory lock, so instances starting together do not race.
The schema version is kept in ``<schema>.meta``; the tables and their migrations are in
``stores.schema``, in step with SQLite's. Only SHA-256 hashes of secrets are stored (in
``token_secrets``); the lookup by secret hash is one query on two primary keys. A token's
body is one JSONB column read back through the spec's parser (``stores.rows``).

Change feed. ``create``, ``update`` and ``revoke`` call ``pg_notify`` in the same
transaction as the write, so a notification is sent exactly when the change commits. Every
instance keeps one dedicated connection (not from the pool) that LISTENs on the schema's
channel and passes each notification to the subscribers (the resolver's cache) at once.
Changes made through this instance are passed to its subscribers directly after commit,
so this process never waits on the feed for its own writes; each notification carries the
writing instance's random origin, and an instance skips its own when they come back.
``open()`` LISTENs before it returns, so no answer this store gives can predate its feed.
The listener itself is ``stores.pg_feed.PgChangeFeed``.

When the feed breaks, and why what follows is safe:

- PostgreSQL does not queue notifications for a session that is gone: whatever was sent
  while the listener was away is lost. So the listener reconnects by itself (backoff of
  at most 0.5 s) and, once it LISTENs again, emits ``ChangeEvent("reset")``: a cache then
  drops its refusals and marks every known token stale, re-reading each from the store on
  its next request (and serving it meanwhile only if the store cannot answer). A reset
  therefore never lets a revoked token through and never turns known tokens into 503s;
  its cost is one lookup per distinct token (the resolver coalesces concurrent ones).
- Recovery. A query that fails marks the pool failed; psycopg_pool would then reconnect
  in a doubling backoff (seconds). The first sign that the server answers again -- the
  resolver's breaker probe (``ping``, on a new connection) or the feed's reconnect --
  swaps in a fresh pool that connects at once.
- The moment the listener is lost, the store does NOT emit ``reset``: if the network to
  PostgreSQL is down, dropping the cache would turn every request into a 503 when the
  resolver could still serve known tokens for its bounded stale window. Instead
  ``feed_healthy`` turns False. A resolver must then stop trusting cached entries as
  fresh — revocations made elsewhere are not reaching it — and re-read each token from the
  store, serving a cached entry only while the store itself cannot answer (its stale
  window). So a token revoked on another instance is refused as soon as this instance can
  reach PostgreSQL, whether or not the feed is back.
- A stall (the server or the path hangs without closing the connection) is found by a
  heartbeat: when no notification arrived for ``feed_heartbeat`` seconds the listener
  runs ``SELECT 1`` bounded by ``timeout``; no answer means the feed is lost.

Failures. Every operation is bounded by ``timeout`` seconds, waiting for a pool
connection included; a slow or unreachable server raises ``StoreUnavailable`` and never
blocks the event loop. A query abandoned at its deadline is cancelled in the background
(psycopg then cancels it on the server or closes the connection), without delaying the
caller. A stored row that no longer validates (e.g. a body edited into an invalid grant) is
logged as an error and treated as not found (``stores.rows``, shared with SQLite), so a
request using it is denied, never allowed.

One store belongs to one event loop (its pool and listener run there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import select
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, TypeVar

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresStore needs psycopg 3 with its pool; install token_guard[postgres]"
    ) from exc

from token_guard.core.errors import ConfigurationError, NotFound, StoreError, StoreUnavailable
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
    revoked_is_final,
)
from token_guard.stores.pg_feed import PgChangeFeed, first_line
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
from token_guard.stores.schema import POSTGRES_MIGRATIONS, Migration
from token_guard.stores.urls import ENV_VAR

__all__ = ["POSTGRES_MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "migrate_postgres"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# Channel names are identifiers (63 bytes at most): keep room for the "token_guard." prefix.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
# The network or server failing, as opposed to a bug or bad data: the store "cannot answer".
_UNAVAILABLE: Final = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)

# The token columns and its current secret's prefix (NULL for secrets issued before v4).
_TOKEN_SELECT = (
    f"{TOKEN_COLUMNS}, (SELECT prefix FROM {{s}}.token_secrets s WHERE s.token_id = tokens.id"
    " AND s.expires_at IS NULL LIMIT 1)"
)
_SECRET_LOOKUP = (
    "SELECT " + ", ".join(f"t.{c}" for c in TOKEN_COLUMNS.split(", "))
    + ", " + ", ".join(f"s.{c}" for c in SECRET_COLUMNS.split(", "))
    + " FROM {s}.token_secrets s JOIN {s}.tokens t ON t.id = s.token_id"
    " WHERE s.secret_hash = %s"
)

# The migrations live beside SQLite's (stores.schema), numbered step for step.
SCHEMA_VERSION: Final = POSTGRES_MIGRATIONS[-1].version


MIGRATION_DEADLINE = 600.0
"""Seconds the schema migration at open() may take (a big token table is rewritten once)."""


async def migrate_postgres(
    conn: Conn, schema: str, migrations: Sequence[Migration] = POSTGRES_MIGRATIONS
) -> int:
    """Bring ``schema`` to the last version in ``migrations`` in one transaction; return it.

    Instances opening the same schema at once are serialised by an advisory lock (released
    at commit) and the version is read again under it, so each step runs exactly once.
    """
    target = migrations[-1].version if migrations else 0
    s = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"token_guard:{schema}",))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.meta (key text PRIMARY KEY, value text NOT NULL)"
            ).format(s)
        )
        cur = await conn.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'schema_version'").format(s)
        )
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > target:
            raise StoreError(
                f"schema {schema!r} is at version {version}, newer than this token_guard "
                f"knows ({target}); upgrade token_guard"
            )
        if version < target:
            # Rewriting every token row (v3 moves bodies into JSON) can outlast the
            # connection's statement_timeout on a big table; the caller's deadline is
            # MIGRATION_DEADLINE, not the per-query one.
            _log.warning("migrating token store schema %r from version %d to %d",
                        schema, version, target)
            await conn.execute("SET LOCAL statement_timeout = 0")
        for step in migrations:
            if step.version <= version:
                continue
            for statement in step.statements:
                await conn.execute(sql.SQL(statement).format(s=s))
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ).format(s),
                (str(step.version),),
            )
    return target


class PostgresStore:
    """A ``TokenStore`` on PostgreSQL with a LISTEN/NOTIFY change feed across instances."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "token_guard",
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout: float = 2.0,
        statement_timeout: float = 2.0,
        timeout: float = 2.0,
        feed_heartbeat: float = 5.0,
    ) -> None:
        if dsn is None:
            dsn = os.environ.get(ENV_VAR)
        if not dsn:
            raise ConfigurationError(
                f"PostgresStore needs a DSN: pass one, or set {ENV_VAR}="
                "postgresql://user@host:5432/dbname"
            )
        scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else None
        if scheme is not None and scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"PostgresStore got a {scheme}:// URL; give a postgresql:// DSN "
                "(use open_store() to pick the store from the URL)"
            )
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(
                f"PostgresStore DSN is not valid ({exc}); write it as "
                "postgresql://user@host:5432/dbname"
            ) from None
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"schema {schema!r} is not a plain identifier; use letters, digits and '_' "
                "(at most 50 characters, not starting with a digit)"
            )
        if not 1 <= pool_min <= pool_max:
            raise ConfigurationError(
                f"pool_min={pool_min}, pool_max={pool_max}: need 1 <= pool_min <= pool_max"
            )
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("statement_timeout", statement_timeout),
            ("timeout", timeout),
            ("feed_heartbeat", feed_heartbeat),
        ):
            if not value > 0:
                raise ConfigurationError(f"{label}={value!r}: give a number of seconds above 0")
        self._dsn = dsn
        # For messages: never the DSN itself, which may carry a password.
        self._where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        self._schema = schema
        self._where_schema = f"schema {schema!r} at {self._where}"  # for the row codec's logs
        self._channel = f"token_guard.{schema}"
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._timeout = timeout
        options = str(params.get("options") or "")
        options += f" -c statement_timeout={max(1, round(statement_timeout * 1000))}"
        self._conn_kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq counts whole seconds and treats anything below 2 as 2.
            "connect_timeout": max(2, round(connect_timeout)),
            "options": options.strip(),
            "application_name": str(params.get("application_name") or "token_guard"),
        }
        self._connect_deadline = max(2, round(connect_timeout)) + 1.0
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._open_lock = asyncio.Lock()
        self._listeners = Listeners()
        # The origin marks this instance's own notifications, which its subscribers
        # already heard.
        self._feed = PgChangeFeed(
            dsn=dsn,
            conn_kwargs=self._conn_kwargs,
            connect_deadline=self._connect_deadline,
            channel=self._channel,
            origin=secrets.token_hex(8),
            heartbeat=feed_heartbeat,
            where=self._where,
            bounded=self._bounded,
            emit=self._emit,
        )
        self._closed = False
        self._opened_before = False
        self._pool_failed = False  # a query failed since the pool was made: renew on reset
        self._renew_lock = asyncio.Lock()
        # Queries abandoned at their deadline, still being cancelled by psycopg.
        self._abandoned: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        # Host and port only: the DSN may carry a password.
        return f"PostgresStore({self._where!r}, schema={self._schema!r})"

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._schema

    @property
    def feed_healthy(self) -> bool:
        """True while the change feed is listening; False means remote changes may be missed."""
        return self._feed.healthy

    async def open(self) -> None:
        """Connect, create or migrate the schema and start the change feed (idempotent)."""
        if self._pool is not None:
            return
        async with self._open_lock:
            if self._pool is not None:
                return
            self._closed = False
            pool = await self._new_pool()
            try:
                await self._bounded(
                    self._migrate(pool), "the schema migration",
                    max(self._timeout, MIGRATION_DEADLINE),
                )
            except BaseException:
                await pool.close(timeout=1.0)
                raise
            # LISTEN before open() returns: no answer given by this store can predate the
            # feed, so the first connection needs no reset (a later one, or a reopen, does).
            await self._feed.start(
                announce=self._opened_before, name=f"token_guard feed {self._schema}"
            )
            self._pool = pool
            self._opened_before = True

    async def close(self) -> None:
        """Stop the change feed and close every connection; calls fail until ``open``."""
        self._closed = True
        await self._feed.stop()
        for abandoned in list(self._abandoned):
            abandoned.cancel()
        if self._abandoned:
            await asyncio.wait(list(self._abandoned), timeout=2.0)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=2.0)

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_feed_ready(self, within: float) -> bool:
        """Wait until the change feed is listening (True) or ``within`` seconds pass."""
        await self.open()
        return await self._feed.wait_ready(within)

    async def _migrate(self, pool: AsyncConnectionPool[Conn]) -> None:
        async with pool.connection() as conn:
            await migrate_postgres(conn, self._schema)

    # -- bounded execution ---------------------------------------------------------------
    async def _new_pool(self) -> AsyncConnectionPool[Conn]:
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._dsn,
            min_size=self._pool_min,
            max_size=self._pool_max,
            kwargs=self._conn_kwargs,
            open=False,
            timeout=self._timeout,
            name=f"token_guard.{self._schema}",
        )
        await pool.open(wait=False)
        return pool

    async def _renew_pool(self) -> None:
        """The server answers again after queries failed: swap in a fresh pool, which
        connects at once, where the old one would still sit in its doubling reconnect
        backoff (seconds of 503s); the old one is closed behind it."""
        async with self._renew_lock:
            old = self._pool
            if old is None or self._closed or not self._pool_failed:
                return
            self._pool = await self._new_pool()
            self._pool_failed = False
        await old.close(timeout=1.0)

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the server answers now, on a new connection
        (not the pool's); once it does, renew the pool if queries failed meanwhile.

        The resolver's circuit breaker calls this to learn that the store is back."""
        await self.open()

        async def probe() -> None:
            async with asyncio.timeout(self._connect_deadline):
                conn = await psycopg.AsyncConnection.connect(self._dsn, **self._conn_kwargs)
            try:
                await conn.execute("SELECT 1")
            finally:
                await conn.close()

        await self._bounded(probe(), "a health probe")
        await self._renew_pool()

    async def _bounded(
        self, coro: Coroutine[Any, Any, T], what: str, limit: float | None = None
    ) -> T:
        """Run ``coro`` with a deadline; past it, raise StoreUnavailable without waiting.

        psycopg answers a cancelled query by cancelling it on the server, which can take
        seconds more when the server hangs; that cleanup runs in the background so the
        caller gets its answer at the deadline.
        """
        if limit is None:
            limit = self._timeout
        task = asyncio.ensure_future(coro)
        try:
            done, _ = await asyncio.wait((task,), timeout=limit)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            self._pool_failed = True
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} did not answer {what} within {limit:g} s; "
                "check that the server is up and reachable, or raise timeout="
            )
        try:
            return task.result()
        except StoreError:
            raise
        except _UNAVAILABLE as exc:
            self._pool_failed = True
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} could not answer {what} "
                f"({type(exc).__name__}: {first_line(exc)}); check that the server is up "
                "and reachable"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"PostgreSQL at {self._where} refused {what} "
                f"({type(exc).__name__}: {first_line(exc)})"
            ) from exc

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(_discard_result(self._abandoned))

    async def _run(self, what: str, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Open on first use, then run ``op`` on a pooled connection within the deadline."""
        if self._closed:
            raise StoreUnavailable("the PostgreSQL store is closed; call open() to use it again")
        await self.open()
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"the store was closed while {what} was starting; open it")

        async def with_connection() -> T:
            while True:
                async with pool.connection() as conn:
                    if await _usable(conn):
                        return await op(conn)
                    # Closed, the pool discards it on return and connects a replacement;
                    # the loop takes the next one at once. (The pool's own ``check`` would
                    # sleep about a second after a second dead connection.)
                    await conn.close()

        return await self._bounded(with_connection(), what)

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self._schema))

    # -- token writes share this ---------------------------------------------------------
    async def _write(
        self,
        what: str,
        change: TokenWrite,
        op: Callable[[Conn], Awaitable[tuple[T, Mapping[str, Any]]]],
    ) -> T:
        """Run ``op`` and record ``change`` (audit entry, ``pg_notify``) in one transaction,
        then announce it (see ``TokenWrite``); ``op`` returns its result and the audit detail.

        NOTIFY inside the transaction is what makes PostgreSQL send it exactly at commit.
        """

        async def run(conn: Conn) -> T:
            async with conn.transaction():
                result, detail = await op(conn)
                await self._audit(conn, change.actor, change.action, change.token_id, detail)
                await self._feed.notify(conn, change.kind, change.token_id)
            return result

        try:
            result = await self._run(what, run)
        except (StoreUnavailable, asyncio.CancelledError):
            # The commit may have happened before the answer was lost: announce anyway.
            self._emit(change.event)
            raise
        self._emit(change.event)
        return result

    # -- tokens --------------------------------------------------------------------------
    async def create_token(self, body: Mapping[str, Any], *, actor: str = "api") -> IssuedToken:
        """Validate ``body`` (Tokens API JSON), store it, return the record and secret."""
        spec = parse_token_spec(body)
        secret = new_secret()
        token_id = new_token_id()

        async def op(conn: Conn) -> tuple[datetime, Mapping[str, Any]]:
            cur = await conn.execute(
                self._q(
                    "INSERT INTO {s}.tokens (id, body, created_at) "
                    "VALUES (%s, %s::jsonb, now()) RETURNING created_at"
                ),
                (token_id, body_json(spec)),
            )
            row = await cur.fetchone()
            assert row is not None  # INSERT ... RETURNING returns its row
            await self._add_secret(conn, secret, token_id)
            return _utc(row[0]), {"name": spec.name}

        change = TokenWrite("created", AUDIT_CREATE, token_id, actor)
        created_at = await self._write("creating a token", change, op)
        return IssuedToken(
            TokenRecord(token_id, spec, created_at, secret=SecretInfo(secret_prefix(secret))),
            secret,
        )

    async def _add_secret(self, conn: Conn, secret: str, token_id: str) -> None:
        await conn.execute(
            self._q(
                "INSERT INTO {s}.token_secrets (secret_hash, token_id, prefix) "
                "VALUES (%s, %s, %s)"
            ),
            (hash_secret(secret), token_id, secret_prefix(secret)),
        )

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash``, revoked ones and replaced
        secrets included (``record.secret`` says until when)."""

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(self._q(_SECRET_LOOKUP), (secret_hash,))
            return await cur.fetchone()

        row = await self._run("a token lookup", op)
        return None if row is None else token_from_row(row, self._where_schema)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with public id ``token_id``, or None."""

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(
                self._q(f"SELECT {_TOKEN_SELECT} FROM {{s}}.tokens WHERE id = %s"), (token_id,)
            )
            return await cur.fetchone()

        row = await self._run("reading a token", op)
        return None if row is None else token_from_row(row, self._where_schema)

    async def list_tokens(
        self, *, limit: int = 100, after: str | None = None
    ) -> Sequence[TokenRecord]:
        """Tokens ordered by id, ``limit`` at most, starting after id ``after``."""
        check_limit(limit)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                self._q(
                    f"SELECT {_TOKEN_SELECT} FROM {{s}}.tokens "
                    "WHERE (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s"
                ),
                (after, after, limit),
            )
            return await cur.fetchall()

        rows = await self._run("listing tokens", op)
        records = (token_from_row(row, self._where_schema) for row in rows)
        return [rec for rec in records if rec is not None]

    async def update_token(
        self, token_id: str, changes: Mapping[str, Any], *, actor: str = "api"
    ) -> TokenRecord:
        """Apply a PATCH body (name, grants, referers, allowed_apis) and notify."""

        async def op(conn: Conn) -> tuple[TokenRecord, Mapping[str, Any]]:
            row, current = await self._locked_token(conn, token_id)
            spec = apply_update(current.spec, changes)
            await conn.execute(
                self._q("UPDATE {s}.tokens SET body = %s::jsonb WHERE id = %s"),
                (body_json(spec, replacing=row), token_id),
            )
            return replace(current, spec=spec), {"fields": sorted(map(str, changes))}

        change = TokenWrite("updated", AUDIT_UPDATE, token_id, actor)
        return await self._write("updating a token", change, op)

    async def revoke_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Revoke (idempotent) and notify; later requests with the token get 401."""

        async def op(conn: Conn) -> tuple[tuple[Any, ...], Mapping[str, Any]]:
            # Read the raw row, not a record: a row too broken to read is still revoked.
            cur = await conn.execute(
                self._q("SELECT revoked_at FROM {s}.tokens WHERE id = %s FOR UPDATE"),
                (token_id,),
            )
            old = await cur.fetchone()
            if old is None:
                raise NotFound(f"no token has id {token_id!r}; list tokens to find its id")
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.tokens SET revoked_at = coalesce(revoked_at, now()) "
                    f"WHERE id = %s RETURNING {_TOKEN_SELECT}"
                ),
                (token_id,),
            )
            row = await cur.fetchone()
            assert row is not None  # locked above in this transaction
            return row, {"already_revoked": old[0] is not None}

        # Announced even when already revoked: a cache that missed the first one learns.
        change = TokenWrite("revoked", AUDIT_REVOKE, token_id, actor)
        row = await self._write("revoking a token", change, op)
        record = token_from_row(row, self._where_schema)
        if record is None:
            raise StoreError(
                f"token {token_id!r} is revoked, but its stored body does not validate; "
                "see the error logged above"
            )
        return record

    async def rotate_token(
        self, token_id: str, *, grace_seconds: int = DEFAULT_GRACE_SECONDS, actor: str = "api"
    ) -> IssuedToken:
        """A new secret for the token; the current one works ``grace_seconds`` more."""
        grace = check_grace(grace_seconds)
        secret = new_secret()

        async def op(conn: Conn) -> tuple[TokenRecord, Mapping[str, Any]]:
            _, record = await self._locked_token(conn, token_id)
            revoked_is_final(record, "rotated")
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.token_secrets SET expires_at = now() + %s * interval '1 second', "
                    "rotated_at = now() WHERE token_id = %s AND expires_at IS NULL "
                    "RETURNING expires_at"
                ),
                (grace, token_id),
            )
            ended = await cur.fetchone()
            await self._add_secret(conn, secret, token_id)
            detail = {"grace_seconds": grace, "prefix": secret_prefix(secret),
                      "old_secret_expires_at": format_datetime(
                          None if ended is None else _utc(ended[0]))}
            return replace(record, secret=SecretInfo(secret_prefix(secret))), detail

        change = TokenWrite("updated", AUDIT_ROTATE, token_id, actor)
        return IssuedToken(await self._write("rotating a token", change, op), secret)

    async def end_rotation_grace(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """End every replaced secret's grace period now (idempotent)."""

        async def op(conn: Conn) -> tuple[TokenRecord, Mapping[str, Any]]:
            _, record = await self._locked_token(conn, token_id)
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.token_secrets SET expires_at = now() WHERE token_id = %s "
                    "AND expires_at IS NOT NULL AND expires_at > now()"
                ),
                (token_id,),
            )
            return record, {"secrets_ended": cur.rowcount}

        change = TokenWrite("updated", AUDIT_END_GRACE, token_id, actor)
        return await self._write("ending a rotation's grace period", change, op)

    async def disable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Refuse the token until ``enable_token`` (idempotent: the first time is kept)."""
        return await self._set_disabled(token_id, True, actor)

    async def enable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Undo ``disable_token`` (idempotent)."""
        return await self._set_disabled(token_id, False, actor)

    async def _set_disabled(self, token_id: str, disable: bool, actor: str) -> TokenRecord:
        async def op(conn: Conn) -> tuple[TokenRecord, Mapping[str, Any]]:
            _, record = await self._locked_token(conn, token_id)
            revoked_is_final(record, "disabled" if disable else "enabled")
            already = (record.disabled_at is not None) == disable
            if not already:
                cur = await conn.execute(
                    self._q(
                        "UPDATE {s}.tokens SET disabled_at = "
                        "CASE WHEN %s THEN now() END WHERE id = %s RETURNING disabled_at"
                    ),
                    (disable, token_id),
                )
                row = await cur.fetchone()
                at = None if row is None or row[0] is None else _utc(row[0])
                record = replace(record, disabled_at=at)
            return record, {"already_disabled" if disable else "already_enabled": already}

        action = AUDIT_DISABLE if disable else AUDIT_ENABLE
        change = TokenWrite("updated", action, token_id, actor)
        return await self._write("disabling a token" if disable else "enabling a token",
                                 change, op)

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Batch-write ``last_used_at`` per token id (called by the resolver, not per request)."""
        if not last_used:
            return
        ids = list(last_used)
        # Naive means UTC, as in every store; a list must not mix naive and aware values.
        stamps = [_as_utc(last_used[i]) for i in ids]

        async def op(conn: Conn) -> None:
            await conn.execute(
                self._q(
                    "UPDATE {s}.tokens AS t SET last_used_at = "
                    "greatest(t.last_used_at, u.at) "
                    "FROM unnest(%s::text[], %s::timestamptz[]) AS u(id, at) WHERE t.id = u.id"
                ),
                (ids, stamps),
            )

        await self._run("recording token usage", op)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add the rows' counts in one statement."""
        if not rows:
            return
        columns = (
            [r.token_id for r in rows], [_as_utc(r.hour) for r in rows],
            [r.api for r in rows], [r.code for r in rows], [r.count for r in rows],
        )

        async def op(conn: Conn) -> None:
            await conn.execute(
                self._q(
                    "INSERT INTO {s}.token_usage AS u (token_id, hour, api, code, count) "
                    "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], "
                    "%s::text[], %s::bigint[]) "
                    "ON CONFLICT (token_id, hour, api, code) "
                    "DO UPDATE SET count = u.count + excluded.count"
                ),
                columns,
            )

        await self._run("recording request counts", op)

    async def get_usage(
        self, token_id: str, start: datetime, end: datetime
    ) -> Sequence[UsageRow]:
        """The token's rows with ``start <= hour < end``, oldest first."""

        async def op(conn: Conn) -> list[UsageRow]:
            cur = await conn.execute(
                self._q(
                    "SELECT hour, api, code, count FROM {s}.token_usage WHERE token_id = %s "
                    "AND hour >= %s AND hour < %s ORDER BY hour, api, code"
                ),
                (token_id, _as_utc(start), _as_utc(end)),
            )
            return [UsageRow(token_id, _utc(h), a, c, int(n)) for h, a, c, n in
                    await cur.fetchall()]

        return await self._run("reading request counts", op)

    async def prune_usage(self, before: datetime) -> int:
        """Delete rows of hours before ``before``."""

        async def op(conn: Conn) -> int:
            cur = await conn.execute(
                self._q("DELETE FROM {s}.token_usage WHERE hour < %s"), (_as_utc(before),)
            )
            return int(cur.rowcount)

        return await self._run("pruning request counts", op)

    async def _locked_token(
        self, conn: Conn, token_id: str
    ) -> tuple[tuple[Any, ...], TokenRecord]:
        cur = await conn.execute(
            self._q(f"SELECT {_TOKEN_SELECT} FROM {{s}}.tokens WHERE id = %s FOR UPDATE"),
            (token_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no token has id {token_id!r}; list tokens to find its id")
        record = token_from_row(row, self._where_schema)
        if record is None:
            raise StoreError(
                f"token {token_id!r} has unreadable data in schema {self._schema!r}; revoke "
                "it and create a new one"
            )
        return row, record

    # -- change feed ---------------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every change, this instance's and every other instance's.

        Returns a function that unsubscribes. Listeners run on the event loop and must not
        block.
        """
        return self._listeners.add(listener)

    def _emit(self, event: ChangeEvent) -> None:
        # Listeners.emit logs a failing subscriber and goes on: the feed never stops for one.
        # A reset is passed on at once (a cache marks its entries stale and re-reads them);
        # the pool, if it failed meanwhile, is renewed beside it.
        if event.kind == "reset" and self._pool_failed and self._pool is not None:
            task = asyncio.ensure_future(self._renew_pool())
            self._abandoned.add(task)
            task.add_done_callback(_discard_result(self._abandoned))
        self._listeners.emit(event)

    # -- public signing keys -------------------------------------------------------------
    async def publish_signing_key(self, key: PublishedKey) -> None:
        """Add ``key`` (a kid already present is kept); prune keys past ``verify_until``."""

        async def op(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(
                    self._q("DELETE FROM {s}.signing_keys WHERE verify_until <= now()")
                )
                await conn.execute(
                    self._q(
                        "INSERT INTO {s}.signing_keys (kid, public_pem, created_at, verify_until, "
                        "token_lifetime, retired_at) VALUES (%s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (kid) DO NOTHING"
                    ),
                    (key.kid, key.public_pem, key.created_at, key.verify_until,
                     key.token_lifetime, key.retired_at),
                )

        await self._run("publishing a signing key", op)

    async def list_signing_keys(self) -> Sequence[PublishedKey]:
        """Every published key not yet pruned, oldest first."""

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                self._q(
                    f"SELECT {_KEY_COLUMNS} FROM {{s}}.signing_keys ORDER BY created_at, kid"
                )
            )
            return await cur.fetchall()

        return [_key_from_row(row) for row in await self._run("listing signing keys", op)]

    async def retire_signing_keys(self, at: datetime) -> Sequence[PublishedKey]:
        """Retire every active key at ``at``; return the keys retired."""

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.signing_keys SET retired_at = %s, verify_until = least("
                    "verify_until, %s + make_interval(secs => token_lifetime)) "
                    f"WHERE retired_at IS NULL RETURNING {_KEY_COLUMNS}"
                ),
                (at, at),
            )
            return await cur.fetchall()

        rows = await self._run("retiring signing keys", op)
        return sorted((_key_from_row(row) for row in rows), key=lambda k: (k.created_at, k.kid))

    # -- OAuth clients and audit ---------------------------------------------------------
    async def create_client(
        self, client_id: str, secret_hash: str, name: str, scopes: Sequence[str]
    ) -> OAuthClient:
        """Store a new OAuth client."""

        async def op(conn: Conn) -> OAuthClient:
            cur = await conn.execute(
                self._q(
                    "INSERT INTO {s}.oauth_clients (client_id, secret_hash, name, scopes, "
                    "created_at) VALUES (%s, %s, %s, %s, now()) "
                    "ON CONFLICT (client_id) DO NOTHING RETURNING created_at"
                ),
                (client_id, secret_hash, name, json.dumps(list(scopes))),
            )
            row = await cur.fetchone()
            if row is None:
                raise StoreError(
                    f"an OAuth client with id {client_id!r} already exists; choose another id"
                )
            return OAuthClient(client_id, name, tuple(scopes), _utc(row[0]))

        return await self._run("creating an OAuth client", op)

    async def get_client(self, client_id: str) -> tuple[OAuthClient, str] | None:
        """The client and its secret hash, or None."""

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(
                self._q(
                    f"SELECT {CLIENT_COLUMNS}, secret_hash "
                    "FROM {s}.oauth_clients WHERE client_id = %s"
                ),
                (client_id,),
            )
            return await cur.fetchone()

        row = await self._run("reading an OAuth client", op)
        if row is None:
            return None
        client = client_from_row(row, self._where_schema)
        return None if client is None else (client, str(row[5]))

    async def list_clients(self) -> Sequence[OAuthClient]:
        """All OAuth clients, revoked ones included."""

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                self._q(
                    f"SELECT {CLIENT_COLUMNS} FROM {{s}}.oauth_clients ORDER BY client_id"
                )
            )
            return await cur.fetchall()

        rows = await self._run("listing OAuth clients", op)
        clients = (client_from_row(row, self._where_schema) for row in rows)
        return [c for c in clients if c is not None]

    async def revoke_client(self, client_id: str) -> OAuthClient:
        """Revoke an OAuth client (idempotent)."""

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.oauth_clients SET revoked_at = coalesce(revoked_at, now()) "
                    "WHERE client_id = %s "
                    f"RETURNING {CLIENT_COLUMNS}"
                ),
                (client_id,),
            )
            return await cur.fetchone()

        row = await self._run("revoking an OAuth client", op)
        if row is None:
            raise NotFound(f"no OAuth client has id {client_id!r}; list clients to find it")
        client = client_from_row(row, self._where_schema)
        if client is None:
            raise StoreError(
                f"OAuth client {client_id!r} is revoked, but its stored scopes do not parse"
            )
        return client

    async def add_audit(
        self, actor: str, action: str, token_id: str | None, detail: Mapping[str, Any]
    ) -> None:
        """Append an audit entry. Never pass a secret in ``detail``."""

        async def op(conn: Conn) -> None:
            await self._audit(conn, actor, action, token_id, detail)

        await self._run("writing an audit entry", op)

    async def list_audit(
        self, *, limit: int = 100, before: int | None = None, token_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Audit entries, newest first, ``limit`` at most, with id below ``before``, only
        ``token_id``'s when given."""
        check_limit(limit)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                self._q(
                    f"SELECT {AUDIT_COLUMNS} FROM {{s}}.audit "
                    "WHERE (%s::bigint IS NULL OR id < %s) "
                    "AND (%s::text IS NULL OR token_id = %s) ORDER BY id DESC LIMIT %s"
                ),
                (before, before, token_id, token_id, limit),
            )
            return await cur.fetchall()

        rows = await self._run("listing audit entries", op)
        entries = (audit_from_row(row, self._where_schema) for row in rows)
        return [e for e in entries if e is not None]

    async def _audit(
        self,
        conn: Conn,
        actor: str,
        action: str,
        token_id: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        await conn.execute(
            self._q(
                "INSERT INTO {s}.audit (at, actor, action, token_id, detail) "
                "VALUES (now(), %s, %s, %s, %s)"
            ),
            (actor, action, token_id, json.dumps(dict(detail), default=str)),
        )


_KEY_COLUMNS = "kid, public_pem, created_at, verify_until, token_lifetime, retired_at"


def _key_from_row(row: tuple[Any, ...]) -> PublishedKey:
    kid, pem, created, until, lifetime, retired = row
    return PublishedKey(
        kid=str(kid), public_pem=str(pem), created_at=_utc(created), verify_until=_utc(until),
        token_lifetime=int(lifetime), retired_at=_utc(retired) if retired is not None else None,
    )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _discard_result(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            # Retrieve it so asyncio does not log "exception was never retrieved".
            task.exception()

    return done


async def _usable(conn: Conn) -> bool:
    """Whether a connection just taken from the pool still works; probed only if in doubt.

    An idle PostgreSQL connection has nothing to read. Something readable means the peer
    closed it (EOF), reset it or sent a termination error, so the round trip of a real
    probe is paid only then; a healthy connection costs one zero-timeout ``select``.
    """
    if conn.closed or conn.broken:
        return False
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    if not readable:
        return True
    try:
        await conn.execute("")
    except psycopg.Error:
        return False
    return True
