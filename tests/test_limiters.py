"""Limiters for real: in-process counters, Redis (consistent and local), Redis faults, and
the guard charging only allowed requests of tokens with limits.

Redis is the real server on 127.0.0.1:6379; every test uses its own key prefix. Faults go
through ``TcpProxy`` (cut: connections refused; stall: nothing forwarded).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from tests.servers import Reply, bearer, send, serve, serve_wsgi
from tests.tcp_proxy import TcpProxy
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core import decision as codes
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.limits import LimitRule
from token_guard.core.records import TokenRecord
from token_guard.guard import Guard
from token_guard.limiters import Charge, MemoryLimiter, Pending, RedisLimiter
from token_guard.stores.memory import MemoryStore

TABLE = b"/v3/maps/carto_dw/table"
QS = b"name=proj.ds.stores"
FIVE_A_MINUTE = (LimitRule(5, "minute", None, False),)
NOW = 1_800_000_000.0  # the start of a minute (UTC)


async def settle(answer: Charge | Pending) -> Charge:
    """A limiter's answer, awaited if it needs Redis."""
    return await answer() if callable(answer) else answer


def counts(answer: Charge) -> list[int]:
    assert not isinstance(answer, Denial), answer
    return [u.count for u in answer]


# -- in process ---------------------------------------------------------------------------
def test_memory_counts_to_the_limit_then_refuses_with_429_until_the_window_ends() -> None:
    limiter = MemoryLimiter()
    for n in range(1, 6):
        assert counts(limiter.charge("t1", FIVE_A_MINUTE, NOW + 10)) == [n]
    refused = limiter.charge("t1", FIVE_A_MINUTE, NOW + 10)
    assert isinstance(refused, Denial)
    assert (refused.status, refused.code) == (429, codes.RATE_LIMITED)
    assert "5 requests per minute" in refused.message
    headers = dict(refused.headers)
    assert headers[b"retry-after"] == b"50"
    assert headers[b"ratelimit"] == b'"rate-minute-all";r=0;t=50'
    assert headers[b"ratelimit-policy"] == b'"rate-minute-all";q=5;w=60'
    assert counts(limiter.charge("t1", FIVE_A_MINUTE, NOW + 60)) == [1]  # next minute
    assert counts(limiter.charge("t2", FIVE_A_MINUTE, NOW + 10)) == [1]  # another token


def test_a_full_rule_spends_none_of_the_others_and_a_quota_names_itself() -> None:
    limiter = MemoryLimiter()
    rules = (LimitRule(100, "second", None, False), LimitRule(2, "day", None, True))
    assert counts(limiter.charge("t", rules, NOW)) == [1, 1]
    assert counts(limiter.charge("t", rules, NOW)) == [2, 2]
    refused = limiter.charge("t", rules, NOW)
    assert isinstance(refused, Denial) and refused.code == codes.QUOTA_EXCEEDED
    assert "resets at" in refused.hint
    # The refused request was not charged to the rate either.
    assert counts(limiter.charge("t", rules[:1], NOW)) == [3]


def test_memory_counters_stay_bounded() -> None:
    limiter = MemoryLimiter(max_counters=100)
    for i in range(1000):
        limiter.charge(f"t{i}", FIVE_A_MINUTE, NOW)
    assert len(limiter._counts) <= 100


# -- in the guard -------------------------------------------------------------------------
async def limited_guard(limits: dict[str, Any], **options: Any) -> tuple[Guard, str, str]:
    store = MemoryStore()
    guard = Guard(store=store, connections=CONNECTIONS, **options)
    limited = await store.create_token({**FULL, "limits": limits})
    plain = await store.create_token(FULL)
    return guard, limited.token, plain.token


async def ask(guard: Guard, token: str, path: bytes = TABLE, qs: bytes = QS) -> Any:
    return await guard.check_async("GET", path, qs, f"Bearer {token}".encode())


@pytest.mark.anyio
async def test_the_guard_charges_allowed_requests_only_and_per_api() -> None:
    guard, limited, plain = await limited_guard(
        {"rate": [{"requests": 3, "per": "minute", "api": "maps"}]})
    # Refusals (a source not granted) are not charged.
    for _ in range(5):
        denied = await ask(guard, limited, qs=b"name=proj.other.t")
        assert isinstance(denied, Denial) and denied.code == codes.SOURCE_NOT_GRANTED
    for _ in range(3):
        assert isinstance(await ask(guard, limited), TokenRecord)
    over = await ask(guard, limited)
    assert isinstance(over, Denial) and over.code == codes.RATE_LIMITED
    # The rule is on maps only; sql and a token without limits are not counted.
    sql = await ask(guard, limited, b"/v3/sql/carto_dw/query", b"q=select+1+from+proj.ds.stores")
    assert isinstance(sql, TokenRecord)
    for _ in range(10):
        assert isinstance(await ask(guard, plain), TokenRecord)


