"""Section 4: the cold paths a warm cache hides.

- SQL analysis of a query the analyzer has not seen (parse with sqlglot) vs a cached one.
- Store lookups by secret hash with no cache in front: SQLite (the embedded default) and
  PostgreSQL (its big table is loaded by ``bench_postgres.ensure_rows`` and kept).
- A miss storm: 10,000 concurrent requests through TokenGuard with one token nobody has
  cached yet; the resolver's single flight should make that one store call.
PostgreSQL rows are skipped (with the reason) when the server is not reachable: the
benchmark starts no service; ``.ci/run`` starts them first.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import timeit
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.bench_postgres import DEFAULT_DSN, bench_secret, ensure_rows
from benchmarks.inprocess import (
    CONNECTIONS,
    TABLE_PATH,
    TABLE_QUERY,
    TOKEN_BODY,
    http_scope,
    inner_app,
    request_headers,
    response_of,
)
from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import percentile
from token_guard.adapters.asgi import TokenGuard
from token_guard.core.connections import normalize_connections
from token_guard.core.secret import hash_secret
from token_guard.core.sql import SqlAnalyzer
from token_guard.stores.base import TokenStore
from token_guard.stores.postgres import PostgresStore
from token_guard.stores.sqlite import SQLiteStore

SECTION = "4. cold paths"
QUERIES = {
    "simple": "SELECT name, geom FROM proj.ds.stores WHERE city = @city",
    "CTE + join": (
        "WITH recent AS (SELECT store_id, SUM(amount) AS total FROM proj.ds.sales "
        "WHERE day > @since GROUP BY store_id) SELECT s.name, s.geom, r.total "
        "FROM proj.ds.stores AS s JOIN recent AS r ON r.store_id = s.id "
        "WHERE s.city IN (SELECT city FROM proj.shared.cities WHERE country = @country)"
    ),
}


def dsn() -> str:
    """The PostgreSQL to use: $TOKEN_GUARD_STORE, else the local test database."""
    return os.environ.get("TOKEN_GUARD_STORE") or DEFAULT_DSN


def postgres_missing() -> str | None:
    """None if PostgreSQL answers, else why the PostgreSQL rows are skipped."""
    try:
        with psycopg.connect(dsn(), connect_timeout=2):
            return None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable ({first}); .ci/run starts it"


def sql_rows(budget: Budget) -> list[Row]:
    """Analysis of unseen query texts vs the cached analysis of one text."""
    analyzer = SqlAnalyzer(cache_size=budget.sql_samples + 16)
    conn = normalize_connections(CONNECTIONS)["carto_dw"]
    rows = []
    for label, query in QUERIES.items():
        # A literal that changes every time: a new text, so a cache miss and a real parse.
        texts = [f"{query} AND 1 = {i}" if "WHERE" in query else query
                 for i in range(budget.sql_samples)]
        started = time.thread_time()
        for text in texts:
            analyzer.analyze(text, conn)
        cold = (time.thread_time() - started) / len(texts) * 1e6
        analyzer.analyze(query, conn)
        number = max(100, budget.sql_samples * 20)
        cached = min(timeit.repeat(lambda q=query: analyzer.analyze(q, conn),  # type: ignore[misc]
                                   number=number, repeat=5, timer=time.thread_time))
        cached_us = cached / number * 1e6
        rows += [
            Row(SECTION, f"SQL {label}: cold analysis", cold, "µs", "sqlglot parse + walk"),
            Row(SECTION, f"SQL {label}: cached analysis", cached_us, "µs"),
            Row(SECTION, f"SQL {label}: ratio cold / cached", cold / cached_us, "x"),
        ]
    return rows


async def _lookups(store: TokenStore, hashes: list[str]) -> list[float]:
    for h in hashes[:20]:  # warm the connection, not the data
        await store.get_by_secret_hash(h)
    latencies = []
    for h in hashes:
        started = time.perf_counter()
        record = await store.get_by_secret_hash(h)
        latencies.append(time.perf_counter() - started)
        if record is None:
            raise RuntimeError(f"benchmark token {h[:12]}... is missing from {store!r}")
    return latencies


def _latency_rows(label: str, latencies: list[float], note: str) -> list[Row]:
    return [
        Row(SECTION, f"{label} lookup: p50", percentile(latencies, 0.5) * 1e3, "ms", note),
        Row(SECTION, f"{label} lookup: p99", percentile(latencies, 0.99) * 1e3, "ms"),
    ]


async def sqlite_rows(budget: Budget, tmp: Path) -> list[Row]:
    """Uncached lookups of random tokens in an SQLite file holding ``sqlite_tokens``."""
    store = SQLiteStore(tmp / "lookups.db")
    try:
        secrets = [(await store.create_token({**TOKEN_BODY, "name": f"t{i}"})).token
                   for i in range(budget.sqlite_tokens)]
        hashes = [hash_secret(random.choice(secrets)) for _ in range(budget.lookup_samples)]
        latencies = await _lookups(store, hashes)
    finally:
        await store.close()
    note = f"{budget.sqlite_tokens:,} tokens, {budget.lookup_samples:,} sequential lookups"
    return _latency_rows("SQLite", latencies, note)


async def postgres_rows(budget: Budget) -> list[Row]:
    """Uncached lookups of random tokens in a table of ``pg_rows`` tokens."""
    schema = f"tg_bench_{budget.pg_rows}"
    await ensure_rows(dsn(), schema, budget.pg_rows)
    hashes = [hash_secret(bench_secret(random.randrange(budget.pg_rows)))
              for _ in range(budget.lookup_samples)]
    async with PostgresStore(dsn(), schema=schema, timeout=30.0) as store:
        latencies = await _lookups(store, hashes)
    note = f"{budget.pg_rows:,} tokens, {budget.lookup_samples:,} sequential lookups"
    return _latency_rows("PostgreSQL", latencies, note)


async def storm_rows(label: str, store: TokenStore, requests: int) -> list[Row]:
    """``requests`` concurrent requests through TokenGuard with one uncached token."""
    token = (await store.create_token(TOKEN_BODY)).token
    guard = TokenGuard(inner_app(), store=store, connections=CONNECTIONS)
    scope = http_scope(TABLE_PATH, TABLE_QUERY, request_headers(token))
    started = time.perf_counter()
    answers = await asyncio.gather(*(response_of(guard, scope) for _ in range(requests)))
    elapsed = time.perf_counter() - started
    await guard.guard.resolver.close()
    ok = sum(answer == (200, b"ok") for answer in answers)
    if ok != requests:
        raise RuntimeError(f"miss storm on {label}: only {ok} of {requests} answered 200")
    calls = guard.guard.resolver.stats()["store_lookups"]
    note = f"{requests:,} concurrent requests, one token not yet cached"
    return [
        Row(SECTION, f"miss storm ({label}): store calls", calls, "calls", note),
        Row(SECTION, f"miss storm ({label}): time for all", elapsed * 1e3, "ms"),
    ]


async def _postgres_storm(requests: int) -> list[Row]:
    schema = f"tg_bench_storm_{os.getpid()}"
    try:
        async with PostgresStore(dsn(), schema=schema) as store:
            return await storm_rows("PostgreSQL", store, requests)
    finally:
        async with await psycopg.AsyncConnection.connect(dsn(), autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


async def _run(budget: Budget, tmp: Path) -> list[Row]:
    rows = sql_rows(budget) + await sqlite_rows(budget, tmp)
    missing = postgres_missing()
    if missing is None:
        rows += await postgres_rows(budget)
    else:
        rows += [Row(SECTION, f"PostgreSQL lookup: {p}", None, "", missing)
                 for p in ("p50", "p99")]
    store = SQLiteStore(tmp / "storm.db")
    try:
        rows += await storm_rows("SQLite", store, budget.storm_requests)
    finally:
        await store.close()
    if missing is None:
        rows += await _postgres_storm(budget.storm_requests)
    else:
        rows += [Row(SECTION, f"miss storm (PostgreSQL): {what}", None, "", missing)
                 for what in ("store calls", "time for all")]
    return rows


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """All cold-path rows (no targets: these are figures to watch)."""
    with tempfile.TemporaryDirectory(prefix="tg-bench-cold-") as tmp:
        return asyncio.run(_run(budget, Path(tmp))), []


