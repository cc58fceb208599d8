"""Prometheus metrics for a guard (the ``metrics`` extra: ``prometheus_client``).

::

    metrics = GuardMetrics()                       # its own registry unless given one
    app = TokenGuard(inner, store=metrics.timed_store(store), connections=...,
                     on_decision=metrics.on_decision)
    metrics.attach(app)                            # cache, change feed, Redis latency
    # serve metrics.asgi_app() (or metrics.wsgi_app()) at /metrics

What is exposed (prefix ``token_guard_``):

- ``decisions_total{api, code}`` — every guarded request; ``code`` is ``allowed`` or the
  refusal's stable code (``rate_limited`` and ``quota_exceeded`` included);
  ``limit_rejections_total{code}`` the 429s alone.
- ``cache_hits_total``, ``cache_misses_total``, ``cache_entries``, read from the resolver
  at scrape time (nothing counted per request for them).
- ``store_lookup_seconds`` — a histogram of the store lookups behind cache misses
  (``timed_store``); ``limiter_redis_seconds`` of the Redis limiter's calls.
- ``change_feed_healthy`` — 1 while the store hears every change made elsewhere, else 0.
- ``report_only`` — 1 while an attached guard runs in report-only mode (refusals recorded,
  NOT enforced), else 0; ``would_refuse_total{code}`` its would-be refusals, so a dashboard
  shows at once that nothing is enforced.
- ``add_gauge(name, documentation, read)`` registers any other gauge read at scrape time.

Counting decisions uses ``on_decision``, which the guard calls for every request: the cost
is paid only by apps that ask for metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from token_guard.core.decision import QUOTA_EXCEEDED, RATE_LIMITED
from token_guard.core.records import TokenRecord, UsageRow
from token_guard.guard import DecisionEvent, Guard
from token_guard.stores.base import ChangeListener

__all__ = ["GuardMetrics", "TimedStore"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _ScrapeTime(Collector):
    """Metrics read when Prometheus scrapes, from the guards attached so far."""

    def __init__(self) -> None:
        self.guards: list[Guard] = []
        self.gauges: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterable[Metric]:
        hits = CounterMetricFamily("token_guard_cache_hits", "Token cache hits.")
        misses = CounterMetricFamily("token_guard_cache_misses", "Token cache misses.")
        entries = GaugeMetricFamily("token_guard_cache_entries", "Cached tokens.")
        feed = GaugeMetricFamily(
            "token_guard_change_feed_healthy",
            "1 while the store hears every change made elsewhere (revocations), else 0.",
        )
        report_only = GaugeMetricFamily(
            "token_guard_report_only",
            "1 while an attached guard only reports refusals (nothing enforced), else 0.",
        )
        would_refuse = CounterMetricFamily(
            "token_guard_would_refuse", "Refusals a report-only guard let through, by code.",
            labels=["code"],
        )
        modes = [g.report_only for g in self.guards if g.report_only is not None]
        report_only.add_metric([], float(bool(modes)))
        codes: dict[str, int] = {}
        for mode in modes:
            counted = mode.stats()["would_refuse"]
            assert isinstance(counted, dict)
            for code, n in counted.items():
                codes[code] = codes.get(code, 0) + n
        for code, n in sorted(codes.items()):
            would_refuse.add_metric([code], n)
        yield from (report_only, would_refuse)
        if self.guards:
            stats = [g.resolver.stats() for g in self.guards]
            hits.add_metric([], sum(s["hits"] for s in stats))
            misses.add_metric([], sum(s["misses"] for s in stats))
            entries.add_metric([], sum(s["positive_entries"] for s in stats))
            feed.add_metric([], float(all(g.store.feed_healthy for g in self.guards)))
        yield from (hits, misses, entries, feed)
        for name, documentation, read in self.gauges:
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], float(read()))
            yield gauge


class GuardMetrics:
    """The guard's Prometheus metrics in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "token_guard_decisions", "Guarded requests by API and outcome code.",
            ["api", "code"], registry=self.registry,
        )
        self.limit_rejections = Counter(
            "token_guard_limit_rejections", "Requests refused by a token's limits (429).",
            ["code"], registry=self.registry,
        )
        self.store_latency = Histogram(
            "token_guard_store_lookup_seconds", "Store lookups behind cache misses.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.redis_latency = Histogram(
            "token_guard_limiter_redis_seconds", "Calls of the Redis limiter.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._scrape = _ScrapeTime()
        self.registry.register(self._scrape)

    def on_decision(self, event: DecisionEvent) -> None:
        """Count one decision (pass as ``on_decision``)."""
        api = event.facts.api if event.facts is not None else ""
        if event.denial is None:
            self.decisions.labels(api, "allowed").inc()
            return
        code = event.denial.code
        self.decisions.labels(api, code).inc()
        if code in (RATE_LIMITED, QUOTA_EXCEEDED):
            self.limit_rejections.labels(code).inc()

    def attach(self, app: Any) -> None:
        """Read the cache and feed of ``app`` (a TokenGuard, TokenGuardWSGI or Guard) at
        scrape time, and time its Redis limiter's calls."""
        guard = app if isinstance(app, Guard) else getattr(app, "guard", None)
        if not isinstance(guard, Guard):
            raise TypeError(f"attach: {type(app).__name__} is not a TokenGuard or Guard")
        self._scrape.guards.append(guard)
        if hasattr(guard.limiter, "on_latency"):
            guard.limiter.on_latency = self.redis_latency.observe

    def add_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """Expose ``read()`` as the gauge ``name``, read at every scrape."""
        self._scrape.gauges.append((name, documentation, read))

    def timed_store(self, store: Any) -> TimedStore:
        """``store`` with its lookups timed into ``store_lookup_seconds``."""
        return TimedStore(store, self.store_latency.observe)

    def asgi_app(self) -> Any:
        """An ASGI app answering the exposition (mount it at ``/metrics``)."""
        return make_asgi_app(self.registry)

    def wsgi_app(self) -> Any:
        """A WSGI app answering the exposition."""
        return make_wsgi_app(self.registry)


class TimedStore:
    """A ``TokenReader`` that times ``get_by_secret_hash`` and forwards everything else."""

    def __init__(self, store: Any, observe: Callable[[float], None]) -> None:
        self._store = store
        self._observe = observe

    @property
    def feed_healthy(self) -> bool:
        """The wrapped store's feed health."""
        return bool(self._store.feed_healthy)

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The wrapped lookup, timed."""
        started = time.perf_counter()
        try:
            record: TokenRecord | None = await self._store.get_by_secret_hash(secret_hash)
            return record
        finally:
            self._observe(time.perf_counter() - started)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """The wrapped store's feed."""
        unsubscribe: Callable[[], None] = self._store.subscribe(listener)
        return unsubscribe

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Forwarded."""
        await self._store.record_usage(last_used)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Forwarded."""
        await self._store.add_usage(rows)

    async def prune_usage(self, before: datetime) -> int:
        """Forwarded."""
        pruned: int = await self._store.prune_usage(before)
        return pruned

    async def close(self) -> None:
        """Forwarded."""
        await self._store.close()
