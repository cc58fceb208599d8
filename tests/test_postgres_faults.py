"""PostgresStore and the resolver when the link to PostgreSQL fails, for real.

The store under test reaches the real PostgreSQL through ``TcpProxy`` on a loopback port,
so a test can cut or stall that one link while the server keeps running for everyone else
(a second store on a direct connection plays "another instance"). What must hold:

- cut: cached tokens keep working within the stale window, uncached ones get a 503
  ``store_unavailable`` denial, nothing the store would refuse is let through; when the
  link returns the pool and the feed reconnect by themselves, the feed announces ``reset``,
  and a token revoked elsewhere meanwhile is refused;
- stall: a lookup waits at most the configured timeout and the event loop keeps running;
  the feed's heartbeat notices the hang;
- the circuit breaker: after the first failure no request asks the store again (cached
  tokens are answered from the stale window, others get 503) until a probe answers;
- recovery: after the link returns no cached token is refused (the feed's reset marks
  entries stale instead of dropping them) and a token revoked elsewhere during the cut is
  refused once the store answers; writes while the link is down raise StoreUnavailable.

No assertion is on speed: waits are bounded generously (``EVENT_WAIT``) to fail, not to time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.store_contract import EVENT_WAIT, wait_for
from tests.tcp_proxy import TcpProxy
from tests.tokens import body
from token_guard.core.decision import Denial
from token_guard.core.errors import StoreUnavailable
from token_guard.core.records import ChangeEvent, TokenRecord
from token_guard.core.secret import hash_secret, new_secret
from token_guard.resolver import CacheSettings, Resolver
from token_guard.stores.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

STORE_TIMEOUT = 1.0  # seconds the store may take per operation in these tests
SETTINGS = CacheSettings(
    ttl=60.0, negative_ttl=60.0, stale_window=300.0, lookup_timeout=5.0, probe_interval=0.1
)


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped (with everything in it) afterwards."""
    name = f"tg_fault_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
async def proxy(postgres_dsn: str) -> AsyncIterator[TcpProxy]:
    """A proxy from a free loopback port to the real PostgreSQL."""
    async with TcpProxy("127.0.0.1", 5432) as p:
        yield p


class Clock:
    """The resolver's clock, moved by hand so cache ages need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def through(dsn: str, proxy: TcpProxy) -> str:
    """``dsn`` rewritten to reach the server through ``proxy``."""
    return make_conninfo(dsn, host="127.0.0.1", port=proxy.port)


def proxied_store(dsn: str, proxy: TcpProxy, schema: str) -> PostgresStore:
    """A store whose every connection, the feed's included, goes through the proxy."""
    return PostgresStore(
        through(dsn, proxy),
        schema=schema,
        pool_max=4,
        timeout=STORE_TIMEOUT,
        connect_timeout=2,
        feed_heartbeat=0.5,
    )


def identity(record: TokenRecord) -> TokenRecord:
    """The resolver's compile step for these tests: keep the record as it is."""
    return record


