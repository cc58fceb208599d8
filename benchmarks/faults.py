"""Faults, measured: how the guard's resolver behaves while its store is cut off or stalled.

``python -m benchmarks.faults [--duration SECONDS] [--only pg-cut pg-stall sqlite-lock]``

Not a section of ``python -m benchmarks`` (each fault lasts seconds by design). For each
fault it prints, with production defaults (``PostgresStore(timeout=2.0)``,
``CacheSettings()``):

- latency of ``Resolver.resolve`` during the fault, p50/p99, for a cached token and for
  one never looked up before (a 503 is expected for the latter, and should be fast);
- time from the link returning until a token never looked up resolves (recovery);
- time from the link returning until a token revoked elsewhere during the cut is refused;
- how many answers for cached tokens were 503 after the link returned (should be 0).

PostgreSQL faults go through ``tests.tcp_proxy.TcpProxy`` to the real server at
``TOKEN_GUARD_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``); a
second store on a direct connection plays another instance. The SQLite fault is a real
second process holding the write lock (``BEGIN IMMEDIATE``) while uncached lookups run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from benchmarks.timing import percentile
from tests.tcp_proxy import TcpProxy
from tests.tokens import body
from token_guard.core.decision import Denial
from token_guard.core.records import TokenRecord
from token_guard.resolver import Resolver
from token_guard.stores.postgres import PostgresStore
from token_guard.stores.sqlite import SQLiteStore

DSN = os.environ.get("TOKEN_GUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_PAUSE = 0.005  # between polls: 5 ms resolution
_GIVE_UP = 30.0  # seconds after the link returns


@dataclass
class Figures:
    """What one fault measured."""

    fault: str
    cached_ms: list[float] = field(default_factory=list)
    uncached_ms: list[float] = field(default_factory=list)
    cached_refused_during: int = 0
    uncached_refused_during: int | None = None  # counted where a refusal is a failure
    recover_s: float = float("inf")
    revoked_s: float = float("inf")
    cached_503_after: int = 0

    def lines(self) -> list[str]:
        """The figures as printable lines."""
        out = [f"== {self.fault}"]
        for label, values in (("cached", self.cached_ms), ("uncached", self.uncached_ms)):
            if values:
                out.append(
                    f"  during the fault, {label:8s} token: p50 {percentile(values, 0.5):8.2f} ms"
                    f"  p99 {percentile(values, 0.99):8.2f} ms  max {max(values):8.2f} ms"
                    f"  ({len(values)} requests)"
                )
        out.append(
            f"  cached-token requests refused during the fault: {self.cached_refused_during}"
        )
        if self.uncached_refused_during is not None:
            out.append(f"  uncached-token lookups refused during the fault: "
                       f"{self.uncached_refused_during}")
        if self.recover_s != float("-inf"):
            out.append(f"  recovery (an uncached token resolves) after the link returns: "
                       f"{self.recover_s:.3f} s")
        if self.revoked_s != float("-inf"):
            out.append(f"  revocation made elsewhere during the fault honoured after: "
                       f"{self.revoked_s:.3f} s")
            out.append(f"  cached-token 503s after the link returned: {self.cached_503_after}")
        return out


async def _timed(
    call: Callable[[str], Awaitable[object]], token: str
) -> tuple[float, object]:
    started = time.perf_counter()
    result = await call(token)
    return (time.perf_counter() - started) * 1000.0, result


def identity(record: TokenRecord) -> TokenRecord:
    """The resolver's compile step here: the record itself."""
    return record


async def postgres_fault(kind: str, duration: float) -> Figures:
    """Cut or stall the link of one store for ``duration`` seconds and measure."""
    figures = Figures(f"PostgreSQL link {kind} for {duration:g} s (through TcpProxy)")
    schema = f"tg_faults_{uuid.uuid4().hex[:10]}"
    try:
        async with TcpProxy("127.0.0.1", 5432) as proxy:
            proxied = make_conninfo(DSN, host="127.0.0.1", port=proxy.port)
            async with (
                PostgresStore(proxied, schema=schema) as here,
                PostgresStore(DSN, schema=schema) as elsewhere,
            ):
                await _postgres_run(kind, duration, figures, proxy, here, elsewhere)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return figures


