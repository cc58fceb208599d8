"""The resolver: cache, single-flight lookups, negative entries, eviction on change, stale
serving while the store fails, timeouts, usage batching and memory bounds.

The stores here are real (MemoryStore, SQLiteStore on files); where a test needs to count
or slow down lookups it subclasses a real store, it does not mock one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import string
import sys
import threading
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.store_contract import EVENT_WAIT, wait_for
from tests.tokens import body
from token_guard.core.decision import (
    INVALID_TOKEN,
    MALFORMED_TOKEN,
    REVOKED_TOKEN,
    STORE_UNAVAILABLE,
    TOKEN_DISABLED,
    TOKEN_ROTATED,
    Denial,
)
from token_guard.core.errors import ConfigurationError, StoreUnavailable
from token_guard.core.records import ChangeEvent, TokenRecord
from token_guard.core.secret import is_well_formed, new_secret
from token_guard.resolver import CacheSettings, Resolver
from token_guard.stores import MemoryStore, SQLiteStore
from token_guard.stores.base import Listeners, answers_from_memory

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.anyio


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    """A real MemoryStore that counts lookups and can hold them at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []
        self.usage_batches: list[dict[str, datetime]] = []
        self.gate: asyncio.Event | None = None

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        self.lookups.append(secret_hash)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)  # a real store yields to the loop while it looks
        return await super().get_by_secret_hash(secret_hash)

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        self.usage_batches.append(dict(last_used))
        await super().record_usage(last_used)


class InlineCountingStore(CountingStore):
    """A CountingStore whose lookup is marked ``answers_from_memory``: the resolver starts it
    within the caller's step and, since it waits (a yield to the loop, or the gate), runs
    the rest of it in a task, as it does any other store's lookup."""

    @answers_from_memory
    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        return await super().get_by_secret_hash(secret_hash)


# The single-flight, timeout and race tests run both ways a lookup can go: in a task from
# the start, and started within the caller's step, then on in a task.
BOTH_WAYS = pytest.mark.parametrize(
    "counting", [CountingStore, InlineCountingStore], ids=["task", "inline-then-task"]
)


def identity(record: TokenRecord) -> TokenRecord:
    """The 'compiled' token the tests use: the record itself."""
    return record


def make(
    store: MemoryStore | SQLiteStore, clock: Clock | None = None, **settings: Any
) -> Resolver[TokenRecord]:
    """A resolver over ``store`` with the given cache settings."""
    return Resolver(
        store, identity, settings=CacheSettings(**settings), clock=clock or Clock()
    )


def is_denial(result: object, code: str) -> bool:
    """True if ``result`` is a Denial with ``code``."""
    return isinstance(result, Denial) and result.code == code


# -- settings ---------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("ttl", 0, id="ttl-zero"),
        pytest.param("negative_ttl", -1.0, id="negative-ttl-negative"),
        pytest.param("max_entries", 0, id="max-entries-zero"),
        pytest.param("max_negative", 2.5, id="max-negative-fraction"),
        pytest.param("stale_window", -0.1, id="stale-negative"),
        pytest.param("lookup_timeout", float("nan"), id="timeout-nan"),
        pytest.param("usage_flush_interval", float("inf"), id="flush-infinite"),
        pytest.param("ttl", True, id="ttl-bool"),
    ],
)
def test_bad_cache_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        CacheSettings(**{field: value})  # type: ignore[arg-type]


def test_a_zero_stale_window_is_allowed() -> None:
    assert CacheSettings(stale_window=0).stale_window == 0


# -- the happy path ---------------------
async def test_a_valid_token_is_looked_up_once_then_served_from_cache() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    assert resolver.lookup(issued.token) is None  # not cached yet: the caller must resolve
    assert await resolver.resolve(issued.token) == issued.record
    assert resolver.lookup(issued.token) == issued.record
    assert await resolver.resolve(issued.token) == issued.record
    stats = resolver.stats()
    assert (stats["store_lookups"], stats["misses"], stats["hits"]) == (1, 1, 2)
    await resolver.close()


@BOTH_WAYS
async def test_ten_thousand_concurrent_resolves_make_one_store_lookup(
    counting: type[CountingStore],
) -> None:
    store = counting()
    issued = await store.create_token(body())
    resolver = make(store)
    results = await asyncio.gather(*(resolver.resolve(issued.token) for _ in range(10_000)))
    assert len(store.lookups) == 1
    assert all(r == issued.record for r in results)
    assert resolver.stats()["store_lookups"] == 1
    assert resolver.stats()["inflight"] == 0
    await resolver.close()


