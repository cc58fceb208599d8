"""Limiters: the counters behind a token's ``limits``, in process or shared through Redis.

The guard asks a limiter only for tokens that have limits (one attribute check on the
compiled token otherwise), and only once it has allowed the request: refusals are never
charged. ``charge`` answers at once (the ``Usage`` of every rule, or a 429 ``Denial``) or,
when it needs Redis, with a coroutine factory the adapter awaits as an ``Awaiting`` step.

- ``MemoryLimiter`` (the default): counters in this process, fixed windows per token and
  rule, bounded (``max_counters``; when full, ended windows go first, then the oldest
  counters, which lets those tokens start their window afresh). Counts do not survive a
  restart and are not shared between processes: one machine, one worker.
- ``RedisLimiter(url, mode="consistent")``: every request is decided by one Lua script in
  Redis, atomically for all the rules it is charged against (check all, then count all).
- ``RedisLimiter(url, mode="local")``: each instance admits up to ``max(1, local_share ×
  limit)`` requests per rule from what it last learned from Redis, and reconciles (pushes
  what it admitted, reads the shared count) when that allowance is spent or
  ``sync_interval`` has passed. Overshoot per window is at most that allowance per
  instance: 4 instances and 100/s (allowance 1) admit at most 104 in a second.

Security choices, stated once:
- Redis down or slow: each call is bounded by ``timeout``; then, for ``retry_interval``,
  no call is tried (requests do not queue behind a dead server) and the limiter fails
  open (the default: limits are abuse control, the token's grants still apply) or, with
  ``fail_open=False``, refuses with 503 ``limiter_unavailable``. Never a 500; it recovers
  by itself on the first call after ``retry_interval`` that Redis answers.
- Quotas' counts live in Redis with an expiry past their window, so they survive app
  restarts; in process they do not.

Why a Lua script rather than the ``limits`` library: ``limits`` tests one rule per call
(``hit`` per item), so charging a rate and a quota together, and not spending either when
the other refuses, would take several round trips and could not be atomic; it has no
calendar-month windows either. The script is 25 lines and one round trip.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from time import time
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from token_guard.core import decision as codes
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.limits import (
    LimitRule,
    Usage,
    exceeded_message,
    ratelimit_headers,
    window,
)
from token_guard.core.records import TokenRecord

log = logging.getLogger("token_guard.limits")

Charge = tuple[Usage, ...] | Denial
"""A limiter's answer: the rules' usage after counting the request, or the 429."""
Pending = Callable[[], Awaitable[Charge]]
"""A limiter's answer that needs Redis: await it for the ``Charge``."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """Allowed by the token and its limits: hand the app ``record``, add ``headers``."""

    record: TokenRecord
    headers: list[tuple[bytes, bytes]]


class Limiter(Protocol):
    """What the guard needs from a limiter."""

    def charge(self, token_id: str, rules: tuple[LimitRule, ...], now: float
               ) -> Charge | Pending:
        """Count one allowed request against ``rules``, or refuse it (429)."""

    async def close(self) -> None:
        """Release connections."""


LIMITER_UNAVAILABLE = Denial(
    503,
    codes.LIMITER_UNAVAILABLE,
    "The rate limiter cannot answer now, and this guard refuses rather than count nothing.",
    "Retry in a few seconds; the operator can check the Redis server the guard uses.",
    ((b"retry-after", b"2"),),
)


def refusal(over: list[Usage], usages: tuple[Usage, ...], now: float) -> Denial:
    """The 429 for a request over ``over`` (a quota names itself before a rate)."""
    quotas = [u for u in over if u.rule.quota]
    if quotas:
        worst, code = max(quotas, key=lambda u: u.end), codes.QUOTA_EXCEEDED
    else:
        worst, code = max(over, key=lambda u: u.end), codes.RATE_LIMITED
    message, hint, wait = exceeded_message(worst, now)
    headers = (
        (b"retry-after", str(wait).encode("ascii")),
        *ratelimit_headers(usages, now),
    )
    return Denial(429, code, message, hint, headers)


_A_MONTH = LimitRule(1, "month", None, True)


@lru_cache(maxsize=8)
def _month(day: int) -> tuple[int, float, int]:
    return window(_A_MONTH, day * 86400.0)


