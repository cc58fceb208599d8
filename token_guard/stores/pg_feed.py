"""PostgreSQL's change feed: one LISTEN connection per store, reconnecting by itself.

Writes call ``notify`` inside their transaction, so PostgreSQL sends the notification
exactly when the change commits. Each payload carries the writing instance's random
origin; an instance skips its own (its subscribers heard them at commit). Why a lost
connection turns ``healthy`` False instead of emitting ``reset``, and why a reconnect
emits ``reset``, is in ``stores.postgres``'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import psycopg
from psycopg import sql

from token_guard.core.records import ChangeEvent

__all__ = ["PgChangeFeed"]

_log = logging.getLogger("token_guard.stores.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]
# Runs a coroutine within the store's deadline, mapping failures to StoreError.
Bounded = Callable[[Coroutine[Any, Any, Any], str], Coroutine[Any, Any, Any]]

_BACKOFF_MIN: Final = 0.05
# Short: a refused connect costs nothing, and the feed being back is what lets caches
# trust their entries again.
_BACKOFF_MAX: Final = 0.5
_CHANGE_KINDS: Final = frozenset({"created", "updated", "revoked"})


class PgChangeFeed:
    """LISTENs on ``channel`` and passes other instances' changes to ``emit``."""

    def __init__(
        self,
        *,
        dsn: str,
        conn_kwargs: dict[str, Any],
        connect_deadline: float,
        channel: str,
        origin: str,
        heartbeat: float,
        where: str,
        bounded: Bounded,
        emit: Callable[[ChangeEvent], None],
    ) -> None:
        self.channel = channel
        self._dsn = dsn
        self._conn_kwargs = conn_kwargs
        self._connect_deadline = connect_deadline
        self._origin = origin
        self._heartbeat = heartbeat
        self._where = where
        self._bounded = bounded
        self._emit = emit
        self._healthy = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """True while listening; False means remote changes may be missed."""
        return self._healthy

    async def wait_ready(self, within: float) -> bool:
        """Wait until the feed is listening (True) or ``within`` seconds pass."""
        try:
            async with asyncio.timeout(within):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def notify(self, conn: Conn, kind: str, token_id: str) -> None:
        """Announce a change; call inside the write's transaction (sent at commit)."""
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (self.channel, f"{kind}:{self._origin}:{token_id}")
        )

    async def start(self, *, announce: bool, name: str) -> None:
        """LISTEN now if possible (else keep trying in the background), then keep listening.

        ``announce``: emit ``reset`` once listening (changes sent while nobody listened
        are lost).
        """
        first: Conn | None = None
        try:
            first = await self.connect()
        except Exception as exc:
            _log.warning(
                "change feed on %s not started (%s: %s); retrying in the background",
                self._where,
                type(exc).__name__,
                first_line(exc),
            )
        self._task = asyncio.create_task(self._listen_forever(first, announce=announce), name=name)

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._healthy = False

    def on_notify(self, payload: str) -> None:
        """Pass one notification on (its own instance's are skipped; unknown ones reset)."""
        kind, origin, token_id = [*payload.split(":", 2), "", ""][:3]
        if kind in _CHANGE_KINDS and token_id:
            # This instance's own changes were announced at commit; do not repeat them.
            if origin != self._origin:
                self._emit(ChangeEvent(kind, token_id))  # type: ignore[arg-type]
        else:
            # Unknown payload (a newer version, or noise): fail safe and drop all caches.
            _log.warning("unknown change notification on %s; resetting caches", self.channel)
            self._emit(ChangeEvent("reset"))

    async def connect(self) -> Conn:
        """A new connection (not from the pool) that LISTENs on this feed's channel."""
        async with asyncio.timeout(self._connect_deadline):
            conn = await psycopg.AsyncConnection.connect(self._dsn, **self._conn_kwargs)
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        await self._bounded(execute_or_close(conn, listen), "LISTEN")
        return conn

    async def _listen_forever(self, conn: Conn | None, *, announce: bool) -> None:
        delay = _BACKOFF_MIN
        while True:
            try:
                if conn is None:
                    conn = await self.connect()
                    announce = True
                if announce:
                    # Whatever was notified while no LISTEN was active is lost: drop all
                    # caches; the next request for each token re-reads it. Before healthy
                    # turns True: a cache trusts its fresh entries again (WSGI threads read
                    # them without the loop) only once they are marked stale.
                    self._emit(ChangeEvent("reset"))
                self._healthy = True
                self._ready.set()
                delay = _BACKOFF_MIN
                await self._receive(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.WARNING if self._healthy else logging.DEBUG
                _log.log(
                    level,
                    "change feed on %s lost (%s: %s); reconnecting",
                    self._where,
                    type(exc).__name__,
                    first_line(exc),
                )
            finally:
                self._healthy = False
                self._ready.clear()
                if conn is not None and not _is_busy(conn):
                    await conn.close()
                conn = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _receive(self, conn: Conn) -> None:
        """Pass notifications on until the connection fails or stops answering."""
        while True:
            async for note in conn.notifies(timeout=self._heartbeat):
                if note.channel == self.channel:
                    self.on_notify(note.payload)
            # Quiet for a heartbeat: prove the connection still answers.
            await self._bounded(execute_or_close(conn, sql.SQL("SELECT 1")), "a feed heartbeat")


def _is_busy(conn: Conn) -> bool:
    # A heartbeat abandoned at its deadline still owns the connection and closes it.
    return conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line logs."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


async def execute_or_close(conn: Conn, statement: sql.SQL | sql.Composed) -> None:
    """Run ``statement``; if it fails or is abandoned, close the connection it leaves unusable."""
    try:
        await conn.execute(statement)
    except BaseException:
        await conn.close()
        raise