@BOTH_WAYS
async def test_a_caller_giving_up_does_not_cancel_the_others_lookup(
    counting: type[CountingStore],
) -> None:
    store = counting()
    store.gate = asyncio.Event()
    issued = await store.create_token(body())
    resolver = make(store)
    first = asyncio.ensure_future(resolver.resolve(issued.token))
    second = asyncio.ensure_future(resolver.resolve(issued.token))
    await wait_for(lambda: len(store.lookups) == 1, "the lookup to start")
    first.cancel()
    store.gate.set()
    assert await second == issued.record
    assert len(store.lookups) == 1
    await resolver.close()


# -- denials ---------------------
@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("hello", id="word"),
        pytest.param("tgk_" + "A" * 38, id="bad-checksum"),
        pytest.param(new_secret()[:-1], id="truncated"),
        pytest.param(new_secret() + "x", id="extended"),
        pytest.param("ghp_" + new_secret()[4:], id="other-prefix"),
        pytest.param("x" * 100_000, id="huge"),
    ],
)
async def test_a_malformed_token_is_denied_without_a_lookup_and_not_cached(token: str) -> None:
    store = CountingStore()
    resolver = make(store)
    assert is_denial(resolver.lookup(token), MALFORMED_TOKEN)
    result = await resolver.resolve(token)
    assert is_denial(result, MALFORMED_TOKEN)
    assert isinstance(result, Denial) and result.status == 401
    assert len(token) < 8 or token not in result.message + result.hint
    assert store.lookups == []
    stats = resolver.stats()
    assert stats["negative_entries"] == stats["positive_entries"] == 0


async def test_an_unknown_token_is_denied_and_cached_negatively() -> None:
    store = CountingStore()
    clock = Clock()
    resolver = make(store, clock, negative_ttl=5.0)
    token = new_secret()
    result = await resolver.resolve(token)
    assert is_denial(result, INVALID_TOKEN)
    assert isinstance(result, Denial) and result.status == 401
    assert is_denial(resolver.lookup(token), INVALID_TOKEN)
    assert is_denial(await resolver.resolve(token), INVALID_TOKEN)
    assert len(store.lookups) == 1 and resolver.stats()["negative_hits"] == 2
    clock.now += 5.0
    assert resolver.lookup(token) is None  # the negative entry ran out
    assert is_denial(await resolver.resolve(token), INVALID_TOKEN)
    assert len(store.lookups) == 2
    await resolver.close()


async def test_a_revoked_token_is_denied_as_revoked() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    await store.revoke_token(issued.id)
    resolver = make(store)
    assert is_denial(await resolver.resolve(issued.token), REVOKED_TOKEN)
    assert is_denial(resolver.lookup(issued.token), REVOKED_TOKEN)
    assert len(store.lookups) == 1
    await resolver.close()


async def test_a_record_that_does_not_compile_is_denied_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = CountingStore()
    issued = await store.create_token(body())

    def broken(record: TokenRecord) -> TokenRecord:
        raise ValueError("grant cannot be compiled")

    resolver: Resolver[TokenRecord] = Resolver(store, broken, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="token_guard.resolver"):
        assert is_denial(await resolver.resolve(issued.token), INVALID_TOKEN)
    assert issued.id in caplog.text and issued.token not in caplog.text
    assert resolver.stats()["compile_errors"] == 1
    await resolver.close()


# -- change events ---------------------
async def test_revocation_evicts_the_cached_token_at_once() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    await resolver.resolve(issued.token)
    assert resolver.lookup(issued.token) == issued.record
    await store.revoke_token(issued.id)
    assert resolver.lookup(issued.token) is None
    assert is_denial(await resolver.resolve(issued.token), REVOKED_TOKEN)
    assert resolver.stats()["evictions"] == 1
    await resolver.close()


async def test_an_update_evicts_and_the_next_resolve_sees_it() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    await resolver.resolve(issued.token)
    await store.update_token(issued.id, {"allowed_apis": ["lds"]})
    result = await resolver.resolve(issued.token)
    assert isinstance(result, TokenRecord) and result.allowed_apis == ("lds",)
    await resolver.close()


