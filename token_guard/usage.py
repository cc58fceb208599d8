"""The usage recorder: ``last_used_at`` and request counts written in batches, never once
per request.

``note_used(token_id, api)`` counts an allowed request and ``note_refused(token_id, api,
code)`` a refusal of a known token, in a dict of ``itertools.count`` per (token, api, code)
(``next`` on a counter is one C call, safe from any thread under the GIL). A flusher task
on the event loop swaps the dict every ``interval`` seconds and writes, stamped with the
flush time: ``last_used_at`` of the tokens allowed (``record_usage``) and, when the sink
is a ``UsageLog`` (every store here), the counts as rows of the flush's UTC hour
(``add_usage``): one call of each, or one per ``FLUSH_CHUNK`` tokens when more were used.
So both are precise to ``interval`` at no per-request write. A batch that fails to write
is kept and retried with the next one (newest time per token; counts are added, bounded by
tokens x APIs x codes). Once an hour, rows older than
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

from token_guard.core.facts import API_NAMES
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
# Rows (and tokens' last uses) a flush writes per call: beyond this many it writes in several
# calls, so its own dicts and rows (~130 B a token in use, all at once) stay bounded.
FLUSH_CHUNK = 1000


class TokenCounters(dict[str, "count[int]"]):
    """One API's allowed-request counters by token id, each made on its first use.

    ``UsageRecorder.uses`` holds one per API: ``next(uses[api][token_id])`` counts one,
    from any thread. One flat dict per API rather than a dict per token: a dict costs ~190
    bytes however few keys it holds, and a cached token calls one or two APIs."""

    __slots__ = ()

    def __missing__(self, token_id: str) -> count[int]:
        return self.setdefault(token_id, count())  # setdefault: two threads get one counter


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
        # api -> token id -> counter: the request path counts with one ``next`` (the guard
        # holds ``uses``); one counter per token and API for the recorder's life (bounded by
        # the tokens that exist), so a recompiled token keeps counting where it was.
        # A plain dict (its subscript is the interpreter's fastest): an allowed request's API
        # is one of API_NAMES, as every token's allowed_apis are.
        self.uses: dict[str, TokenCounters] = {api: TokenCounters() for api in API_NAMES}
        # The value each counter had when last read, keyed by the counter itself.
        self._read: dict[count[int], int] = {}
        self.flush_errors = 0

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
        """Write the uses noted since the last flush now: ``record_usage`` and ``add_usage``
        calls of at most ``FLUSH_CHUNK`` tokens and rows each (one of each unless more
        tokens were used), so a flush's own memory does not grow with the number of tokens
        in use. (What a failed flush left is written first, as it was kept: whole.)"""
        with self._lock:
            counts, self._counts = self._counts, {}
            batch, self._failed = self._failed, {}
            rows, self._failed_rows = self._failed_rows, {}
            apis = list(self.uses.items())
        now = datetime.now(UTC)
        hour = now.replace(minute=0, second=0, microsecond=0)
        for (token_id, api, code), counter in counts.items():
            if not code:
                batch[token_id] = now
            key = (token_id, hour, api, code)
            rows[key] = rows.get(key, 0) + next(counter)
        read = self._read
        failures: list[tuple[str, Exception]] = []
        wrote_rows = False
        for api, per_token in apis:
            for token_id in list(per_token):  # walked across the writes: others may add
                # Reading a count is a next(): the read itself is remembered as one more.
                counter = per_token[token_id]
                value = next(counter)
                used, read[counter] = value - read.get(counter, 0), value + 1
                if not used:
                    continue
                if len(rows) >= FLUSH_CHUNK or len(batch) >= FLUSH_CHUNK:
                    wrote_rows |= await self._write(batch, rows, failures)
                    batch, rows = {}, {}
                batch[token_id] = now
                key = (token_id, hour, api, "")
                rows[key] = rows.get(key, 0) + used
        wrote_rows |= await self._write(batch, rows, failures)
        first: dict[str, Exception] = {}
        for what, exc in failures:
            first.setdefault(what, exc)
        for what, exc in first.items():  # one warning of each kind a flush
            logger.warning("could not record %s (%s); will retry", what, exc)
        if failures:
            with self._lock:
                self.flush_errors += 1  # one error per failed flush
            return
        sink = self._counts_sink
        if sink is None or not wrote_rows:
            return
        if self._pruned_at is None or now - self._pruned_at >= timedelta(hours=1):
            self._pruned_at = now
            try:
                await sink.prune_usage(now - self.retention)
            except Exception as exc:
                logger.warning("could not prune old request counts (%s)", exc)

    async def _write(
        self,
        batch: dict[str, datetime],
        rows: dict[tuple[str, datetime, str, str], int],
        failures: list[tuple[str, Exception]],
    ) -> bool:
        """Write one chunk: ``last_used_at`` and the counts. What fails is kept for the next
        flush (newest time per token, counts added) and noted in ``failures``; so is a chunk
        whose ``last_used_at`` write a cancellation interrupts (``close`` cancels a flush in
        progress, then flushes). Whether any counts were written."""
        if batch:
            try:
                await self._sink.record_usage(batch)
            except BaseException as exc:
                self._keep(batch, {})
                if not isinstance(exc, Exception):
                    self._keep({}, rows)
                    raise
                failures.append(("token usage", exc))
        sink = self._counts_sink
        if sink is None or not rows:
            return False
        try:
            await sink.add_usage([UsageRow(t, h, a, c, n) for (t, h, a, c), n in rows.items()])
        except Exception as exc:
            self._keep({}, rows)
            failures.append(("request counts", exc))
            return False
        # Cancelled here, the counts are not kept: they are added, not set, and a store's
        # write goes on in its thread (they would be counted twice).
        return True

    def _keep(
        self, batch: Mapping[str, datetime], rows: Mapping[tuple[str, datetime, str, str], int]
    ) -> None:
        """Keep what was not written for the next flush."""
        with self._lock:
            for token_id, at in batch.items():
                newer = self._failed.get(token_id)
                if newer is None or newer < at:
                    self._failed[token_id] = at
            for key, n in rows.items():
                self._failed_rows[key] = self._failed_rows.get(key, 0) + n