@pytest.mark.anyio
async def test_a_limit_lowered_by_patch_applies_at_once() -> None:
    store = MemoryStore()
    guard = Guard(store=store, connections=CONNECTIONS)
    await guard.resolver.start()
    try:
        issued = await store.create_token(FULL)
        for _ in range(5):
            assert isinstance(await ask(guard, issued.token), TokenRecord)
        await store.update_token(
            issued.id, {"limits": {"rate": [{"requests": 2, "per": "hour"}]}})
        await asyncio.sleep(0.05)  # the change event evicts the cached token
        results = [await ask(guard, issued.token) for _ in range(3)]
        assert [isinstance(r, TokenRecord) for r in results] == [True, True, False]
    finally:
        await guard.resolver.close()


def test_a_bad_limiter_option_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="limiter"):
        Guard(store=MemoryStore(), connections=CONNECTIONS, limiter="http://redis")
    with pytest.raises(ConfigurationError, match="mode"):
        RedisLimiter("redis://127.0.0.1:6379/0?mode=eventual")


# -- Redis --------------------------------------------------------------------------------
@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    name = f"tg_test:{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


@pytest.mark.anyio
async def test_consistent_mode_shares_counts_and_quotas_survive_a_restart(
    redis_url: str, prefix: str
) -> None:
    rules = (LimitRule(3, "minute", None, False), LimitRule(4, "month", None, True))
    a = RedisLimiter(redis_url, prefix=prefix, timeout=1.0)
    b = RedisLimiter(redis_url, prefix=prefix, timeout=1.0)
    now = time.time()
    assert counts(await settle(a.charge("t", rules, now))) == [1, 1]
    assert counts(await settle(b.charge("t", rules, now))) == [2, 2]
    assert counts(await settle(a.charge("t", rules, now))) == [3, 3]
    refused = await settle(b.charge("t", rules, now))
    assert isinstance(refused, Denial) and refused.code == codes.RATE_LIMITED
    await a.close()
    await b.close()
    # "Restarted": a new limiter; the quota's count is still 3 (the refusal charged nothing).
    c = RedisLimiter(redis_url, prefix=prefix, timeout=1.0)
    assert counts(await settle(c.charge("t", rules[1:], now))) == [4]
    refused = await settle(c.charge("t", rules[1:], now))
    assert isinstance(refused, Denial) and refused.code == codes.QUOTA_EXCEEDED
    await c.close()