async def test_a_reset_drops_refusals_and_makes_known_tokens_reread() -> None:
    store = CountingStore()
    tokens = [await store.create_token(body(name=str(i))) for i in range(3)]
    resolver = make(store)
    await resolver.start()
    for issued in tokens:
        await resolver.resolve(issued.token)
    await resolver.resolve(new_secret())
    heard, store._listeners = store._listeners, Listeners()
    await store.revoke_token(tokens[0].id)  # as if elsewhere, unheard: only the reset tells
    store._listeners = heard
    store._listeners.emit(ChangeEvent("reset"))  # what a store sends after losing its feed
    assert all(resolver.lookup(i.token) is None for i in tokens)  # none is fresh now
    stats = resolver.stats()
    assert stats["negative_entries"] == 0
    assert stats["positive_entries"] == stats["indexed_ids"] == 3
    before = len(store.lookups)
    assert is_denial(await resolver.resolve(tokens[0].token), REVOKED_TOKEN)
    assert await resolver.resolve(tokens[1].token) == tokens[1].record
    assert len(store.lookups) == before + 2  # each re-read once, then fresh again
    assert resolver.lookup(tokens[1].token) == tokens[1].record
    await resolver.close()


async def test_after_a_reset_a_known_token_is_served_stale_while_the_store_fails() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    await resolver.start()
    await resolver.resolve(issued.token)
    await store.close()  # down, and then the feed says it may have missed changes
    store._listeners.emit(ChangeEvent("reset"))
    assert await resolver.resolve(issued.token) == issued.record
    assert resolver.stats()["stale_served"] == 1
    await resolver.close()


@BOTH_WAYS
async def test_a_lookup_racing_a_revocation_is_not_cached(counting: type[CountingStore]) -> None:
    store = counting()
    issued = await store.create_token(body())
    resolver = make(store)
    await resolver.start()
    store.gate = asyncio.Event()
    pending = asyncio.ensure_future(resolver.resolve(issued.token))
    await wait_for(lambda: len(store.lookups) == 1, "the lookup to start")
    await store.revoke_token(issued.id)
    # A caller arriving after the revocation does not join the older lookup.
    later = asyncio.ensure_future(resolver.resolve(issued.token))
    await wait_for(lambda: len(store.lookups) == 2, "a second, fresh lookup")
    store.gate.set()
    await pending  # answered with what the store said when it was asked
    assert is_denial(await later, REVOKED_TOKEN)
    assert is_denial(await resolver.resolve(issued.token), REVOKED_TOKEN)
    await resolver.close()


# -- the store failing ---------------------
async def test_a_failing_store_serves_cached_tokens_within_the_stale_window_only() -> None:
    store = CountingStore()
    cached = await store.create_token(body(name="cached"))
    uncached = await store.create_token(body(name="uncached"))
    clock = Clock()
    resolver = make(store, clock, ttl=60.0, stale_window=300.0)
    await resolver.resolve(cached.token)
    await store.close()  # the store is down from here on

    clock.now += 30.0  # still fresh: no lookup needed at all
    assert await resolver.resolve(cached.token) == cached.record
    clock.now += 100.0  # past ttl, inside the stale window
    assert await resolver.resolve(cached.token) == cached.record
    assert resolver.stats()["stale_served"] == 1
    unavailable = await resolver.resolve(uncached.token)
    assert is_denial(unavailable, STORE_UNAVAILABLE)
    assert isinstance(unavailable, Denial) and unavailable.status == 503
    assert "retry in a few seconds" in unavailable.hint
    clock.now += 300.0  # past ttl + stale_window
    assert is_denial(await resolver.resolve(cached.token), STORE_UNAVAILABLE)

    await store.open()  # back: fresh answers again once the breaker's probe sees it
    await wait_for(lambda: not resolver.store_down, "the probe to close the breaker")
    assert await resolver.resolve(cached.token) == cached.record
    await resolver.close()