_LENGTHS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def current_window(rule: LimitRule, now: float) -> tuple[int, float, int]:
    """``core.limits.window`` with the month's bounds remembered per day."""
    length = _LENGTHS.get(rule.per)
    if length is None:
        return _month(int(now // 86400))
    start = int(now // length) * length
    return start, float(start + length), length


class MemoryLimiter:
    """In-process fixed-window counters (the default); thread-safe (WSGI threads)."""

    def __init__(self, *, max_counters: int = 100_000) -> None:
        if not isinstance(max_counters, int) or max_counters <= 0:
            raise ConfigurationError("limiter max_counters: must be a positive number")
        self.max_counters = max_counters
        # (token id, rule name) -> [window start, count]
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._lock = threading.Lock()

    def charge(self, token_id: str, rules: tuple[LimitRule, ...], now: float) -> Charge:
        """Count one request against every rule, or none of them if one is full."""
        counts = self._counts
        with self._lock:
            states = []
            for rule in rules:
                start, end, length = current_window(rule, now)
                key = (token_id, rule.name)
                state = counts.get(key)
                if state is None or state[0] != start:
                    if state is None and len(counts) >= self.max_counters:
                        self._make_room(now)
                    state = counts[key] = [start, 0]
                states.append((rule, state, end, length))
            over = [Usage(r, s[1], e, n) for r, s, e, n in states if s[1] >= r.requests]
            if over:
                return refusal(over, tuple(Usage(r, s[1], e, n) for r, s, e, n in states), now)
            for _, state, _, _ in states:
                state[1] += 1
            return tuple(Usage(r, s[1], e, n) for r, s, e, n in states)

    def _make_room(self, now: float) -> None:
        counts = self._counts
        # A counter whose window started more than a day ago (the longest rate) is over,
        # unless it is a month's: those are kept until the oldest-first pass.
        stale = [k for k, (start, _) in counts.items() if start < now - 86400 * 32]
        for key in stale:
            del counts[key]
        if len(counts) >= self.max_counters:
            for key in list(counts)[: max(1, self.max_counters // 10)]:
                del counts[key]

    async def close(self) -> None:
        """Nothing to release."""


_SCRIPT = """
local n = #KEYS
local counts = {}
for i = 1, n do
  local p = tonumber(ARGV[i])
  local c
  if p > 0 then
    c = redis.call('INCRBY', KEYS[i], p)
    redis.call('EXPIREAT', KEYS[i], ARGV[2 * n + i])
  else
    c = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  counts[i] = c
end
for i = 1, n do
  if counts[i] >= tonumber(ARGV[n + i]) then
    table.insert(counts, 1, 0)
    return counts
  end
end
for i = 1, n do
  counts[i] = redis.call('INCR', KEYS[i])
  redis.call('EXPIREAT', KEYS[i], ARGV[2 * n + i])
end
table.insert(counts, 1, 1)
return counts
"""
# KEYS: one counter per rule. ARGV: n counts admitted locally to add first (local mode;
# 0 in consistent mode), n limits, n expiry instants. Returns {admitted 0|1, counts...}:
# the counts after this request when admitted, the counts that refused it otherwise.

Mode = Literal["consistent", "local"]
_OWN_PARAMS = ("mode", "timeout", "fail", "prefix", "local_share", "sync_interval")


@dataclass(slots=True)
class _Local:
    """Local mode: what this instance knows of one rule's shared counter."""

    start: int
    known: int = 0  # the shared count at the last reconciliation
    pending: int = 0  # admitted here since, not yet pushed
    synced_at: float = float("-inf")
    syncing: int = 0  # reconciliations in flight: while any is, nothing is admitted locally


class RedisLimiter:
    """Counters shared by every instance through Redis (``mode``: consistent or local).

    ``url`` is a redis URL; the options may also ride in its query string
    (``redis://host:6379/0?mode=local&timeout=0.05&fail=closed``).
    """

    def __init__(
        self,
        url: str,
        *,
        mode: Mode = "consistent",
        timeout: float = 0.05,
        fail_open: bool = True,
        prefix: str = "token_guard:limits:",
        local_share: float = 0.01,
        sync_interval: float = 0.005,
        retry_interval: float = 1.0,
        max_counters: int = 100_000,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"limiter: {parts.scheme!r} is not a Redis URL; write e.g. "
                "'redis://127.0.0.1:6379/0'"
            )
        query = dict(parse_qsl(parts.query))
        try:
            mode = query.pop("mode", mode)  # type: ignore[assignment]
            timeout = float(query.pop("timeout", timeout))
            fail_open = query.pop("fail", "open" if fail_open else "closed") == "open"
            prefix = query.pop("prefix", prefix)
            local_share = float(query.pop("local_share", local_share))
            sync_interval = float(query.pop("sync_interval", sync_interval))
        except ValueError as exc:
            raise ConfigurationError(f"limiter: {exc}; options are {_OWN_PARAMS}") from None
        if mode not in ("consistent", "local"):
            raise ConfigurationError(
                f"limiter mode: {mode!r}; choose 'consistent' (every request asks Redis) or "
                "'local' (each instance spends a local allowance)"
            )
        if not 0 < timeout <= 10:
            raise ConfigurationError("limiter timeout: give seconds, more than 0, e.g. 0.05")
        if not 0 <= local_share < 1:
            raise ConfigurationError("limiter local_share: a fraction from 0 to 1, e.g. 0.01")
        self.url = urlunsplit(parts._replace(query=urlencode(query)))
        self.mode: Mode = mode
        self.timeout = timeout
        self.fail_open = fail_open
        self.prefix = prefix
        self.local_share = local_share
        self.sync_interval = sync_interval
        self.retry_interval = retry_interval
        self.max_counters = max_counters
        self._down_until = 0.0
        self._client: tuple[asyncio.AbstractEventLoop, Any, Any] | None = None
        self._local: dict[tuple[str, str], _Local] = {}
        self._lock = threading.Lock()
        self.failures = 0
        #: Called with the seconds each Redis call took (``GuardMetrics.attach`` sets it).
        self.on_latency: Callable[[float], None] | None = None

    # -- the request path ----------------------------------------------------------------
    def charge(self, token_id: str, rules: tuple[LimitRule, ...], now: float
               ) -> Charge | Pending:
        """Answer from the local allowance (local mode), else a call to Redis to await."""
        if now < self._down_until:
            return self._unavailable()
        windows = [current_window(rule, now) for rule in rules]
        if self.mode == "consistent":
            pushed = [0] * len(rules)
            return lambda: self._remote(token_id, rules, windows, pushed, None)
        with self._lock:
            states = []
            for rule, (start, _, _) in zip(rules, windows, strict=True):
                key = (token_id, rule.name)
                state = self._local.get(key)
                if state is None or state.start != start:
                    if state is None and len(self._local) >= self.max_counters:
                        self._local.clear()  # each instance forgets; the counts stay in Redis
                    state = self._local[key] = _Local(start)
                states.append(state)
            fresh = all(
                not s.syncing and now - s.synced_at < self.sync_interval
                and s.pending < max(1, int(r.requests * self.local_share))
                for r, s in zip(rules, states, strict=True)
            )
            if fresh:
                usages = tuple(
                    Usage(r, s.known + s.pending, end, length)
                    for r, s, (_, end, length) in zip(rules, states, windows, strict=True)
                )
                over = [u for u in usages if u.count >= u.rule.requests]
                if over:
                    return refusal(over, usages, now)
                for s in states:
                    s.pending += 1
                return tuple(u.__class__(u.rule, u.count + 1, u.end, u.length) for u in usages)
            pushed = [s.pending for s in states]
            for s in states:
                s.pending = 0
                s.syncing += 1
        return lambda: self._remote(token_id, rules, windows, pushed, states)

    async def _remote(
        self,
        token_id: str,
        rules: tuple[LimitRule, ...],
        windows: list[tuple[int, float, int]],
        pushed: list[int],
        states: list[_Local] | None,
    ) -> Charge:
        keys = [f"{self.prefix}{{{token_id}}}:{r.name}:{w[0]}" for r, w in zip(
            rules, windows, strict=True)]
        args = [*pushed, *(r.requests for r in rules), *(int(w[1]) + 60 for w in windows)]
        started = time()
        try:
            script = self._script()
            async with asyncio.timeout(self.timeout):
                answer = await script(keys=keys, args=args)
        except Exception as exc:  # any failure of Redis: bounded, logged, never a 500
            if self.on_latency is not None:
                self.on_latency(time() - started)
            if states is not None:
                with self._lock:
                    for s, p in zip(states, pushed, strict=True):
                        s.pending += p
                        s.syncing -= 1
            return self._failed(exc)
        now = time()
        if self.on_latency is not None:
            self.on_latency(now - started)
        admitted, counts = int(answer[0]), [int(c) for c in answer[1:]]
        if states is not None:
            with self._lock:
                for s, c in zip(states, counts, strict=True):
                    s.known, s.synced_at = max(s.known, c), now
                    s.syncing -= 1
        usages = tuple(
            Usage(r, c, end, length)
            for r, c, (_, end, length) in zip(rules, counts, windows, strict=True)
        )
        if admitted:
            return usages
        return refusal([u for u in usages if u.count >= u.rule.requests], usages, now)

    def _failed(self, exc: BaseException) -> Charge:
        self.failures += 1
        self._down_until = time() + self.retry_interval
        log.warning(
            "rate limiter: Redis did not answer (%s: %s); failing %s for %.1f s",
            type(exc).__name__, exc, "open" if self.fail_open else "closed",
            self.retry_interval,
        )
        return self._unavailable()

    def _unavailable(self) -> Charge:
        return () if self.fail_open else LIMITER_UNAVAILABLE

    def _script(self) -> Any:
        loop = asyncio.get_running_loop()
        held = self._client
        if held is None or held[0] is not loop:
            # A client's connections belong to one event loop (a forked WSGI child or a new
            # test loop gets its own).
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                retry_on_timeout=False,
            )
            held = self._client = (loop, client, client.register_script(_SCRIPT))
        return held[2]

    async def close(self) -> None:
        """Close the connection pool of the running loop's client."""
        held, self._client = self._client, None
        if held is not None and held[0] is asyncio.get_running_loop():
            await held[1].aclose()


def make_limiter(value: str | Limiter | None) -> Limiter:
    """The ``limiter`` option: None (in process), a redis URL, or a limiter instance."""
    if value is None or value == "memory":
        return MemoryLimiter()
    if isinstance(value, str):
        return RedisLimiter(value)
    if not callable(getattr(value, "charge", None)):
        raise ConfigurationError(
            "limiter: give None (in-process counters), a Redis URL such as "
            "'redis://127.0.0.1:6379/0', or a limiter object with charge() and close()"
        )
    return value
