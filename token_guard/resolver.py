"""The resolver: the cache in front of the token store, with one lookup in flight per token.

Security and availability choices, stated once:

* A token that fails ``secret.is_well_formed`` (prefix, length, alphabet, checksum) is
  refused with ``malformed_token`` before any cache or store work, and is never cached:
  rechecking costs a CRC32, and caching garbage would let anyone fill memory with it.
* Unknown and revoked tokens are cached negatively for ``negative_ttl`` seconds, at most
  ``max_negative`` of them (beyond that the oldest goes first: with one lifetime for all,
  it is also the one nearest its expiry).
* A known token is cached for ``ttl`` seconds (less when it expires sooner). Each entry of
  the positive cache (``_Positives``, at most ``max_entries``, the oldest written dropped
  first) carries its own "fresh until" and "usable while failing until" times, and is kept
  until the latter (``ttl + stale_window`` at most). So one bounded structure holds both:
  an entry past its freshness is refreshed from the store, and is served (counted as
  ``stale_served``) only when the store fails or is too slow.
* A change event for a token id evicts that token's entries at once. ``reset`` (changes
  may have been missed) drops every refusal and marks every known token stale: each is
  re-read from the store on its next request, and served meanwhile only while the store
  cannot answer (its stale window), so a reset after an outage neither lets a token
  revoked during it through nor turns known tokens into 503s. A lookup that raced with
  any change event answers its request but is not cached, so a revocation can never be
  undone by a read that started before it.
* Circuit breaker: after a store failure the request path stops asking the store. Until a
  background probe (every ``probe_interval`` seconds, the store's ``ping()`` if it has
  one, else a lookup of a hash no secret has) succeeds, a known token is answered at once
  from its stale window and any other token gets 503 at once, instead of each request
  waiting ``lookup_timeout`` for a store known to be down.
* The store is never asked twice at once for the same token: the first miss starts one
  task, every other caller awaits it (shielded, so a cancelled caller does not cancel it).
  A store whose lookup only reads memory (``MemoryStore``: see
  ``stores.base.answers_from_memory``) is asked within the first caller's own step
  instead: its answer is there before any other caller can run, so it needs no task, no
  timeout and no trip through the event loop (were it to wait after all, it would go on
  in a task as above).
* Expiry is the policy's job (it checks ``expiration_date`` on every decision); the
  resolver only avoids keeping an entry fresh past that date.
* Secret rotation: a secret a rotation replaced works until its ``expires_at`` (the end of
  its grace period). Nothing checks that per request, so the resolver never keeps the
  entry past it, stale window included: at that instant the entry is gone, the next
  request reads the store, and the secret is refused with ``token_rotated`` on every
  instance, whether or not any change event arrived. Ending a grace period early, like
  disabling and enabling, is a change event (``updated``): evicted within the revocation
  bound. A disabled token is refused with ``token_disabled`` and cached negatively.

Threads: ``resolve``, ``start`` and ``close`` belong to one event loop. ``lookup``,
``note_used`` and ``stats`` may also be called from other threads (the WSGI adapter decides
cache hits in its request threads). Every write to the caches holds one ``threading.Lock``
for a few dictionary operations and never across an ``await``: the caches' bookkeeping
racing between threads could corrupt them. The hit path takes no lock: it reads the
positive entries' dict (``_hot``), one ``get``, atomic under the GIL; a hit
reads an entry that a concurrent eviction may remove a moment later, which is the same as
the request having arrived a moment earlier. Refusals are read the same way
(one ``dict.get``). The ``misses`` and ``store_lookups`` counters, which only the
loop's thread writes, are counted without the lock; the others under it.

Usage: ``note_used`` hands the token id to a ``usage.UsageRecorder``, which writes
``last_used_at`` in batches every ``usage_flush_interval`` seconds (10 by default).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar

from token_guard.core.decision import (
    INVALID_TOKEN,
    MALFORMED_TOKEN,
    REVOKED_TOKEN,
    STORE_UNAVAILABLE,
    TOKEN_DISABLED,
    TOKEN_ROTATED,
    Denial,
)
from token_guard.core.errors import ConfigurationError, StoreError
from token_guard.core.records import ChangeEvent, TokenRecord
from token_guard.core.secret import TOKEN_PREFIX, hash_secret, is_well_formed
from token_guard.core.spec import format_datetime
from token_guard.stores.base import TokenReader
from token_guard.usage import UsageRecorder

logger = logging.getLogger("token_guard.resolver")

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E")  # an entry of _Expiring
# What the breaker's probe looks up on a store without ``ping()``: no secret hashes to it.
_PROBE_HASH = "0" * 64
# Change events remembered by token id (see Resolver._recent): a lookup overlapping more
# events than this is not cached, as before.
_RECENT_EVENTS = 1024

MALFORMED = Denial(
    401,
    MALFORMED_TOKEN,
    "the access token is malformed",
    f"send the whole token exactly as issued (it starts with '{TOKEN_PREFIX}')",
)
UNKNOWN = Denial(
    401,
    INVALID_TOKEN,
    "the access token is not valid",
    "check that the token was copied completely, or create a new token",
)
REVOKED = Denial(
    401, REVOKED_TOKEN, "the access token was revoked", "create a new token and use that one"
)
DISABLED = Denial(
    401,
    TOKEN_DISABLED,
    "the access token is disabled",
    "ask the token's owner to enable it again (Developers page or 'token-guard tokens enable')",
)


def rotated(record: TokenRecord) -> Denial:
    """The refusal of a secret a rotation replaced, once its grace period is over."""
    secret = record.secret
    when = None if secret is None else format_datetime(secret.rotated_at or secret.expires_at)
    return Denial(
        401,
        TOKEN_ROTATED,
        "the access token's secret was replaced by a rotation and no longer works",
        f"this secret was replaced by a rotation on {when or 'an earlier date'}; use the new "
        "secret of the same token",
    )


UNAVAILABLE = Denial(
    503,
    STORE_UNAVAILABLE,
    "the token store is unavailable, so the access token cannot be checked",
    "retry in a few seconds",
)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How long and how many resolved tokens are kept, and how long the store may take.

    ``ttl``: seconds a known token is served from cache. ``negative_ttl``: seconds an
    unknown or revoked token is. ``max_entries`` / ``max_negative``: the bounds of both
    caches. ``stale_window``: seconds past ``ttl`` a cached token may still be served
    while the store fails (0 disables that). ``lookup_timeout``: seconds a store lookup
    may take before the request gets 503. ``usage_flush_interval``: seconds between
    batched ``last_used_at`` and request-count writes. ``usage_retention_days``: how long
    request counts per hour are kept. ``probe_interval``: seconds between the checks that
    close the circuit breaker after a store failure (see the module docstring).
    """

    ttl: float = 60.0
    negative_ttl: float = 5.0
    max_entries: int = 100_000
    max_negative: int = 10_000
    stale_window: float = 300.0
    lookup_timeout: float = 2.0
    usage_flush_interval: float = 10.0
    usage_retention_days: float = 90.0
    probe_interval: float = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(
                    f"CacheSettings.{f.name} must be a number, got {value!r}"
                )
            if f.name in ("max_entries", "max_negative") and not isinstance(value, int):
                raise ConfigurationError(
                    f"CacheSettings.{f.name} must be a whole number of entries, got {value!r}"
                )
            minimum_ok = value >= 0 if f.name == "stale_window" else value > 0
            if not math.isfinite(value) or not minimum_ok:
                allowed = "zero or more" if f.name == "stale_window" else "more than zero"
                raise ConfigurationError(
                    f"CacheSettings.{f.name} must be finite and {allowed}, got {value!r}"
                )