async def test_an_unreadable_sqlite_file_gives_503_for_uncached_tokens(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(os.urandom(4096))
    resolver = make(SQLiteStore(path))
    assert is_denial(await resolver.resolve(new_secret()), STORE_UNAVAILABLE)
    await resolver.close()


class HangingStore(MemoryStore):
    """A real MemoryStore whose lookups never finish (a store stuck on the network)."""

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class InlineHangingStore(MemoryStore):
    """HangingStore, marked ``answers_from_memory``: started within the caller's step, it
    waits, and the timeout still cuts it short."""

    @answers_from_memory
    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("hanging", [HangingStore, InlineHangingStore],
                         ids=["task", "inline-then-task"])
async def test_a_lookup_timeout_gives_503_and_does_not_block_the_loop(
    hanging: type[MemoryStore],
) -> None:
    store = hanging()
    issued = await store.create_token(body())
    resolver = make(store, lookup_timeout=0.2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.ensure_future(ticker())
    result = await resolver.resolve(issued.token)
    ticking.cancel()
    assert is_denial(result, STORE_UNAVAILABLE)
    assert ticks > 0  # other work ran while the lookup was pending
    assert resolver.stats()["inflight"] == 0
    await resolver.close()


# -- bounds ---------------------
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def well_formed_garbage(rng: random.Random) -> str:
    """A token of the right shape and checksum that no store issued (fast to make)."""
    head = "tgk_" + "".join(rng.choices(BASE62, k=32))
    crc = zlib.crc32(head.encode())
    digits = ""
    for _ in range(6):
        crc, rem = divmod(crc, 62)
        digits = BASE62[rem] + digits
    return head + digits


def garbage_tokens(n: int, rng: random.Random) -> list[str]:
    """``n`` tokens: half well-formed but unknown, half malformed in assorted ways."""
    alphabet = BASE62 + "_-."
    out = []
    for i in range(n):
        if i % 2:
            out.append(well_formed_garbage(rng))
        else:
            out.append("".join(rng.choices(alphabet, k=rng.randint(0, 60))))
    return out


async def test_fifty_thousand_random_invalid_tokens_stay_within_bounds() -> None:
    store = CountingStore()
    valid = await store.create_token(body())
    resolver = make(store, max_negative=1000, max_entries=100)
    await resolver.resolve(valid.token)
    tokens = garbage_tokens(50_000, random.Random(7))
    well_formed = {t for t in tokens if is_well_formed(t)}
    assert len(well_formed) == 25_000  # the generator makes what the guard accepts
    for token in tokens:
        result = await resolver.resolve(token)
        expected = INVALID_TOKEN if token in well_formed else MALFORMED_TOKEN
        assert isinstance(result, Denial) and (result.status, result.code) == (401, expected)
    assert len(store.lookups) == len(well_formed) + 1
    stats = resolver.stats()
    assert stats["negative_entries"] <= 1000
    assert stats["positive_entries"] == 1
    assert stats["indexed_ids"] == 1
    assert stats["inflight"] == 0
    assert resolver.lookup(valid.token) == valid.record  # the real token was not pushed out
    await resolver.close()


async def test_the_id_index_shrinks_with_the_cache() -> None:
    store = CountingStore()
    tokens = [await store.create_token(body(name=str(i))) for i in range(50)]
    clock = Clock()
    resolver = make(store, clock, max_entries=10, ttl=1.0, stale_window=1.0)
    for issued in tokens:
        await resolver.resolve(issued.token)
    assert resolver.stats()["positive_entries"] <= 10
    assert resolver.stats()["indexed_ids"] <= 10
    assert resolver.stats()["capacity_evictions"] == 40
    clock.now += 5.0
    await resolver.resolve(new_secret())  # any write lets the cache drop expired entries
    assert resolver.stats()["indexed_ids"] == 0
    await resolver.close()


async def test_a_full_cache_drops_the_token_written_longest_ago() -> None:
    store = CountingStore()
    tokens = [await store.create_token(body(name=str(i))) for i in range(12)]
    clock = Clock()
    resolver = make(store, clock, max_entries=10)
    for issued in tokens[:10]:
        await resolver.resolve(issued.token)
        clock.now += 1.0
    await resolver.resolve(tokens[0].token)  # a hit: it does not move the token up
    await resolver.resolve(tokens[10].token)
    await resolver.resolve(tokens[11].token)
    assert [resolver.lookup(i.token) is not None for i in tokens] == [False, False] + [True] * 10
    stats = resolver.stats()
    assert stats["capacity_evictions"] == 2 and stats["indexed_ids"] == 10
    await resolver.close()


async def test_a_short_lived_entry_behind_a_long_lived_one_is_never_served_late() -> None:
    """Entries leave the cache oldest first; one whose stale window ends before the entry
    ahead of it stays until then, and is refused by its own times meanwhile."""
    store = CountingStore()
    long_lived = await store.create_token(body(name="long"))
    short_lived = await store.create_token(body(name="short"))
    await store.rotate_token(short_lived.id, grace_seconds=30)  # the old secret: 30 s more
    clock = Clock()
    resolver = make(store, clock, ttl=600.0, stale_window=600.0)
    await resolver.resolve(long_lived.token)
    await resolver.resolve(short_lived.token)
    clock.now += 60.0  # past the grace: the old secret's freshness and stale window ended
    assert resolver.lookup(short_lived.token) is None
    assert resolver.lookup(long_lived.token) == long_lived.record
    await store.close()  # the store fails: only an entry inside its stale window serves
    assert resolver.lookup(short_lived.token) is None
    assert is_denial(await resolver.resolve(short_lived.token), STORE_UNAVAILABLE)
    await resolver.close()


async def test_a_change_evicts_every_cached_secret_of_the_token() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    rotated = await store.rotate_token(issued.id, grace_seconds=3600)
    for secret in (issued.token, rotated.token):  # the old one in its grace, and the new
        assert not isinstance(await resolver.resolve(secret), Denial)
    stats = resolver.stats()
    assert (stats["positive_entries"], stats["indexed_ids"]) == (2, 1)
    await store.revoke_token(issued.id)
    assert resolver.lookup(issued.token) is None and resolver.lookup(rotated.token) is None
    for secret in (issued.token, rotated.token):
        assert is_denial(await resolver.resolve(secret), REVOKED_TOKEN)
    await resolver.close()


async def test_a_token_is_not_kept_fresh_past_its_expiry() -> None:
    store = CountingStore()
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    issued = await store.create_token(body(expiration_date=soon))
    clock = Clock()
    resolver = make(store, clock, ttl=600.0)
    await resolver.resolve(issued.token)
    clock.now += 10.0
    assert resolver.lookup(issued.token) == issued.record
    clock.now += 50.0  # past the expiry, well inside ttl
    assert resolver.lookup(issued.token) is None
    await resolver.close()


# -- usage ---------------------
async def test_uses_are_written_in_one_batch_not_per_request() -> None:
    store = CountingStore()
    a = await store.create_token(body(name="a"))
    b = await store.create_token(body(name="b"))
    resolver = make(store)
    await resolver.start()
    for _ in range(500):
        resolver.note_used(a.id)
        resolver.note_used(b.id)
    await resolver.close()
    assert len(store.usage_batches) == 1
    assert set(store.usage_batches[0]) == {a.id, b.id}
    got = await store.get_token(a.id)
    assert got is not None and got.last_used_at is not None


async def test_usage_that_failed_to_write_is_kept_for_the_next_flush() -> None:
    store = CountingStore()
    a = await store.create_token(body(name="a"))
    resolver = make(store)
    resolver.note_used(a.id)
    await store.close()
    await resolver.flush_usage()
    assert resolver.stats()["usage_flush_errors"] == 1
    assert resolver.stats()["pending_usage"] == 1
    await store.open()
    await resolver.close()
    got = await store.get_token(a.id)
    assert got is not None and got.last_used_at is not None


async def test_start_and_close_are_idempotent_and_close_unsubscribes() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    await resolver.start()
    await resolver.start()
    assert len(store._listeners) == 1
    await resolver.close()
    await resolver.close()
    assert len(store._listeners) == 0
    await resolver.resolve(issued.token)  # lazily starts again
    assert len(store._listeners) == 1
    await resolver.close()


# -- across processes ---------------------
_REVOKER = """
import asyncio, sys
from token_guard.stores import SQLiteStore

async def main(path, token_id):
    store = SQLiteStore(path)
    await store.revoke_token(token_id, actor="other-process")
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_revocation_in_another_process_evicts_this_process_cache(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = SQLiteStore(path, poll_interval=0.1)
    issued = await store.create_token(body())
    resolver = make(store)
    assert await resolver.resolve(issued.token) == issued.record
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _REVOKER, str(path), issued.id,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(child.communicate(), EVENT_WAIT * 3)
    assert child.returncode == 0, err.decode()
    await wait_for(lambda: resolver.lookup(issued.token) is None, "the eviction")
    assert is_denial(await resolver.resolve(issued.token), REVOKED_TOKEN)
    await resolver.close()
    await store.close()


async def test_lookups_from_other_threads_during_resolves_and_evictions_stay_consistent() -> None:
    store = CountingStore()
    tokens = [await store.create_token(body(name=str(i))) for i in range(200)]
    resolver = make(store, max_entries=50, max_negative=50)
    await resolver.start()
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        rng = random.Random()
        try:
            while not stop.is_set():
                result = resolver.lookup(rng.choice(tokens).token)
                assert result is None or isinstance(result, TokenRecord | Denial)
                resolver.note_used(tokens[0].id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for round_ in range(3):
            for issued in tokens:
                await resolver.resolve(issued.token)
            await store.revoke_token(tokens[round_].id)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    stats = resolver.stats()
    assert stats["positive_entries"] <= 50 and stats["negative_entries"] <= 50
    assert is_denial(await resolver.resolve(tokens[0].token), REVOKED_TOKEN)
    await resolver.close()


class FeedStore(CountingStore):
    """A store whose change feed can be down while the store itself answers (PostgreSQL)."""

    feed_healthy = True


async def test_cached_token_is_reread_while_the_change_feed_is_down() -> None:
    store = FeedStore()
    resolver: Resolver[TokenRecord] = Resolver(store, lambda r: r)
    issued = await store.create_token(body())
    assert not isinstance(await resolver.resolve(issued.token), Denial)
    assert resolver.lookup(issued.token) is not None  # a fresh hit
    store.feed_healthy = False  # revocations elsewhere could go unheard now
    assert resolver.lookup(issued.token) is None
    before = len(store.lookups)
    assert not isinstance(await resolver.resolve(issued.token), Denial)
    assert len(store.lookups) == before + 1
    await store.revoke_token(issued.id)
    assert isinstance(await resolver.resolve(issued.token), Denial)
    await resolver.close()


# -- the token lifecycle: rotation and disabling --------------------------------------------
async def test_a_replaced_secret_works_through_its_grace_then_is_refused_as_rotated() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    clock = Clock()
    resolver = make(store, clock, ttl=60.0)
    assert await resolver.resolve(issued.token) == issued.record
    rotated = await store.rotate_token(issued.id, grace_seconds=1)
    assert resolver.lookup(issued.token) is None  # the rotation evicted it
    old = await resolver.resolve(issued.token)
    assert isinstance(old, TokenRecord) and old.id == issued.id
    assert resolver.lookup(issued.token) is not None  # cached, but only until the grace ends
    await asyncio.sleep(1.1)
    clock.now += 1.1
    assert resolver.lookup(issued.token) is None  # not fresh past the secret's end
    refused = await resolver.resolve(issued.token)
    assert is_denial(refused, TOKEN_ROTATED)
    assert isinstance(refused, Denial) and refused.status == 401
    assert "replaced by a rotation on 20" in refused.hint and "new secret" in refused.hint
    assert issued.token not in refused.hint + refused.message
    new = await resolver.resolve(rotated.token)
    assert isinstance(new, TokenRecord) and new.id == issued.id
    await resolver.close()


async def test_a_replaced_secret_is_never_served_stale_past_its_grace() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    clock = Clock()
    resolver = make(store, clock, ttl=60.0, stale_window=300.0)
    await store.rotate_token(issued.id, grace_seconds=1)
    assert isinstance(await resolver.resolve(issued.token), TokenRecord)
    await store.close()  # the store is down: only the cache could answer
    await asyncio.sleep(1.1)
    clock.now += 1.1
    assert is_denial(await resolver.resolve(issued.token), STORE_UNAVAILABLE)
    assert resolver.stats()["stale_served"] == 0
    await resolver.close()


async def test_ending_the_grace_early_evicts_the_replaced_secret_at_once() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    await store.rotate_token(issued.id, grace_seconds=3600)
    assert isinstance(await resolver.resolve(issued.token), TokenRecord)
    assert resolver.lookup(issued.token) is not None
    await store.end_rotation_grace(issued.id)
    assert resolver.lookup(issued.token) is None
    assert is_denial(await resolver.resolve(issued.token), TOKEN_ROTATED)
    await resolver.close()


async def test_a_disabled_token_is_refused_until_it_is_enabled() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store)
    assert await resolver.resolve(issued.token) == issued.record
    await store.disable_token(issued.id)
    refused = await resolver.resolve(issued.token)
    assert is_denial(refused, TOKEN_DISABLED)
    assert isinstance(refused, Denial) and refused.status == 401 and "enable" in refused.hint
    assert resolver.lookup(issued.token) == refused  # cached negatively, indexed by id
    await store.enable_token(issued.id)
    assert resolver.lookup(issued.token) is None  # the enable evicted the refusal
    assert isinstance(await resolver.resolve(issued.token), TokenRecord)
    await resolver.close()


async def test_lifecycle_changes_by_another_sqlite_instance_reach_this_cache(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    mine = SQLiteStore(path, poll_interval=0.1)
    other = SQLiteStore(path, poll_interval=0.1)
    issued = await mine.create_token(body())
    resolver = make(mine)
    assert isinstance(await resolver.resolve(issued.token), TokenRecord)
    await other.disable_token(issued.id)
    await wait_for(lambda: resolver.lookup(issued.token) is None, "the disable's eviction")
    assert is_denial(await resolver.resolve(issued.token), TOKEN_DISABLED)
    await other.enable_token(issued.id)
    await wait_for(lambda: resolver.lookup(issued.token) is None, "the enable's eviction")
    assert isinstance(await resolver.resolve(issued.token), TokenRecord)
    rotated = await other.rotate_token(issued.id, grace_seconds=3600)
    await wait_for(lambda: resolver.lookup(issued.token) is None, "the rotation's eviction")
    assert isinstance(await resolver.resolve(issued.token), TokenRecord)
    await other.end_rotation_grace(issued.id)
    await wait_for(lambda: resolver.lookup(issued.token) is None, "the early end's eviction")
    assert is_denial(await resolver.resolve(issued.token), TOKEN_ROTATED)
    assert isinstance(await resolver.resolve(rotated.token), TokenRecord)
    await resolver.close()
    await mine.close()
    await other.close()


# -- the circuit breaker ---------------------
class FlakyStore(CountingStore):
    """A real MemoryStore whose lookups fail while ``down`` (a store behind a cut link)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.pings = 0

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        if self.down:
            self.lookups.append(secret_hash)
            raise StoreUnavailable("the test cut the store off")
        return await super().get_by_secret_hash(secret_hash)

    async def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise StoreUnavailable("still cut off")


class InlineFlakyStore(FlakyStore):
    """FlakyStore, marked ``answers_from_memory``: while down, its lookup raises within the
    caller's step."""

    @answers_from_memory
    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        return await super().get_by_secret_hash(secret_hash)


@pytest.mark.parametrize("flaky", [FlakyStore, InlineFlakyStore], ids=["task", "inline"])
async def test_after_a_failure_the_store_is_not_asked_until_a_probe_answers(
    flaky: type[FlakyStore],
) -> None:
    store = flaky()
    cached = await store.create_token(body(name="cached"))
    uncached = await store.create_token(body(name="uncached"))
    clock = Clock()
    resolver = make(store, clock, ttl=60.0, stale_window=300.0, probe_interval=0.05)
    await resolver.resolve(cached.token)
    clock.now += 61.0  # past its TTL: the next request asks the store
    store.down = True
    assert await resolver.resolve(cached.token) == cached.record
    assert resolver.store_down
    asked = len(store.lookups)
    for _ in range(20):  # answered at once, without the store
        assert await resolver.resolve(cached.token) == cached.record
        assert is_denial(await resolver.resolve(uncached.token), STORE_UNAVAILABLE)
    assert len(store.lookups) == asked
    assert resolver.stats()["fast_failures"] == 40
    await wait_for(lambda: store.pings >= 2, "the probe to keep trying")
    assert resolver.store_down
    store.down = False
    await wait_for(lambda: not resolver.store_down, "the probe to close the breaker")
    assert await resolver.resolve(uncached.token) == uncached.record
    assert resolver.stats()["breaker_trips"] == 1
    await resolver.close()


async def test_a_store_without_ping_is_probed_with_a_lookup_no_token_matches() -> None:
    store = CountingStore()
    issued = await store.create_token(body())
    resolver = make(store, probe_interval=0.05)
    await store.close()
    assert is_denial(await resolver.resolve(issued.token), STORE_UNAVAILABLE)
    assert resolver.store_down
    await store.open()
    await wait_for(lambda: not resolver.store_down, "the lookup probe to close the breaker")
    assert await resolver.resolve(issued.token) == issued.record
    await resolver.close()


async def test_close_stops_the_probe() -> None:
    store = FlakyStore()
    store.down = True
    resolver = make(store, probe_interval=0.05)
    assert is_denial(await resolver.resolve(new_secret()), STORE_UNAVAILABLE)
    await resolver.close()
    pings = store.pings
    await asyncio.sleep(0.2)
    assert store.pings == pings and not resolver.store_down


# -- change events during a lookup ------------------------------------------------------------
class ReadThenWaitStore(MemoryStore):
    """A real MemoryStore whose lookups read first, then wait at a gate: the answer a slow
    store gives is as of when it read, whatever happened while it was on its way back."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.read = asyncio.Event()

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        record = await super().get_by_secret_hash(secret_hash)
        self.read.set()
        if self.gate is not None:
            await self.gate.wait()
        return record


class InlineReadThenWaitStore(ReadThenWaitStore):
    """ReadThenWaitStore, marked ``answers_from_memory``: it reads within the caller's step,
    then waits at the gate in a task."""

    @answers_from_memory
    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        return await super().get_by_secret_hash(secret_hash)


READ_THEN_WAIT = pytest.mark.parametrize(
    "read_then_wait", [ReadThenWaitStore, InlineReadThenWaitStore],
    ids=["task", "inline-then-task"],
)


@READ_THEN_WAIT
async def test_a_lookup_overlapping_changes_to_other_tokens_is_still_cached(
    read_then_wait: type[ReadThenWaitStore],
) -> None:
    store = read_then_wait()
    issued = await store.create_token(body(name="looked up"))
    resolver = make(store)
    await resolver.start()
    store.gate = asyncio.Event()
    lookup = asyncio.create_task(resolver.resolve(issued.token))
    await store.read.wait()
    other = await store.create_token(body(name="created elsewhere meanwhile"))
    await store.revoke_token(other.id)
    store.gate.set()
    assert await lookup == issued.record
    assert resolver.lookup(issued.token) == issued.record  # cached despite the events
    await resolver.close()


@READ_THEN_WAIT
@pytest.mark.parametrize("change", ["revoke", "disable", "update"])
async def test_a_lookup_overlapping_a_change_to_its_own_token_is_not_cached(
    change: str, read_then_wait: type[ReadThenWaitStore],
) -> None:
    store = read_then_wait()
    issued = await store.create_token(body(name="looked up"))
    resolver = make(store)
    await resolver.start()
    store.gate = asyncio.Event()
    lookup = asyncio.create_task(resolver.resolve(issued.token))
    await store.read.wait()
    if change == "revoke":
        await store.revoke_token(issued.id)
    elif change == "disable":
        await store.disable_token(issued.id)
    else:
        await store.update_token(issued.id, {"name": "renamed"})
    store.gate.set()
    assert await lookup == issued.record  # the answer as the store read it...
    assert resolver.lookup(issued.token) is None  # ...but not kept: the change may undo it
    store.gate = None
    after = await resolver.resolve(issued.token)
    if change == "update":
        assert isinstance(after, TokenRecord) and after.spec.name == "renamed"
    else:
        assert isinstance(after, Denial)
    await resolver.close()


# -- a lookup that answers from memory ------------------------------------------------------
def step_once(coro: Any) -> object:
    """Run one step of ``coro``: its result if it finished without waiting, else fail."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine waited")


async def test_a_memory_store_lookup_is_answered_within_the_callers_step() -> None:
    store = MemoryStore()
    issued = await store.create_token(body())
    await store.revoke_token((await store.create_token(body(name="revoked"))).id)
    resolver = make(store)
    unknown = new_secret()
    # One step each: no task, no timeout, no trip through the event loop.
    assert is_denial(step_once(resolver.resolve(unknown)), INVALID_TOKEN)
    assert step_once(resolver.resolve(issued.token)) == issued.record
    assert is_denial(step_once(resolver.resolve_missed(unknown)), INVALID_TOKEN)  # cached
    assert resolver.lookup(issued.token) == issued.record
    stats = resolver.stats()
    assert (stats["store_lookups"], stats["inflight"]) == (2, 0)
    await store.revoke_token(issued.id)  # change events still evict
    assert is_denial(step_once(resolver.resolve(issued.token)), REVOKED_TOKEN)
    await resolver.close()


async def test_only_the_marked_function_is_asked_within_the_step() -> None:
    assert MemoryStore().get_by_secret_hash.answers_from_memory is True  # type: ignore[attr-defined]
    # A subclass that overrides the lookup is not marked: its lookup runs in a task.
    assert not hasattr(CountingStore().get_by_secret_hash, "answers_from_memory")
    store = CountingStore()
    resolver = make(store)
    resolving = resolver.resolve(new_secret())
    assert isinstance(resolving.send(None), type(None) | asyncio.Future)  # it waited
    resolving.close()
    await resolver.close()


async def test_a_memory_store_failing_within_the_step_gives_503_and_trips_the_breaker() -> None:
    store = MemoryStore()
    issued = await store.create_token(body())
    resolver = make(store, probe_interval=0.05)
    await store.close()
    assert is_denial(step_once(resolver.resolve(issued.token)), STORE_UNAVAILABLE)
    assert resolver.store_down and resolver.stats()["store_errors"] == 1
    await store.open()
    await wait_for(lambda: not resolver.store_down, "the probe to close the breaker")
    assert step_once(resolver.resolve(issued.token)) == issued.record
    await resolver.close()


async def test_refusals_stay_within_their_bound_and_the_id_index_with_them() -> None:
    store = MemoryStore()
    tokens = [await store.create_token(body(name=str(i))) for i in range(30)]
    for issued in tokens:
        await store.revoke_token(issued.id)
    clock = Clock()
    resolver = make(store, clock, max_negative=10, negative_ttl=5.0)
    for issued in tokens:
        assert is_denial(await resolver.resolve(issued.token), REVOKED_TOKEN)
    stats = resolver.stats()
    assert stats["negative_entries"] == 10 and stats["indexed_ids"] == 10
    assert stats["capacity_evictions"] == 20
    # The oldest went first: the last ten are the ones still cached.
    assert [resolver.lookup(i.token) is not None for i in tokens[-11:]] == [False] + [True] * 10
    clock.now += 5.0  # all of them ran out: the next write drops them, index and all
    assert is_denial(await resolver.resolve(new_secret()), INVALID_TOKEN)
    stats = resolver.stats()
    assert (stats["negative_entries"], stats["indexed_ids"]) == (1, 0)
    assert resolver.lookup(tokens[-1].token) is None
    await resolver.close()