async def _postgres_run(
    kind: str, duration: float, figures: Figures, proxy: TcpProxy,
    here: PostgresStore, elsewhere: PostgresStore,
) -> None:
    resolver: Resolver[TokenRecord] = Resolver(here, identity)
    await here.wait_feed_ready(10.0)
    cached = await elsewhere.create_token(body(name="cached"))
    doomed = await elsewhere.create_token(body(name="revoked during the fault"))
    fresh = [await elsewhere.create_token(body(name=f"uncached {i}")) for i in range(600)]
    # The feed delivers the creations' notifications a moment later, and a lookup that
    # races a change event is not cached: resolve until both are cached hits.
    for issued in (cached, doomed):
        while resolver.lookup(issued.token) is None:
            assert isinstance(await resolver.resolve(issued.token), TokenRecord)
            await asyncio.sleep(0.05)

    if kind == "cut":
        await proxy.cut()
    else:
        proxy.stall()
    await elsewhere.revoke_token(doomed.id)
    stop = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < stop:
        ms, result = await _timed(resolver.resolve, cached.token)
        figures.cached_ms.append(ms)
        figures.cached_refused_during += isinstance(result, Denial)
        ms, _ = await _timed(resolver.resolve, fresh[i % 300].token)
        figures.uncached_ms.append(ms)
        i += 1
        await asyncio.sleep(_PAUSE)

    await proxy.restore()
    back = time.perf_counter()
    pending = iter(fresh[300:])
    probe = next(pending)
    while time.perf_counter() - back < _GIVE_UP and (
        figures.recover_s == float("inf") or figures.revoked_s == float("inf")
    ):
        result = await resolver.resolve(cached.token)
        figures.cached_503_after += isinstance(result, Denial)
        if figures.recover_s == float("inf"):
            if isinstance(await resolver.resolve(probe.token), TokenRecord):
                figures.recover_s = time.perf_counter() - back
            else:
                probe = next(pending)
        if figures.revoked_s == float("inf"):
            refused = await resolver.resolve(doomed.token)
            if isinstance(refused, Denial) and refused.code == "revoked_token":
                figures.revoked_s = time.perf_counter() - back
        await asyncio.sleep(_PAUSE)
    await resolver.close()


_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("DELETE FROM changes WHERE id < 0")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def sqlite_lock(duration: float) -> Figures:
    """Another process holds SQLite's write lock for ``duration`` s; lookups go on."""
    figures = Figures(f"SQLite write lock held by another process for {duration:g} s")
    figures.recover_s = figures.revoked_s = float("-inf")  # not applicable
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.db"
        store = SQLiteStore(path)
        resolver: Resolver[TokenRecord] = Resolver(store, identity)
        cached = await store.create_token(body(name="cached"))
        fresh = [await store.create_token(body(name=f"uncached {i}")) for i in range(3000)]
        assert isinstance(await resolver.resolve(cached.token), TokenRecord)
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _HOLDER, str(path), str(duration),
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None
        await holder.stdout.readline()
        i = 0
        while holder.returncode is None and i < len(fresh):
            ms, result = await _timed(resolver.resolve, cached.token)
            figures.cached_ms.append(ms)
            figures.cached_refused_during += isinstance(result, Denial)
            ms, result = await _timed(resolver.resolve, fresh[i].token)
            figures.uncached_ms.append(ms)
            figures.uncached_refused_during = (figures.uncached_refused_during or 0) + isinstance(
                result, Denial
            )
            i += 1
            await asyncio.sleep(_PAUSE)
        await holder.wait()
        await resolver.close()
        await store.close()
    return figures


def main() -> None:
    """Run the faults and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds each fault lasts")
    parser.add_argument("--only", nargs="+", choices=("pg-cut", "pg-stall", "sqlite-lock"),
                        default=["pg-cut", "pg-stall", "sqlite-lock"])
    args = parser.parse_args()
    runs = {
        "pg-cut": lambda: postgres_fault("cut", args.duration),
        "pg-stall": lambda: postgres_fault("stall", args.duration),
        "sqlite-lock": lambda: sqlite_lock(args.duration),
    }
    for name in args.only:
        figures = asyncio.run(runs[name]())
        print("\n".join(figures.lines()), flush=True)


if __name__ == "__main__":
    main()