DEFAULT_CACHE_SETTINGS = CacheSettings()


@dataclass(frozen=True, slots=True)
class _Positive(Generic[T]):
    value: T
    token_id: str
    fresh_until: float
    stale_until: float


class _Negative(NamedTuple):
    denial: Denial
    token_id: str | None
    expires: float  # the resolver's clock


class _Expiring(Generic[E]):
    """token -> entry, at most ``maxsize``, each kept until its own expiry (given with it),
    in the order they were written: the shared mechanism of both caches.

    A write first drops, from the front (the oldest), the entries that have expired (one
    behind a longer-lived entry waits for it, unusable meanwhile: every read checks its
    times), then, when full, the oldest; ``on_drop`` hears of each. ``entries`` is a plain
    dict read without a lock (one ``get``, atomic under the GIL; a ``get`` on an
    ``OrderedDict`` costs ~330 instructions more under callgrind); the order is an
    ``OrderedDict`` of the same keys to their expiry times. Writes are made under the
    resolver's lock.

    A plain structure rather than a ``TTLCache``: that kept each key in four structures (its
    data and size dicts, its own ``OrderedDict`` of links, a link object with an expiry
    float), and the resolver mirrored positive entries in a fifth for lock-free hits; these
    two keep it in two (~150 B a cached token less at the traffic benchmark's peak). With
    hits read from the mirror, the ``TTLCache``'s LRU order was the order of writes anyway.
    A flood of made-up tokens writes one refusal a request, and the ``TTLCache`` read and
    write cost about 30 k instructions.
    """

    __slots__ = ("_clock", "_maxsize", "_on_drop", "_order", "_soonest", "dropped_for_space",
                 "entries")

    def __init__(
        self, maxsize: int, clock: Callable[[], float], on_drop: Callable[[str, Any], None]
    ) -> None:
        self.entries: dict[str, E] = {}
        self._order: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._maxsize = maxsize
        self._clock = clock
        self._on_drop = on_drop
        self._soonest = math.inf  # no entry at the front expires before this
        self.dropped_for_space = 0

    def holds(self, token: str) -> bool:
        """Whether ``token`` has an entry, expired or not."""
        return token in self.entries

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self.entries)

    def _write(self, token: str, entry: E, expires: float, now: float) -> None:
        """Remember ``entry`` for ``token`` until ``expires``, newest."""
        if now >= self._soonest:
            self._expire(now)
        entries, order = self.entries, self._order
        if token in entries:  # a rewritten entry goes last
            order.move_to_end(token)
        else:
            while len(entries) >= self._maxsize:
                key, _ = order.popitem(last=False)
                value = entries.pop(key)
                self.dropped_for_space += 1
                self._on_drop(key, value)
        order[token] = expires
        entries[token] = entry
        if expires < self._soonest:
            self._soonest = expires

    def _forget(self, token: str) -> E | None:
        """Forget ``token``'s entry (``on_drop`` is not told); it, if there was one."""
        entry = self.entries.pop(token, None)
        if entry is not None:
            del self._order[token]
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self._order.clear()
        self._soonest = math.inf

    def _expire(self, now: float) -> None:
        entries, order = self.entries, self._order
        while order:
            token, expires = next(iter(order.items()))
            if now < expires:
                self._soonest = expires
                return
            del order[token]
            self._on_drop(token, entries.pop(token))
        self._soonest = math.inf


