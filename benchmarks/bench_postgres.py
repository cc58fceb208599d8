"""PostgresStore figures: cold lookups in a big table, a cache-miss storm, and revocation
propagation across 4 uvicorn processes. Prints figures; asserts nothing.

Run: ``python benchmarks/bench_postgres.py [--quick] [--dsn postgresql://...]``
(the DSN defaults to $TOKEN_GUARD_STORE, else postgresql://postgres@127.0.0.1:5432/test).

1. Cold lookup latency: ``get_by_secret_hash`` for random tokens of a table holding
   1,000,000 tokens (100,000 with ``--quick``), with no cache in front. The rows are bulk
   loaded with COPY into the dedicated schema ``tg_bench_<rows>`` once and reused by later
   runs. Their secrets are deterministic (digits + a valid checksum) so the benchmark can
   re-derive any of them instead of keeping a million in memory.
2. Resolver cache-miss storm: a cold ``Resolver`` hit by many concurrent requests for
   distinct tokens (each one a store lookup), then by many requests for a few tokens
   (single-flight: one lookup per token).
3. Revocation propagation: 4 uvicorn processes, each a ``TokenGuard`` over its own
   ``PostgresStore``; this process revokes a token that every worker has cached and times
   until every worker answers 401 (the revocation's commit included). Target p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from token_guard.adapters.asgi import Receive, Scope, Send
from token_guard.core.records import TokenRecord
from token_guard.core.secret import hash_secret, is_well_formed, secret_from_body
from token_guard.core.spec import parse_token_spec
from token_guard.resolver import CacheSettings, Resolver
from token_guard.stores.postgres import PostgresStore
from token_guard.stores.rows import body_json

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_PROPAGATION_SCHEMA = "tg_bench_propagation"
_WORKERS = 4
_GUARDED_PATH = "/v3/lds/isolines"
_POLL_PAUSE = 0.001  # seconds between polls of one worker: 1 ms resolution, little CPU

_SCRIPT = Path(__file__).resolve()


# -- deterministic tokens -----------------------------------------------------------------
def bench_secret(i: int) -> str:
    """The i-th benchmark token: a well-formed secret whose body is ``i`` in 32 digits."""
    return secret_from_body(f"{i:032d}")


def bench_id(i: int) -> str:
    """The i-th benchmark token's public id."""
    return f"tok_{i:020d}"


_BODY_TEMPLATE = body_json(parse_token_spec(
    {"name": "bench {i}", "grants": [], "referers": [], "allowed_apis": ["lds"]}
))


def _bench_body(i: int) -> str:
    """The stored body of the i-th benchmark token (an LDS-only token, no grants)."""
    return _BODY_TEMPLATE.replace("bench {i}", f"bench {i}")


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    """Seconds as milliseconds for printing."""
    return f"{seconds * 1000:7.2f} ms"


# -- 1. a big table, loaded once ----------------------------------------------------------
async def ensure_rows(dsn: str, schema: str, rows: int) -> None:
    """Create ``schema`` through the store (its migrations) and COPY ``rows`` tokens in."""
    async with PostgresStore(dsn, schema=schema, timeout=30.0):
        pass
    s = sql.Identifier(schema)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'bench_rows'").format(s)
        )
        marker = await cur.fetchone()
        if marker is not None and marker[0] == str(rows):
            print(f"reusing {rows:,} benchmark tokens in schema {schema}")
            return
        print(f"loading {rows:,} tokens into schema {schema} with COPY ...", flush=True)
        started = time.perf_counter()
        now = datetime.now(UTC).isoformat()
        async with conn.transaction():
            await conn.execute(sql.SQL("TRUNCATE {}.tokens CASCADE").format(s))
            # The stores' v3 layout: the validated body as JSON, the secret hash apart.
            tokens_sql = sql.SQL("COPY {}.tokens (id, body, created_at) FROM STDIN").format(s)
            secrets_sql = sql.SQL(
                "COPY {}.token_secrets (secret_hash, token_id) FROM STDIN"
            ).format(s)
            def token_line(i: int) -> str:
                return f"{bench_id(i)}\t{_bench_body(i)}\t{now}\n"

            def secret_line(i: int) -> str:
                return f"{hash_secret(bench_secret(i))}\t{bench_id(i)}\n"

            for copy_sql, line in ((tokens_sql, token_line), (secrets_sql, secret_line)):
                async with conn.cursor().copy(copy_sql) as copy:
                    batch = io.StringIO()
                    for i in range(rows):
                        batch.write(line(i))
                        if i % 50_000 == 49_999:
                            await copy.write(batch.getvalue())
                            batch = io.StringIO()
                    await copy.write(batch.getvalue())
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.meta (key, value) VALUES ('bench_rows', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ).format(s),
                (str(rows),),
            )
        await conn.execute(sql.SQL("ANALYZE {}.tokens").format(s))
        print(f"loaded in {time.perf_counter() - started:.1f} s")


