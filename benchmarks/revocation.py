"""Section 6: revocation propagation across 4 worker processes sharing PostgreSQL.

Reuses bench_postgres.py's workers (4 uvicorn processes, each TokenGuard over its own
PostgresStore): a token every worker has cached is revoked here, and the figure is the
time until all four answer 401, the revocation's commit included.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from benchmarks.bench_postgres import _PROPAGATION_SCHEMA, _WORKERS, start_workers, stop_workers
from benchmarks.cold import dsn, postgres_missing
from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import percentile
from token_guard.stores.postgres import PostgresStore

SECTION = f"6. revocation propagation, {_WORKERS} worker processes (PostgreSQL)"
_PATH = "/v3/lds/isolines"  # the workers guard an lds route (API check only)
_POLL_PAUSE = 0.001  # 1 ms resolution, little CPU
_NAMES = ("revocation -> 401 everywhere: p50", "revocation -> 401 everywhere: p99",
          "revocation -> 401 everywhere: max", "revocations not seen within 5 s")


async def _wait_until_up(client: httpx.AsyncClient, url: str, deadline: float) -> None:
    while True:
        try:
            await client.get(url)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {url} did not start within 30 s") from None
            await asyncio.sleep(0.1)


async def _first_401(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], started: float
) -> float:
    """Poll ``url`` until it answers 401: seconds since ``started`` (inf after 5 s)."""
    while True:
        response = await client.get(url, headers=headers)
        now = time.perf_counter()
        if response.status_code == 401:
            return now - started
        if now - started > 5.0:
            return float("inf")
        await asyncio.sleep(_POLL_PAUSE)


async def _propagation(ports: list[int], rounds: int) -> list[float]:
    async with (
        httpx.AsyncClient(timeout=10.0) as client,
        PostgresStore(dsn(), schema=_PROPAGATION_SCHEMA) as store,
    ):
        deadline = time.monotonic() + 30.0
        urls = [f"http://127.0.0.1:{port}{_PATH}" for port in ports]
        for url in urls:
            await _wait_until_up(client, url, deadline)
        times: list[float] = []
        for n in range(rounds):
            issued = await store.create_token(
                {"name": f"propagation {n}", "allowed_apis": ["lds"], "referers": []}
            )
            headers = {"Authorization": f"Bearer {issued.token}"}
            for url in urls:  # every worker caches the token
                response = await client.get(url, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}, not 200")
            started = time.perf_counter()
            revoke = asyncio.create_task(store.revoke_token(issued.id))
            seen = await asyncio.gather(
                *(_first_401(client, url, headers, started) for url in urls)
            )
            await revoke
            times.append(max(seen))
        return times


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """p50/p99/max of revocation -> 401 on every worker (skipped without PostgreSQL)."""
    missing = postgres_missing()
    if missing is not None:
        return [Row(SECTION, name, None, "", missing) for name in _NAMES], []
    ports, workers = start_workers(dsn())
    try:
        times = asyncio.run(_propagation(ports, budget.revocations))
    finally:
        stop_workers(dsn(), workers)
    lost = sum(t == float("inf") for t in times)
    finite = [t for t in times if t != float("inf")] or [float("nan")]
    note = f"{budget.revocations} revocations, each polled on all {_WORKERS} workers"
    return [
        Row(SECTION, _NAMES[0], percentile(finite, 0.5) * 1e3, "ms", note),
        Row(SECTION, _NAMES[1], percentile(finite, 0.99) * 1e3, "ms", "bench_postgres target 100"),
        Row(SECTION, _NAMES[2], max(finite) * 1e3, "ms"),
        Row(SECTION, _NAMES[3], lost, "count"),
    ], []