class _Positives(_Expiring[_Positive[Any]]):
    """The positive cache: token -> ``_Positive``, at most ``maxsize``, each kept until its
    own ``stale_until`` (never more than ``ttl + stale_window`` after it was written)."""

    __slots__ = ()

    def __init__(
        self, maxsize: int, clock: Callable[[], float], on_drop: Callable[[str, Any], None]
    ) -> None:
        super().__init__(maxsize, clock, on_drop)

    def get(self, token: str) -> _Positive[Any] | None:
        """``token``'s entry, however old (the caller checks its times), or None."""
        return self.entries.get(token)

    def items(self) -> list[tuple[str, _Positive[Any]]]:
        """The entries whose stale window has not ended, oldest first."""
        self._expire(self._clock())
        entries = self.entries
        return [(token, entries[token]) for token in self._order]

    def put(self, token: str, entry: _Positive[Any]) -> None:
        """Remember ``entry`` for ``token``, newest."""
        self._write(token, entry, entry.stale_until, self._clock())

    def replace(self, token: str, entry: _Positive[Any]) -> None:
        """Rewrite ``token``'s entry where it stands (its place and expiry kept: the same
        ``stale_until``)."""
        self.entries[token] = entry

    def pop(self, token: str) -> _Positive[Any] | None:
        """Forget ``token``'s entry (``on_drop`` is not told); it, if there was one."""
        return self._forget(token)