async def test_while_cut_cached_tokens_work_for_the_stale_window_and_nothing_else_does(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    clock = Clock()
    async with proxied_store(postgres_dsn, proxy, schema) as store:
        resolver = Resolver(store, identity, settings=SETTINGS, clock=clock)
        known = await store.create_token(body(name="cached"))
        uncached = await store.create_token(body(name="never looked up"))
        revoked = await store.create_token(body(name="revoked"))
        await store.revoke_token(revoked.id)
        assert isinstance(await resolver.resolve(known.token), TokenRecord)
        refused = await resolver.resolve(revoked.token)
        assert isinstance(refused, Denial) and refused.code == "revoked_token"

        await proxy.cut()

        # Fresh in the cache: answered without the store.
        assert await resolver.resolve(known.token) == known.record
        # Past its TTL the store is asked, fails, and the entry is served stale.
        clock.now += SETTINGS.ttl + 1
        assert await resolver.resolve(known.token) == known.record
        assert resolver.stats()["stale_served"] >= 1
        # Never cached: 503, whatever the token is.
        for token in (uncached.token, new_secret()):
            denial = await resolver.resolve(token)
            assert isinstance(denial, Denial)
            assert (denial.status, denial.code) == (503, "store_unavailable")
        # Refused before the cut: still refused (its negative entry has expired by now).
        assert isinstance(await resolver.resolve(revoked.token), Denial)
        # Past the stale window the cached token is no longer vouched for either.
        clock.now += SETTINGS.stale_window + 1
        denial = await resolver.resolve(known.token)
        assert isinstance(denial, Denial) and denial.code == "store_unavailable"
        with pytest.raises(StoreUnavailable):
            await store.get_by_secret_hash(hash_secret(known.token))
        await resolver.close()


async def test_the_store_recovers_by_itself_and_refuses_a_token_revoked_meanwhile(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    async with (
        proxied_store(postgres_dsn, proxy, schema) as here,
        PostgresStore(postgres_dsn, schema=schema) as elsewhere,
    ):
        resolver = Resolver(here, identity, settings=SETTINGS)
        assert await here.wait_feed_ready(EVENT_WAIT)
        events: list[ChangeEvent] = []
        here.subscribe(events.append)
        issued = await elsewhere.create_token(body())
        assert await resolver.resolve(issued.token) == issued.record

        await proxy.cut()
        await wait_for(lambda: not here.feed_healthy, "the feed to notice the cut")
        await elsewhere.revoke_token(issued.id)
        with pytest.raises(StoreUnavailable):
            await here.get_token(issued.id)
        assert ChangeEvent("revoked", issued.id) not in events  # lost: nobody was listening

        await proxy.restore()
        await wait_for(lambda: ChangeEvent("reset") in events, "a reset once the feed is back")
        assert here.feed_healthy
        denial = await resolver.resolve(issued.token)
        assert isinstance(denial, Denial) and denial.code == "revoked_token"
        # The pool is back too, and the feed carries the next change at once.
        got = await here.get_token(issued.id)
        assert got is not None and got.revoked_at is not None
        later = await elsewhere.create_token(body())
        await wait_for(lambda: ChangeEvent("created", later.id) in events, "the next event")
        await resolver.close()


async def test_a_stalled_store_answers_503_at_the_timeout_without_blocking_the_loop(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    async with proxied_store(postgres_dsn, proxy, schema) as store:
        resolver = Resolver(store, identity, settings=SETTINGS)
        issued = await store.create_token(body())
        assert await store.wait_feed_ready(EVENT_WAIT)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        proxy.stall()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await store.get_by_secret_hash(hash_secret(issued.token))
        waited = loop.time() - started
        # Bounded by the configured timeout; the slack is for a loaded machine, and far
        # below the ~10 s psycopg spends cancelling a query on a hung server.
        assert waited < STORE_TIMEOUT + 3.0
        assert ticks >= 5, "the event loop was blocked while the store hung"
        denial = await resolver.resolve(issued.token)
        assert isinstance(denial, Denial) and denial.code == "store_unavailable"
        await wait_for(lambda: not store.feed_healthy, "the heartbeat to notice the stall")

        events: list[ChangeEvent] = []
        store.subscribe(events.append)
        await proxy.restore()
        await wait_for(lambda: ChangeEvent("reset") in events, "a reset after the stall")
        assert await store.get_by_secret_hash(hash_secret(issued.token)) == issued.record
        ticker.cancel()
        await resolver.close()


async def test_connections_cut_while_idle_are_replaced_before_a_caller_sees_them(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    async with proxied_store(postgres_dsn, proxy, schema) as store:
        issued = await store.create_token(body())
        await asyncio.gather(*(store.get_token(issued.id) for _ in range(4)))  # fill the pool
        await proxy.cut()
        await proxy.restore()
        # Every pooled connection died while idle; not one lookup may fail for it.
        for _ in range(8):
            assert await store.get_by_secret_hash(hash_secret(issued.token)) == issued.record


async def test_a_store_that_starts_while_the_server_is_unreachable_comes_up_later(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    await proxy.cut()
    store = proxied_store(postgres_dsn, proxy, schema)
    with pytest.raises(StoreUnavailable):
        await store.get_token("tok_x")
    await proxy.restore()
    issued = await store.create_token(body())
    assert await store.get_token(issued.id) == issued.record
    assert await store.wait_feed_ready(EVENT_WAIT)
    await store.close()


async def test_while_cut_requests_are_answered_without_asking_the_store(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    async with proxied_store(postgres_dsn, proxy, schema) as store:
        resolver = Resolver(store, identity, settings=SETTINGS)
        known = await store.create_token(body(name="cached"))
        uncached = await store.create_token(body(name="never looked up"))
        assert await resolver.resolve(known.token) == known.record
        await proxy.cut()
        await wait_for(lambda: not store.feed_healthy, "the feed to notice the cut")
        # The first request finds the store down (its entry is no longer trusted as fresh
        # without the feed) and trips the breaker; it is still served, stale.
        assert await resolver.resolve(known.token) == known.record
        assert resolver.store_down
        asked = resolver.stats()["store_lookups"]
        for _ in range(50):
            assert await resolver.resolve(known.token) == known.record
            denial = await resolver.resolve(uncached.token)
            assert isinstance(denial, Denial) and denial.code == "store_unavailable"
        assert resolver.stats()["store_lookups"] == asked  # nobody waited on the store
        await proxy.restore()
        await wait_for(lambda: not resolver.store_down, "the probe to close the breaker")
        assert await resolver.resolve(uncached.token) == uncached.record
        await resolver.close()


async def test_after_the_cut_known_tokens_stay_served_and_revocations_are_honoured(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    async with (
        proxied_store(postgres_dsn, proxy, schema) as here,
        PostgresStore(postgres_dsn, schema=schema) as elsewhere,
    ):
        resolver = Resolver(here, identity, settings=SETTINGS)
        assert await here.wait_feed_ready(EVENT_WAIT)
        kept = await elsewhere.create_token(body(name="kept"))
        doomed = await elsewhere.create_token(body(name="revoked during the cut"))
        spared = await elsewhere.create_token(body(name="a revocation here fails"))
        assert await resolver.resolve(kept.token) == kept.record
        assert await resolver.resolve(doomed.token) == doomed.record

        await proxy.cut()
        await wait_for(lambda: not here.feed_healthy, "the feed to notice the cut")
        assert await resolver.resolve(kept.token) == kept.record  # trips the breaker
        await elsewhere.revoke_token(doomed.id)
        with pytest.raises(StoreUnavailable):
            await here.revoke_token(spared.id)  # a write while cut fails, plainly

        await proxy.restore()
        answers: list[TokenRecord | Denial] = []

        async def recovered() -> bool:
            answers.append(await resolver.resolve(kept.token))
            refused = await resolver.resolve(doomed.token)
            return isinstance(refused, Denial) and refused.code == "revoked_token"

        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENT_WAIT
        while not await recovered():
            assert loop.time() < deadline, "the revocation during the cut was never honoured"
            await asyncio.sleep(0.01)
        await wait_for(lambda: here.feed_healthy, "the feed to come back")
        for _ in range(20):  # the feed's reset re-reads entries; it never drops them
            answers.append(await resolver.resolve(kept.token))
            await asyncio.sleep(0.01)
        assert all(a == kept.record for a in answers), [a for a in answers if a != kept.record]
        got = await here.get_token(spared.id)
        assert got is not None and got.revoked_at is None  # the write that failed did not apply
        await resolver.close()


async def test_a_stall_trips_the_breaker_so_only_the_first_request_waits(
    postgres_dsn: str, schema: str, proxy: TcpProxy
) -> None:
    async with proxied_store(postgres_dsn, proxy, schema) as store:
        settings = CacheSettings(lookup_timeout=STORE_TIMEOUT, probe_interval=0.1)
        resolver = Resolver(store, identity, settings=settings)
        known = await store.create_token(body())
        assert await resolver.resolve(known.token) == known.record
        proxy.stall()
        first = await resolver.resolve(new_secret())
        assert isinstance(first, Denial) and first.code == "store_unavailable"
        asked = resolver.stats()["store_lookups"]
        for _ in range(20):
            denial = await resolver.resolve(new_secret())
            assert isinstance(denial, Denial) and denial.code == "store_unavailable"
        assert resolver.stats()["store_lookups"] == asked
        await proxy.restore()
        await wait_for(lambda: not resolver.store_down, "the probe to see the stall end")
        assert await resolver.resolve(known.token) == known.record
        await resolver.close()
