"""The usage recorder: ``last_used_at`` and request counts written in batches, never once
per request.

``note_used(token_id, api)`` counts an allowed request and ``note_refused(token_id, api,
code)`` a refusal of a known token, in a dict of ``itertools.count`` per (token, api, code)
(``next`` on a counter is one C call, safe from any thread under the GIL). A flusher task
on the event loop swaps the dict every ``interval`` seconds and writes, stamped with the
flush time: ``last_used_at`` of the tokens allowed (one ``record_usage`` call) and, when
the sink is a ``UsageLog`` (every store here), the counts as rows of the flush's UTC hour
(one ``add_usage`` call). So both are precise to ``interval`` at no per-request write. A
batch that fails to write is kept and retried with the next one (newest time per token;
counts are added, bounded by tokens x APIs x codes). Once an hour, rows older than
``retention`` are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Protocol, runtime_checkable

from token_guard.core.records import UsageRow

__all__ = ["UsageRecorder", "UsageSink"]

logger = logging.getLogger("token_guard.resolver")


class UsageSink(Protocol):
    """Where batches go: ``TokenReader.record_usage``."""

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Batch-write ``last_used_at`` per token id."""


@runtime_checkable
class CountSink(Protocol):
    """Where request counts go: ``UsageLog.add_usage``."""

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add each row's count."""

    async def prune_usage(self, before: datetime) -> int:
        """Delete rows of hours before ``before``."""


Key = tuple[str, str, str]  # (token id, api, code; "" allowed)


class Counters(dict[str, "count[int]"]):
    """A token's allowed-request counters per API, each made on its first use: a token
    that calls one API holds one counter (a cached token's memory is mostly its own)."""

    __slots__ = ()

    def __missing__(self, api: str) -> count[int]:
        return self.setdefault(api, count())  # setdefault: two threads get one counter


class UsageRecorder:
    """Collects uses and writes them to ``sink`` every ``interval`` seconds."""

    def __init__(
        self, sink: UsageSink, *, interval: float, retention: timedelta = timedelta(days=90)
    ) -> None:
        self._sink = sink
        self._counts_sink = sink if isinstance(sink, CountSink) else None
        self._interval = interval
        self.retention = retention
        self._counts: dict[Key, count[int]] = {}
        self._failed: dict[str, datetime] = {}  # failed flushes wait here
        self._failed_rows: dict[tuple[str, datetime, str, str], int] = {}
        self._lock = threading.Lock()  # held for the swap of the structures only
        self._flusher: asyncio.Task[None] | None = None
        self._pruned_at: datetime | None = None
        # token id -> api -> counter, handed to the compiled token (``counters_for``) so the
        # request path counts with one ``next``; and the value each counter had when last read.
        self._tokens: dict[str, Counters] = {}
        # Keyed by the counter itself: one flat dict, not one per token (~200 B a token).
        self._read: dict[count[int], int] = {}
        self.flush_errors = 0

    def counters_for(self, token_id: str) -> Counters:
        """The token's allowed-request counters per API: ``next(counters[api])`` counts one.

        One set per token id for the recorder's life (bounded by the tokens that exist), so
        a recompiled token keeps counting where it was."""
        with self._lock:
            got = self._tokens.get(token_id)
            if got is None:
                got = self._tokens[token_id] = Counters()
            return got

    def note_used(self, token_id: str, api: str = "") -> None:
        """Count an allowed request of ``token_id`` to ``api`` (written with the next batch)."""
        key = (token_id, api, "")
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts.setdefault(key, count())
        next(counter)

    def note_refused(self, token_id: str, api: str, code: str) -> None:
        """Count a refusal (``code``) of a known token."""
        key = (token_id, api, code)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts.setdefault(key, count())
        next(counter)

    @property
    def pending(self) -> int:
        """How many tokens have uses not yet written."""
        with self._lock:
            used = {k[0] for k in self._counts if not k[2]}
            return len(self._failed.keys() | used)

    def start(self) -> None:
        """Start the flusher on the running loop (idempotent; restarts on a new loop)."""
        loop = asyncio.get_running_loop()
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush_forever(), name="token usage flusher")

    async def close(self) -> None:
        """Stop the flusher and write what is pending."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Write the uses noted since the last flush in one ``record_usage`` call now."""
        with self._lock:
            counts, self._counts = self._counts, {}
            batch, self._failed = self._failed, {}
            rows, self._failed_rows = self._failed_rows, {}
        now = datetime.now(UTC)
        hour = now.replace(minute=0, second=0, microsecond=0)
        with self._lock:
            tokens = list(self._tokens.items())
        read = self._read
        for token_id, per_api in tokens:
            if not per_api:
                continue
            for api, counter in list(per_api.items()):  # a request may add one meanwhile
                # Reading a count is a next(): the read itself is remembered as one more.
                value = next(counter)
                used, read[counter] = value - read.get(counter, 0), value + 1
                if used:
                    batch[token_id] = now
                    key = (token_id, hour, api, "")
                    rows[key] = rows.get(key, 0) + used
        for (token_id, api, code), counter in counts.items():
            if not code:
                batch[token_id] = now
            key = (token_id, hour, api, code)
            rows[key] = rows.get(key, 0) + next(counter)
        failed = False
        if batch:
            try:
                await self._sink.record_usage(batch)
            except Exception as exc:
                logger.warning("could not record token usage (%s); will retry", exc)
                failed = True
                with self._lock:
                    self.flush_errors += 1
                    for token_id, at in batch.items():
                        newer = self._failed.get(token_id)
                        if newer is None or newer < at:
                            self._failed[token_id] = at
        sink = self._counts_sink
        if sink is None or not rows:
            return
        try:
            await sink.add_usage([UsageRow(t, h, a, c, n) for (t, h, a, c), n in rows.items()])
        except Exception as exc:
            logger.warning("could not record request counts (%s); will retry", exc)
            with self._lock:
                self.flush_errors += 0 if failed else 1  # one error per failed flush
                for key, n in rows.items():
                    self._failed_rows[key] = self._failed_rows.get(key, 0) + n
            return
        if self._pruned_at is None or now - self._pruned_at >= timedelta(hours=1):
            self._pruned_at = now
            try:
                await sink.prune_usage(now - self.retention)
            except Exception as exc:
                logger.warning("could not prune old request counts (%s)", exc)
