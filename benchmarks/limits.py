"""Figures for token limits (printed, never asserted): ``python -m benchmarks.limits``.

- ``latency``: added time per request of a limited token on the guard's warm path
  (``Guard.check_async``, MemoryStore, one table request repeated), p50 and p99 over
  interleaved rounds, for the in-process limiter and Redis (127.0.0.1:6379) in consistent
  and local mode, against the same request of a token without limits.
- ``instructions`` (not a valid figure yet): callgrind of the whole process at two loop
  lengths gave inconsistent differences here (Redis local below no limits); the guard's
  own ``benchmarks.instructions`` is the figure for tokens without limits.
- ``overshoot``: 4 uvicorn workers (``benchmarks.limits_app``) sharing Redis, a token
  limited to 100 requests per second, ``wrk`` for ``--seconds``: requests served per whole
  UTC second, as the app counted them, against the 100 allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import quantiles
from typing import Any

REDIS = os.environ.get("TG_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PATH = b"/v3/maps/carto_dw/table"
QS = b"name=proj.ds.stores"
BODY: dict[str, Any] = {
    "name": "bench", "allowed_apis": ["maps"], "referers": [],
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
}
BIG = {"rate": [{"requests": 10**9, "per": "minute"}],
       "quota": {"requests": 10**12, "per": "month"}}


async def _guard(limiter: str | None, limits: dict[str, Any] | None) -> tuple[Any, bytes]:
    from token_guard.guard import Guard
    from token_guard.stores.memory import MemoryStore

    store = MemoryStore()
    guard = Guard(store=store, connections={"carto_dw": "bigquery"}, limiter=limiter)
    body = {**BODY, "limits": limits} if limits else BODY
    issued = await store.create_token(body)
    auth = f"Bearer {issued.token}".encode()
    await guard.check_async("GET", PATH, QS, auth)  # warm cache
    return guard, auth


async def latency(rounds: int, per_round: int) -> None:
    """p50/p99 of per-request time, limited minus unlimited, interleaved rounds."""
    prefix = f"tg_bench:{uuid.uuid4().hex[:8]}:"
    variants = {
        "no limits": (None, None),
        "in process": (None, BIG),
        "redis consistent": (f"{REDIS}?timeout=1&prefix={prefix}", BIG),
        "redis local": (f"{REDIS}?mode=local&timeout=1&prefix={prefix}", BIG),
    }
    guards = {name: await _guard(*v) for name, v in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (guard, auth) in guards.items():
            for _ in range(per_round):
                started = time.perf_counter()
                await guard.check_async("GET", PATH, QS, auth)
                times[name].append(time.perf_counter() - started)
    base = quantiles(times["no limits"], n=100)
    print("== limits: time per request on the warm path (check_async), µs")
    for name, values in times.items():
        q = quantiles(values, n=100)
        print(f"  {name:18} p50 {q[49] * 1e6:8.1f}  p99 {q[98] * 1e6:8.1f}   added p50 "
              f"{(q[49] - base[49]) * 1e6:+8.1f}  p99 {(q[98] - base[98]) * 1e6:+8.1f}")
    for guard, _ in guards.values():
        await guard.limiter.close()


_CHILD = """
import asyncio, gc, sys
sys.path.insert(0, {root!r})
from benchmarks.limits import _guard, PATH, QS, BIG
limiter, limited, n = {limiter!r}, {limited!r}, int(sys.argv[1])
async def main():
    guard, auth = await _guard(limiter, BIG if limited else None)
    gc.collect(); gc.freeze(); gc.disable()  # as benchmarks.instructions: no collector noise
    for _ in range(n):
        await guard.check_async("GET", PATH, QS, auth)
    await guard.limiter.close()