class _Refusals(_Expiring[_Negative]):
    """The negative cache: token -> ``_Negative`` for ``ttl`` seconds, at most ``maxsize``.

    Every entry lives as long, so the order of writing is the order of expiry, and the
    oldest dropped when full is also the one nearest its expiry."""

    __slots__ = ("_ttl",)

    def __init__(
        self, maxsize: int, ttl: float, clock: Callable[[], float],
        on_drop: Callable[[str, Any], None],
    ) -> None:
        super().__init__(maxsize, clock, on_drop)
        self._ttl = ttl

    def get(self, token: str) -> _Negative | None:
        """The unexpired refusal of ``token``, or None."""
        entry = self.entries.get(token)
        if entry is not None and self._clock() < entry.expires:
            return entry
        return None

    def __contains__(self, token: str) -> bool:
        return self.get(token) is not None

    def put(self, token: str, denial: Denial, token_id: str | None) -> None:
        """Remember the refusal of ``token`` for ``ttl`` seconds from now."""
        now = self._clock()
        expires = now + self._ttl
        self._write(token, _Negative(denial, token_id, expires), expires, now)

    def pop(self, token: str) -> _Negative | None:
        """Forget ``token``'s refusal (``on_drop`` is not told); it, if unexpired."""
        entry = self._forget(token)
        return entry if entry is not None and self._clock() < entry.expires else None


def _indexed(keys: str | list[str] | None) -> tuple[str, ...] | list[str]:
    """The token strings of one ``Resolver._by_id`` value (a string is one of them, not its
    characters)."""
    if keys is None:
        return ()
    return (keys,) if isinstance(keys, str) else keys


