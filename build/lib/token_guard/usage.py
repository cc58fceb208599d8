"""The usage recorder: ``last_used_at`` written in batches, never once per request.

``note_used`` adds a token id to a set (one ``set.add``, safe from any thread under the
GIL); a flusher task on the event loop stamps the batch with the flush time and writes it
with one ``record_usage`` call every ``interval`` seconds. So ``last_used_at`` is precise
to ``interval`` at no per-request cost. A batch that fails to write is kept (newest time
per token; bounded by the number of tokens that exist) and retried with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["UsageRecorder", "UsageSink"]

logger = logging.getLogger("token_guard.resolver")


class UsageSink(Protocol):
    """Where batches go: ``TokenReader.record_usage``."""

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Batch-write ``last_used_at`` per token id."""


class UsageRecorder:
    """Collects uses and writes them to ``sink`` every ``interval`` seconds."""

    def __init__(self, sink: UsageSink, *, interval: float) -> None:
        self._sink = sink
        self._interval = interval
        self._used: set[str] = set()
        self._failed: dict[str, datetime] = {}  # failed flushes wait here
        self._lock = threading.Lock()  # held for the swap of the two structures only
        self._flusher: asyncio.Task[None] | None = None
        self.flush_errors = 0

    def note_used(self, token_id: str) -> None:
        """Record a use of ``token_id`` (written with the next batch)."""
        self._used.add(token_id)

    @property
    def pending(self) -> int:
        """How many tokens have uses not yet written."""
        with self._lock:
            return len(self._failed | dict.fromkeys(self._used))

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
            used, self._used = self._used, set()
            batch, self._failed = self._failed, {}
        now = datetime.now(UTC)
        for token_id in used:
            batch[token_id] = now
        if not batch:
            return
        try:
            await self._sink.record_usage(batch)
        except Exception as exc:
            logger.warning("could not record token usage (%s); will retry", exc)
            with self._lock:
                self.flush_errors += 1
                for token_id, at in batch.items():
                    newer = self._failed.get(token_id)
                    if newer is None or newer < at:
                        self._failed[token_id] = at