asyncio.run(main())
"""


def _instructions(code: str, n: int) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", code, str(n)],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def instructions(n1: int, n2: int) -> None:
    """Instructions per request, whole process at two lengths."""
    if shutil.which("valgrind") is None:
        print("  instructions: skipped (valgrind is not installed)")
        return
    root = str(Path(__file__).resolve().parents[1])
    prefix = f"tg_bench:{uuid.uuid4().hex[:8]}:"
    # A long sync_interval: under callgrind time runs ~50x slower, and a timed reconcile
    # would happen far more often than at full speed; the allowance (1 % of 10^9) decides.
    variants = {
        "no limits": (None, False),
        "in process": (None, True),
        "redis local": (f"{REDIS}?mode=local&sync_interval=60&prefix={prefix}", True),
    }
    print(f"== limits: instructions per request (callgrind, N = {n1} and {n2})")
    per: dict[str, float] = {}
    for name, (limiter, limited) in variants.items():
        code = _CHILD.format(root=root, limiter=limiter, limited=limited)
        per[name] = (_instructions(code, n2) - _instructions(code, n1)) / (n2 - n1)
        added = per[name] - per["no limits"]
        print(f"  {name:12} {per[name]:10,.0f} per request   added {added:+10,.0f}")


def overshoot(seconds: int, mode: str, limit: int = 100) -> None:
    """Requests served per second by 4 workers against ``limit``/s (wrk, local Redis)."""
    import redis

    if shutil.which("wrk") is None:
        print("  overshoot: skipped (wrk is not installed)")
        return
    from token_guard.stores.sqlite import SQLiteStore

    tmp = Path(tempfile.mkdtemp(prefix="tg_limits_"))
    db = str(tmp / "tokens.db")
    prefix = f"tg_bench:{uuid.uuid4().hex[:8]}:"

    async def create() -> str:
        store = SQLiteStore(db)
        body = {**BODY, "limits": {"rate": [{"requests": limit, "per": "second"}]}}
        token = (await store.create_token(body)).token
        await store.close()
        return token

    token = asyncio.run(create())
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "TG_BENCH_DB": db, "TG_BENCH_PREFIX": prefix,
           "TG_BENCH_LIMITER": f"{REDIS}?mode={mode}&timeout=1&prefix={prefix}",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.limits_app:app", "--port", str(port),
         "--workers", "4", "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the 4 workers did not start") from None
                time.sleep(0.2)
        time.sleep(2)  # the other workers
        url = f"http://127.0.0.1:{port}{PATH.decode()}?{QS.decode()}"
        subprocess.run(["wrk", "-t2", "-c32", "-d2s", "-H", f"Authorization: Bearer {token}",
                        url], capture_output=True, check=True)  # every worker warm
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(f"{prefix}served:*"):
            client.delete(key)
        start = int(time.time()) + 1
        done = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "-H", f"Authorization: Bearer {token}",
             url], capture_output=True, text=True, check=True)
        end = int(time.time()) - 1
        served = [int(client.get(f"{prefix}served:{s}") or 0) for s in range(start, end)]
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    worst = max(served) if served else 0
    print(f"== limits: overshoot, {mode} mode, 4 uvicorn workers, wrk -c32 {seconds}s, "
          f"limit {limit}/s")
    print(f"  offered {rate.group(1) if rate else '?'} req/s; served per whole second: "
          f"{served}")
    print(f"  worst second {worst} = {100 * (worst - limit) / limit:+.1f} % of the limit "
          "(target <= +5 %)")


def main(argv: list[str] | None = None) -> int:
    """Run the sections named (all by default)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits", description=__doc__)
    parser.add_argument("sections", nargs="*", default=["latency", "overshoot"])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs=2, default=(300, 1100))
    args = parser.parse_args(argv)
    if "latency" in args.sections:
        asyncio.run(latency(rounds=10, per_round=300))
    if "instructions" in args.sections:
        instructions(*args.lengths)
    if "overshoot" in args.sections:
        overshoot(args.seconds, "local")
        overshoot(args.seconds, "consistent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
