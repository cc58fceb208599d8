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


async def test_the_guard_counts_allowed_per_api_and_refusals_by_code_per_hour() -> None:
    from datetime import UTC, timedelta

    from tests.tokens import CONNECTIONS, FULL
    from token_guard.core.decision import Denial
    from token_guard.guard import Guard
    from token_guard.stores.memory import MemoryStore

    store = MemoryStore()
    guard = Guard(store=store, connections=CONNECTIONS)
    issued = await store.create_token(
        {**FULL, "limits": {"rate": [{"requests": 2, "per": "hour", "api": "sql"}]}})
    auth = f"Bearer {issued.token}".encode()
    for _ in range(3):
        await guard.check_async("GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.stores", auth)
    await guard.check_async("GET", b"/v3/maps/carto_dw/table", b"name=proj.no.pe", auth)
    for _ in range(3):
        await guard.check_async("GET", b"/v3/sql/carto_dw/query",
                                b"q=select+1+from+proj.ds.stores", auth)
    await guard.check_async("GET", b"/v3/maps/carto_dw/table", b"name=x", b"Bearer nope")
    assert await store.get_usage(issued.id, datetime(2000, 1, 1, tzinfo=UTC),
                                 datetime(2100, 1, 1, tzinfo=UTC)) == []  # nothing per request
    await guard.resolver.flush_usage()
    now = datetime.now(UTC)
    rows = await store.get_usage(issued.id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert {(r.api, r.code): r.count for r in rows} == {
        ("maps", ""): 3, ("maps", "source_not_granted"): 1,
        ("sql", ""): 2, ("sql", "rate_limited"): 1,
    }
    assert {r.hour for r in rows} == {now.replace(minute=0, second=0, microsecond=0)}
    # A token without limits counts on its compiled token's counters: each flush writes only
    # what came since the last (the counter's last reading is kept).
    plain = await store.create_token(FULL)
    auth = f"Bearer {plain.token}".encode()
    for uses in (3, 2, 0):
        for _ in range(uses):
            step = await guard.check_async("GET", b"/v3/maps/carto_dw/table",
                                           b"name=proj.ds.stores", auth)
            assert not isinstance(step, Denial)
        await guard.resolver.flush_usage()
    rows = await store.get_usage(plain.id, now - timedelta(hours=1), now + timedelta(hours=2))
    assert sum(r.count for r in rows if r.api == "maps" and not r.code) == 5


async def test_failed_count_writes_are_retried_and_old_rows_pruned() -> None:
    from datetime import UTC, timedelta

    from token_guard.core.records import UsageRow
    from token_guard.stores.memory import MemoryStore

    store = MemoryStore()
    old = datetime.now(UTC) - timedelta(days=100)
    await store.add_usage([UsageRow("tok_a", old.replace(minute=0, second=0, microsecond=0),
                                    "maps", "", 4)])
    recorder = UsageRecorder(store, interval=60.0, retention=timedelta(days=90))
    recorder.note_used("tok_a", "maps")
    await store.close()
    await recorder.flush()
    assert recorder.flush_errors == 1
    await store.open()
    await recorder.flush()
    rows = await store.get_usage("tok_a", old - timedelta(days=1), datetime.now(UTC)
                                 + timedelta(hours=1))
    assert [(r.api, r.count) for r in rows] == [("maps", 1)]  # the 100-day-old row pruned
