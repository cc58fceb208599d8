"""The app ``benchmarks.limits`` serves with 4 uvicorn workers: TokenGuard with a Redis
limiter over a shared SQLite store; the handler counts what it served per UTC second in
Redis (``<prefix>served:<second>``), so overshoot is read from what the app really served.

Configured by the environment: ``TG_BENCH_DB`` (SQLite path), ``TG_BENCH_LIMITER`` (redis
URL with options), ``TG_BENCH_PREFIX`` (key prefix).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis.asyncio as aioredis

from token_guard.adapters.asgi import TokenGuard
from token_guard.stores.sqlite import SQLiteStore

_PREFIX = os.environ.get("TG_BENCH_PREFIX", "tg_bench:")
_redis = aioredis.Redis.from_url(os.environ.get("TG_BENCH_REDIS", "redis://127.0.0.1:6379/0"))


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _redis.incr(f"{_PREFIX}served:{int(time.time())}")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


app = TokenGuard(
    _inner, store=SQLiteStore(os.environ["TG_BENCH_DB"]), connections={"carto_dw": "bigquery"},
    limiter=os.environ["TG_BENCH_LIMITER"],
)