async def bench_cold_lookups(store: PostgresStore, rows: int, samples: int) -> None:
    """Sequential store lookups of random tokens (no cache): p50/p99, and 16 at a time."""
    picks = [random.randrange(rows) for _ in range(samples)]
    hashes = [hash_secret(bench_secret(i)) for i in picks]
    for h in hashes[:50]:  # warm the pool, not the data
        await store.get_by_secret_hash(h)
    latencies = []
    for h in hashes:
        started = time.perf_counter()
        record = await store.get_by_secret_hash(h)
        latencies.append(time.perf_counter() - started)
        if record is None:
            raise SystemExit(f"benchmark token with hash {h[:12]}... is missing; rerun to reload")
    print(
        f"cold lookup, {rows:,} rows, {samples} sequential: p50 {ms(percentile(latencies, 0.5))}"
        f"  p99 {ms(percentile(latencies, 0.99))}  max {ms(max(latencies))}"
    )
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(16)

    async def one(h: str) -> None:
        async with semaphore:
            await store.get_by_secret_hash(h)

    await asyncio.gather(*(one(h) for h in hashes))
    elapsed = time.perf_counter() - started
    print(f"cold lookup, 16 concurrent (pool of 10): {samples / elapsed:8.0f} lookups/s")


# -- 2. resolver storm --------------------------------------------------------------------
def identity(record: TokenRecord) -> TokenRecord:
    """The resolver's compile step for the benchmark: keep the record."""
    return record


async def bench_miss_storm(store: PostgresStore, rows: int, distinct: int) -> None:
    """A cold resolver under ``distinct`` concurrent misses, then 10x requests on 50 tokens."""
    settings = CacheSettings(lookup_timeout=60.0)
    tokens = [bench_secret(random.randrange(rows)) for _ in range(distinct)]
    resolver: Resolver[TokenRecord] = Resolver(store, identity, settings=settings)
    started = time.perf_counter()
    answers = await asyncio.gather(*(resolver.resolve(t) for t in tokens))
    elapsed = time.perf_counter() - started
    ok = sum(isinstance(a, TokenRecord) for a in answers)
    print(
        f"miss storm, {distinct} distinct tokens at once: {distinct / elapsed:8.0f} resolves/s"
        f" ({ok} resolved, {resolver.stats()['store_lookups']} store lookups)"
    )
    await resolver.close()

    hot = tokens[:50]
    requests = [hot[i % len(hot)] for i in range(distinct * 10)]
    resolver = Resolver(store, identity, settings=settings)
    started = time.perf_counter()
    await asyncio.gather(*(resolver.resolve(t) for t in requests))
    elapsed = time.perf_counter() - started
    print(
        f"miss storm, {len(requests)} requests on {len(hot)} tokens: "
        f"{len(requests) / elapsed:8.0f} resolves/s "
        f"({resolver.stats()['store_lookups']} store lookups: single-flight)"
    )
    await resolver.close()