@types.coroutine
def _resume(lookup: Coroutine[Any, Any, R], waiting: Any) -> Generator[Any, Any, R]:
    """Go on running ``lookup``, whose first step yielded ``waiting``, in the awaiting task:
    what the task would have done from its second step on (a send after each wake-up, a
    throw for each exception thrown in, such as the timeout's cancellation)."""
    while True:
        try:
            yield waiting
        except BaseException as exc:
            try:
                waiting = lookup.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waiting = lookup.send(None)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class Resolver(Generic[T]):
    """Turns a token string into the compiled token ``T`` or a ``Denial``, via the cache."""

    def __init__(
        self,
        store: TokenReader,
        compile: Callable[[TokenRecord], T],
        *,
        settings: CacheSettings = DEFAULT_CACHE_SETTINGS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # While ``store.feed_healthy`` is False (PostgreSQL's LISTEN connection is down) a
        # revocation elsewhere may go unheard, so cached tokens are re-read from the store
        # (stale ones are served only if the store itself fails, within stale_window).
        self._store = store
        self._compile = compile
        self._settings = settings
        self._clock = clock
        self._positive = _Positives(settings.max_entries, clock, self._dropped)
        self._negative = _Refusals(
            settings.max_negative, settings.negative_ttl, clock, self._dropped
        )
        # token id -> its cached token string, or a list of them when there are more (a
        # rotated token's old and new secrets): nearly always one, and a list costs ~110
        # bytes a token (a set 216). Read through _indexed.
        self._by_id: dict[str, str | list[str]] = {}
        # The positive entries themselves, read by hits without the lock (see _Positives).
        self._hot: dict[str, _Positive[T]] = self._positive.entries
        self._hits = 0
        self._lock = threading.Lock()  # see the module docstring: held for dict work only
        self._inflight: dict[str, asyncio.Task[T | Denial]] = {}
        self._epoch = 0  # bumped by every change event; see _fetch
        # The token ids of the latest change events (None: a reset or an event naming no
        # token), newest last, so a lookup that overlapped events about OTHER tokens (e.g.
        # creations elsewhere) may still cache its answer; bounded, older means "unknown".
        self._recent: collections.deque[str | None] = collections.deque(maxlen=_RECENT_EVENTS)
        self._usage = UsageRecorder(
            store, interval=settings.usage_flush_interval,
            retention=timedelta(days=settings.usage_retention_days),
        )
        # ``note_used(token_id, api)``: count a use (batched; safe from any thread). Bound, not
        # a method that forwards: the adapters call it on every allowed request.
        self.note_used = self._usage.note_used
        self.note_refused = self._usage.note_refused
        self.usage = self._usage
        self._unsubscribe: Callable[[], None] | None = None
        # The circuit breaker: the probe task runs while the store is known to be down.
        self._probe: asyncio.Task[None] | None = None
        ping = getattr(store, "ping", None)
        self._ping: Callable[[], Awaitable[object]] = (
            ping if callable(ping) else partial(store.get_by_secret_hash, _PROBE_HASH)
        )
        # See the module docstring: asked within the caller's step (stores.base).
        self._inline = getattr(store.get_by_secret_hash, "answers_from_memory", False) is True
        self._counts = dict.fromkeys(
            ("hits", "misses", "store_lookups", "negative_hits", "stale_served", "evictions",
             "malformed", "store_errors", "compile_errors", "breaker_trips", "fast_failures"),
            0,
        )

    @property
    def settings(self) -> CacheSettings:
        """The cache settings in force."""
        return self._settings

    # -- the request path ---------------------------------------------------------------
    def lookup(self, token: str) -> T | Denial | None:
        """Sync fast path: a fresh cached answer (compiled token or the cached Denial for
        unknown/revoked/malformed), or None when the caller must await ``resolve()``."""
        entry = self._hot.get(token)
        if entry is not None:
            if self._clock() < entry.fresh_until and self._store.feed_healthy:
                self._hits += 1
                return entry.value
            return None
        negative = self._negative.get(token)
        if negative is not None:
            with self._lock:
                self._counts["negative_hits"] += 1
            return negative.denial
        if not is_well_formed(token):
            self._counts["malformed"] += 1
            return MALFORMED
        return None

    async def resolve(self, token: str) -> T | Denial:
        """Cache, then exactly one store lookup in flight per token (asyncio futures, not
        locks), bounded by ``lookup_timeout``."""
        cached = self.lookup(token)
        if cached is not None:
            return cached
        answer = self._miss(token)
        if isinstance(answer, asyncio.Task):
            # Shielded: one caller giving up (client gone) must not cancel the others' lookup.
            return await asyncio.shield(answer)
        return answer

    async def resolve_missed(self, token: str) -> T | Denial:
        """``resolve`` for a token ``lookup`` has just answered None for (the guard's
        ``Awaiting`` step): the caches are read again (the WSGI adapter runs this a moment
        later, on the loop's thread), the token's form, already checked, is not."""
        entry = self._hot.get(token)
        if entry is not None:
            if self._clock() < entry.fresh_until and self._store.feed_healthy:
                self._hits += 1
                return entry.value
        else:
            negative = self._negative.get(token)
            if negative is not None:
                with self._lock:
                    self._counts["negative_hits"] += 1
                return negative.denial
        answer = self._miss(token)
        if isinstance(answer, asyncio.Task):
            return await asyncio.shield(answer)  # shielded: see resolve
        return answer

    def _miss(self, token: str) -> T | Denial | asyncio.Task[T | Denial]:
        """Not cached: the answer, if there is one at once, or the task that will have it."""
        if self._unsubscribe is None:
            self._start()
        counts = self._counts  # this thread's alone: see the module docstring
        counts["misses"] += 1
        if self._probe is not None:
            # Known to be down: answer now from what is cached, without asking the store.
            return self._fallback(token, None)
        task = self._inflight.get(token)
        if task is not None:
            return task
        counts["store_lookups"] += 1
        epoch = self._epoch  # bumped by every change event; see _answer
        if not self._inline:
            task = asyncio.get_running_loop().create_task(self._fetch(token, epoch))
        else:
            lookup = self._store.get_by_secret_hash(hash_secret(token))
            try:
                waiting = lookup.send(None)
            except StopIteration as done:
                return self._answer(token, done.value, epoch)
            except Exception as exc:
                return self._failed(token, exc)
            task = asyncio.get_running_loop().create_task(
                self._fetch(token, epoch, _resume(lookup, waiting))
            )
        self._inflight[token] = task
        return task

    async def _fetch(
        self, token: str, epoch: int, lookup: Awaitable[TokenRecord | None] | None = None
    ) -> T | Denial:
        try:
            # asyncio.timeout rather than wait_for: no extra task per lookup.
            async with asyncio.timeout(self._settings.lookup_timeout):
                if lookup is None:
                    lookup = self._store.get_by_secret_hash(hash_secret(token))
                record = await lookup
        except Exception as exc:
            return self._failed(token, exc)
        finally:
            # A change event may have replaced this task with a newer one; leave that be.
            if self._inflight.get(token) is asyncio.current_task():
                del self._inflight[token]
        return self._answer(token, record, epoch)

    def _failed(self, token: str, exc: Exception) -> T | Denial:
        """The lookup raised ``exc``: the store cannot answer (fail closed), trip the breaker."""
        if not isinstance(exc, StoreError | TimeoutError):
            logger.error("token store lookup failed unexpectedly", exc_info=exc)
        self._trip(exc)
        return self._fallback(token, exc)

    def _answer(self, token: str, record: TokenRecord | None, epoch: int) -> T | Denial:
        """The store's answer for ``token`` (asked at ``epoch``): cached, and compiled."""
        if record is None:
            self._put_negative(token, UNKNOWN, None, epoch)
            return UNKNOWN
        if record.revoked_at is not None:
            self._put_negative(token, REVOKED, record.id, epoch)
            return REVOKED
        if record.disabled_at is not None:
            self._put_negative(token, DISABLED, record.id, epoch)
            return DISABLED
        if record.secret_expired(datetime.now(UTC)):
            denial = rotated(record)
            self._put_negative(token, denial, record.id, epoch)
            return denial
        try:
            value = self._compile(record)
        except Exception:
            logger.exception(
                "token %s could not be compiled (bad stored data?); refusing it", record.id
            )
            with self._lock:
                self._counts["compile_errors"] += 1
            self._put_negative(token, UNKNOWN, record.id, epoch)
            return UNKNOWN
        self._put_positive(token, record, value, epoch)
        return value

    def _fallback(self, token: str, exc: BaseException | None) -> T | Denial:
        """The store failed (``exc``) or is known to be down (None): stale, or 503."""
        with self._lock:
            self._counts["store_errors" if exc is not None else "fast_failures"] += 1
            entry: _Positive[T] | None = self._positive.get(token)
            if entry is not None and self._clock() < entry.stale_until:
                self._counts["stale_served"] += 1
                return entry.value
        return UNAVAILABLE

    # -- the circuit breaker ------------------------------------------------------------
    @property
    def store_down(self) -> bool:
        """True while the breaker is open: the store failed and no probe has answered yet."""
        return self._probe is not None

    def _trip(self, exc: BaseException) -> None:
        if self._probe is not None:
            return
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        logger.warning(
            "token store cannot answer (%s); serving cached tokens and answering 503 for "
            "others until it answers again (probing every %g s)",
            reason, self._settings.probe_interval,
        )
        with self._lock:
            self._counts["breaker_trips"] += 1
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        settings = self._settings
        try:
            while True:
                await asyncio.sleep(settings.probe_interval)
                try:
                    async with asyncio.timeout(settings.lookup_timeout):
                        await self._ping()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.debug("token store probe failed: %s", exc)
                    continue
                logger.warning("token store answers again; asking it on the request path")
                return
        finally:
            if self._probe is asyncio.current_task():
                self._probe = None

    def _put_positive(self, token: str, record: TokenRecord, value: T, epoch: int) -> None:
        settings = self._settings
        fresh_for = settings.ttl
        expiry = record.expiration_date
        if expiry is not None:
            left = (expiry - datetime.now(UTC)).total_seconds()
            # Expired tokens are kept briefly so the policy can say "expired" without a
            # store lookup per request; live ones are not kept fresh past their expiry.
            fresh_for = settings.negative_ttl if left <= 0 else min(fresh_for, left)
        stale_for = fresh_for + settings.stale_window
        secret = record.secret
        if secret is not None and secret.expires_at is not None:
            # A replaced secret in its grace period: never served, stale or not, past its end.
            secret_left = (secret.expires_at - datetime.now(UTC)).total_seconds()
            fresh_for = min(fresh_for, secret_left)
            stale_for = min(stale_for, secret_left)
        with self._lock:
            if epoch != self._epoch and not self._only_others_changed(epoch, record.id):
                return  # a change to this token arrived during the lookup: it may be old
            now = self._clock()
            self._negative.pop(token)
            entry = _Positive(value, record.id, now + fresh_for, now + stale_for)
            self._positive.put(token, entry)
            self._index(record.id, token)

    def _only_others_changed(self, epoch: int, token_id: str) -> bool:
        """Whether every change event since ``epoch`` named a token other than ``token_id``
        (a reset, an event naming no token, or events older than those kept: False)."""
        since = self._epoch - epoch
        if since > len(self._recent):
            return False
        for index in range(len(self._recent) - since, len(self._recent)):
            changed = self._recent[index]
            if changed is None or changed == token_id:
                return False
        return True

    def _put_negative(
        self, token: str, denial: Denial, token_id: str | None, epoch: int
    ) -> None:
        with self._lock:
            if epoch != self._epoch:
                return
            self._positive.pop(token)
            self._negative.put(token, denial, token_id)
            if token_id is not None:
                self._index(token_id, token)

    def _index(self, token_id: str, token: str) -> None:
        by_id = self._by_id
        keys = by_id.get(token_id)
        if keys is None:
            by_id[token_id] = token
        elif isinstance(keys, str):
            if keys != token:
                by_id[token_id] = [keys, token]
        elif token not in keys:
            keys.append(token)

    def _dropped(self, token: str, value: Any) -> None:
        token_id = value.token_id
        if token_id is None:
            return
        keys = self._by_id.get(token_id)
        if keys is None or self._positive.holds(token) or token in self._negative:
            return
        if isinstance(keys, str):
            if keys == token:
                del self._by_id[token_id]
            return
        if token in keys:
            keys.remove(token)
        if not keys:
            del self._by_id[token_id]

    # -- change feed ------------------------------------------------------------------------
    def _on_change(self, event: ChangeEvent) -> None:
        # Callers arriving from now on must not join a lookup that started before the
        # change; the running lookups still answer the callers already waiting on them.
        self._inflight.clear()
        with self._lock:
            self._evict(event)

    def _evict(self, event: ChangeEvent) -> None:
        self._epoch += 1
        self._recent.append(None if event.kind == "reset" else event.token_id)
        if event.kind == "reset":
            # Refusals are dropped; known tokens stay as stale entries, re-read on their next
            # request and served meanwhile only while the store cannot answer.
            self._counts["evictions"] += len(self._negative)
            self._negative.clear()
            self._by_id.clear()
            for token, entry in self._positive.items():
                self._positive.replace(token, _Positive(
                    entry.value, entry.token_id, -math.inf, entry.stale_until
                ))
                self._index(entry.token_id, token)
            return
        if event.token_id is None:
            return
        for token in _indexed(self._by_id.pop(event.token_id, None)):
            if self._positive.pop(token) is not None:
                self._counts["evictions"] += 1
            if self._negative.pop(token) is not None:
                self._counts["evictions"] += 1

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to store changes and start the usage flusher (idempotent)."""
        self._start()

    def _start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self._store.subscribe(self._on_change)
        self._usage.start()

    async def close(self) -> None:
        """Flush usage, unsubscribe and cancel the flusher and the store probe."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
        await self._usage.close()
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        # No change event reaches a closed resolver, so no token it remembers can be
        # trusted any more (refusals it remembers stay refusals).
        with self._lock:
            self._positive.clear()
            self._by_id.clear()

    async def flush_usage(self) -> None:
        """Write the uses noted since the last flush in one ``record_usage`` call now."""
        await self._usage.flush()

    def stats(self) -> dict[str, int]:
        """Counters and sizes: hits, misses, store_lookups, negative_hits, stale_served,
        evictions, and the current sizes of each structure."""
        with self._lock:
            out = dict(self._counts)
            out["hits"] += self._hits
            out["capacity_evictions"] = (
                self._positive.dropped_for_space + self._negative.dropped_for_space
            )
            out["positive_entries"] = len(self._positive)
            out["negative_entries"] = len(self._negative)
            out["indexed_ids"] = len(self._by_id)
            out["inflight"] = len(self._inflight)
        out["usage_flush_errors"] = self._usage.flush_errors
        out["pending_usage"] = self._usage.pending
        return out
