"""The usage recorder: uses noted per request, written in one batch per flush."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pytest

from token_guard.usage import UsageRecorder

pytestmark = pytest.mark.anyio


class Sink:
    """Keeps the batches; fails while ``failing``."""

    def __init__(self) -> None:
        self.batches: list[dict[str, datetime]] = []
        self.failing = False

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        if self.failing:
            raise OSError("down")
        self.batches.append(dict(last_used))


async def test_many_uses_become_one_batch_per_flush() -> None:
    sink = Sink()
    recorder = UsageRecorder(sink, interval=60.0)
    recorder.start()
    for _ in range(100):
        recorder.note_used("a")
        recorder.note_used("b")
    await recorder.close()
    assert [set(b) for b in sink.batches] == [{"a", "b"}]
    await recorder.flush()  # nothing new: no empty write
    assert len(sink.batches) == 1


async def test_a_failed_batch_is_kept_and_written_with_the_next() -> None:
    sink = Sink()
    recorder = UsageRecorder(sink, interval=60.0)
    recorder.note_used("a")
    sink.failing = True
    await recorder.flush()
    assert (recorder.flush_errors, recorder.pending) == (1, 1)
    sink.failing = False
    recorder.note_used("b")
    await recorder.flush()
    assert [set(b) for b in sink.batches] == [{"a", "b"}]
    assert recorder.pending == 0