@pytest.mark.anyio
async def test_local_mode_overshoots_at_most_its_allowance_per_instance(
    redis_url: str, prefix: str
) -> None:
    rules = (LimitRule(100, "hour", None, False),)
    instances = [RedisLimiter(redis_url, prefix=prefix, mode="local", timeout=1.0)
                 for _ in range(4)]
    admitted = 0
    now = time.time()
    for _round in range(60):
        answers = [i.charge("t", rules, now) for i in instances]  # all decide, then await
        for answer in answers:
            if not isinstance(await settle(answer), Denial):
                admitted += 1
    assert 100 <= admitted <= 104  # allowance max(1, 1 % of 100) = 1 per instance
    for i in instances:
        await i.close()


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy from a free loopback port to the real Redis."""
    async with TcpProxy("127.0.0.1", 6379) as p:
        yield p


def through(proxy: TcpProxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0"


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["cut", "stall"])
@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
async def test_redis_down_or_slow_is_bounded_never_500_and_recovers(
    redis_proxy: TcpProxy, prefix: str, fault: str, fail_open: bool
) -> None:
    limiter = RedisLimiter(through(redis_proxy), prefix=prefix, timeout=0.2,
                           fail_open=fail_open, retry_interval=0.3)
    # An hour's window: a minute's could roll over during a slow run and restart the count.
    rules = (LimitRule(5, "hour", None, False),)
    assert counts(await settle(limiter.charge("t", rules, time.time()))) == [1]
    if fault == "cut":
        await redis_proxy.cut()
    else:
        redis_proxy.stall()
    started = time.monotonic()
    answer = await settle(limiter.charge("t", rules, time.time()))
    assert time.monotonic() - started < 2.0  # bounded by the timeout, not by TCP
    if fail_open:
        assert answer == ()
    else:
        assert isinstance(answer, Denial)
        assert (answer.status, answer.code) == (503, codes.LIMITER_UNAVAILABLE)
    # Within retry_interval Redis is not asked again: the answer is immediate.
    started = time.monotonic()
    again = limiter.charge("t", rules, time.time())
    assert not callable(again) and time.monotonic() - started < 0.05
    await redis_proxy.restore()
    await asyncio.sleep(0.4)
    recovered: Charge = ()
    for _ in range(20):  # the first call after a stall may still meet the old connection
        recovered = await settle(limiter.charge("t", rules, time.time()))
        if recovered and not isinstance(recovered, Denial):
            break
        await asyncio.sleep(0.35)
    assert counts(recovered)[0] >= 2
    await limiter.close()


# -- over HTTP: both adapters ---------------------------------------------------------------
@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
@pytest.mark.parametrize("headers_on", [True, False], ids=["headers", "no-headers"])
def test_http_429_with_retry_after_and_ratelimit_headers(transport: str, headers_on: bool
                                                         ) -> None:
    store = MemoryStore()
    limits = {"rate": [{"requests": 2, "per": "hour"}]}
    with http_env(transport, store, ratelimit_headers=headers_on) as env:
        limited = env.create({**FULL, "limits": limits})
        plain = env.create(FULL)
        path = "/v3/maps/carto_dw/table?name=proj.ds.stores"
        replies = [env.get(path, bearer(limited.token)) for _ in range(3)]
        unlimited = env.get(path, bearer(plain.token))
    assert [r.status for r in replies] == [200, 200, 429]
    first, _, refused = replies
    if headers_on:
        assert first.headers["ratelimit-policy"] == '"rate-hour-all";q=2;w=3600'
        assert first.headers["ratelimit"].startswith('"rate-hour-all";r=1;t=')
    else:
        assert "ratelimit" not in first.headers
    assert refused.json()["code"] == codes.RATE_LIMITED
    assert "2 requests per hour" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit"].startswith('"rate-hour-all";r=0;t=')
    assert limited.token not in refused.body.decode()
    assert unlimited.status == 200 and "ratelimit" not in unlimited.headers


class HttpEnv:
    def __init__(self, port: int, create: Any) -> None:
        self.port = port
        self.create = create

    def get(self, path: str, headers: list[tuple[str, str]]) -> Reply:
        return send(self.port, "GET", path, headers)


@contextmanager
def http_env(transport: str, store: MemoryStore, **options: Any) -> Iterator[HttpEnv]:
    """A guarded echo app over real HTTP: uvicorn (ASGI) or waitress (WSGI)."""
    if transport == "asgi":
        async def app(scope: Any, receive: Any, send_: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send_({"type": "lifespan.startup.complete"})
                await send_({"type": "lifespan.shutdown.complete"})
                return
            await send_({"type": "http.response.start", "status": 200,
                         "headers": [(b"content-type", b"text/plain")]})
            await send_({"type": "http.response.body", "body": b"ok"})

        guarded = TokenGuard(app, store=store, connections=CONNECTIONS, **options)
        with serve(guarded) as server:
            yield HttpEnv(server.port, lambda b: server.call(lambda: store.create_token(b)))
    else:
        def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        wsgi = TokenGuardWSGI(wsgi_app, store=store, connections=CONNECTIONS, **options)
        try:
            with serve_wsgi(wsgi) as wsgi_server:
                yield HttpEnv(wsgi_server.port,
                              lambda b: wsgi.call(lambda: store.create_token(b)))
        finally:
            wsgi.close()


@pytest.mark.parametrize("mode", ["consistent", "local"])
def test_an_asgi_and_a_wsgi_instance_share_one_redis_limit(
    redis_url: str, prefix: str, mode: str
) -> None:
    store = MemoryStore()
    limiter = f"{redis_url}?mode={mode}&timeout=1&prefix={prefix}"
    path = "/v3/maps/carto_dw/table?name=proj.ds.stores"
    with http_env("asgi", store, limiter=limiter) as one, \
            http_env("wsgi", store, limiter=limiter) as two:
        issued = one.create({**FULL, "limits": {"rate": [{"requests": 6, "per": "hour"}]}})
        statuses = [env.get(path, bearer(issued.token)).status
                    for _ in range(6) for env in (one, two)]
    assert statuses.count(200) in ((6, 7, 8) if mode == "local" else (6,))
    assert set(statuses) == {200, 429}


@pytest.mark.anyio
async def test_a_limit_lowered_by_patch_reaches_every_instance_within_the_feed_bound(
    redis_url: str, prefix: str, tmp_path: Any
) -> None:
    from token_guard.stores.sqlite import SQLiteStore

    path = str(tmp_path / "tokens.db")
    stores = [SQLiteStore(path, poll_interval=0.2), SQLiteStore(path, poll_interval=0.2)]
    limiter = f"{redis_url}?timeout=1&prefix={prefix}"
    guards = [Guard(store=s, connections=CONNECTIONS, limiter=limiter) for s in stores]
    for g in guards:
        await g.resolver.start()
    try:
        issued = await stores[0].create_token(FULL)
        for g in guards:  # both instances have the token cached, without limits
            assert isinstance(await ask(g, issued.token), TokenRecord)
        await stores[0].update_token(issued.id, {"limits": {"rate": [
            {"requests": 3, "per": "hour"}]}})
        started = time.monotonic()
        while any((c := g.resolver.lookup(issued.token)) is not None
                  and not isinstance(c, Denial) and c.limits is None for g in guards):
            assert time.monotonic() - started < 2.0, "an instance kept the old token"
            await asyncio.sleep(0.01)
        results = [await ask(g, issued.token) for _ in range(3) for g in guards]
        assert [isinstance(r, TokenRecord) for r in results].count(True) == 3
    finally:
        for g in guards:
            await g.resolver.close()
            await g.limiter.close()
        for s in stores:
            await s.close()