# -- 3. revocation propagation across processes -------------------------------------------
async def _inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def serve(port: int, dsn: str, schema: str) -> None:
    """Run one worker: TokenGuard over a PostgresStore, on 127.0.0.1:``port``."""
    import uvicorn

    from token_guard.adapters.asgi import TokenGuard

    app = TokenGuard(
        _inner_app,
        store=PostgresStore(dsn, schema=schema),
        connections={"carto_dw": "bigquery"},
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_until_up(client: httpx.AsyncClient, port: int, deadline: float) -> None:
    while True:
        with contextlib.suppress(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{port}/healthz")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"worker on port {port} did not start within 30 s")
        await asyncio.sleep(0.1)


class KeepAlive:
    """A bare HTTP/1.1 keep-alive GET client: polling costs the workers, not the client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def status(self, path: str, token: str) -> int:
        """GET ``path`` with the token; the response status."""
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        return int(lines[0].split()[1])

    async def close(self) -> None:
        """Close the connection."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _first_401(client: KeepAlive, token: str, started: float) -> float:
    """Poll a worker until it answers 401; seconds since ``started`` (inf after 5 s)."""
    while True:
        status = await client.status(_GUARDED_PATH, token)
        now = time.perf_counter()
        if status == 401:
            return now - started
        if now - started > 5.0:
            return float("inf")
        await asyncio.sleep(_POLL_PAUSE)


def start_workers(dsn: str) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    """Start the 4 worker processes (this script with --serve) on free ports."""
    ports = [_free_port() for _ in range(_WORKERS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_SCRIPT.parents[1]), *sys.path])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(_SCRIPT), "--serve", str(port), "--dsn", dsn], env=env
        )
        for port in ports
    ]
    return ports, workers


def stop_workers(dsn: str, workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers this benchmark started, and drop their schema."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(_PROPAGATION_SCHEMA))
        )


async def bench_propagation(dsn: str, ports: list[int], rounds: int) -> None:
    """Revoke ``rounds`` tokens cached by every worker; time until all answer 401."""
    async with (
        httpx.AsyncClient(timeout=10.0) as client,
        PostgresStore(dsn, schema=_PROPAGATION_SCHEMA) as store,
    ):
        deadline = time.monotonic() + 30.0
        for port in ports:
            await _wait_until_up(client, port, deadline)
        pollers = [KeepAlive(port) for port in ports]
        times: list[float] = []
        commits: list[float] = []
        for n in range(rounds):
            issued = await store.create_token(
                {"name": f"propagation {n}", "allowed_apis": ["lds"], "referers": []}
            )
            for poller in pollers:  # every worker caches the token (and has its feed up)
                status = await poller.status(_GUARDED_PATH, issued.token)
                if status != 200:
                    raise SystemExit(f"worker on {poller.port} answered {status}, not 200")
            started = time.perf_counter()

            async def revoke(token_id: str = issued.id, started: float = started) -> None:
                await store.revoke_token(token_id)
                commits.append(time.perf_counter() - started)

            revoking = asyncio.create_task(revoke())
            seen = await asyncio.gather(
                *(_first_401(poller, issued.token, started) for poller in pollers)
            )
            await revoking
            times.append(max(seen))
        for poller in pollers:
            await poller.close()
    lost = sum(t == float("inf") for t in times)
    finite = [t for t in times if t != float("inf")] or [float("nan")]
    print(
        f"revocation -> 401 on all {len(ports)} workers, {rounds} revocations: "
        f"p50 {ms(percentile(finite, 0.5))}  p99 {ms(percentile(finite, 0.99))}  "
        f"max {ms(max(finite))}  (not refused within 5 s: {lost}; target p99 <= 100 ms)"
    )
    print(
        f"  of which the revoke call itself (commit + NOTIFY): p50 "
        f"{ms(percentile(commits, 0.5))}  p99 {ms(percentile(commits, 0.99))}"
    )


async def run(dsn: str, quick: bool, ports: list[int]) -> None:
    """Run the three benchmarks."""
    if not is_well_formed(bench_secret(12345)):
        raise SystemExit("bench_secret no longer matches secret.py's token format; fix it")
    rows = 100_000 if quick else 1_000_000
    schema = f"tg_bench_{rows}"
    await ensure_rows(dsn, schema, rows)
    async with PostgresStore(dsn, schema=schema, timeout=30.0) as store:
        await bench_cold_lookups(store, rows, 500 if quick else 5000)
        await bench_miss_storm(store, rows, 1000 if quick else 5000)
    await bench_propagation(dsn, ports, 20 if quick else 100)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmarks (or one worker with --serve)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="100k rows and fewer rounds")
    parser.add_argument(
        "--dsn", default=os.environ.get("TOKEN_GUARD_STORE") or DEFAULT_DSN,
        help="the PostgreSQL to use (default: $TOKEN_GUARD_STORE or the local test database)",
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.dsn, _PROPAGATION_SCHEMA)
        return
    started = time.perf_counter()
    ports, workers = start_workers(args.dsn)
    try:
        asyncio.run(run(args.dsn, args.quick, ports))
    finally:
        stop_workers(args.dsn, workers)
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
