"""The usage recorder: uses noted per request, written in one batch per flush."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pytest

from token_guard.core.records import UsageRow
from token_guard.usage import FLUSH_CHUNK, UsageRecorder

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


class ChunkSink(Sink):
    """Keeps every counts call too; its ``fail_calls``-th calls (1-based, each kind) fail."""

    def __init__(self, fail_calls: set[int]) -> None:
        super().__init__()
        self.row_calls: list[list[tuple[str, str, str, int]]] = []
        self.fail_calls = fail_calls
        self.calls = {"used": 0, "rows": 0}

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        self.calls["used"] += 1
        if self.calls["used"] in self.fail_calls:
            raise OSError("down")
        self.batches.append(dict(last_used))

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        self.calls["rows"] += 1
        if self.calls["rows"] in self.fail_calls:
            raise OSError("down")
        self.row_calls.append([(r.token_id, r.api, r.code, r.count) for r in rows])

    async def prune_usage(self, before: datetime) -> int:
        return 0


async def test_a_flush_of_many_tokens_writes_in_bounded_chunks_and_loses_nothing() -> None:
    """More tokens than FLUSH_CHUNK: several calls of at most FLUSH_CHUNK rows each; a chunk
    that fails is written with the next flush, and no count is written twice."""
    sink = ChunkSink(fail_calls={2})
    recorder = UsageRecorder(sink, interval=60.0)
    ids = [f"tok_{i}" for i in range(2 * FLUSH_CHUNK + 500)]
    for n, token_id in enumerate(ids):
        for _ in range(1 + n % 3):
            next(recorder.uses["maps"][token_id])
        next(recorder.uses["sql"][token_id])
    recorder.note_refused(ids[0], "maps", "source_not_granted")
    await recorder.flush()
    assert recorder.flush_errors == 1  # one failed flush, however many chunks failed
    assert sink.calls["rows"] >= 2 * len(ids) // FLUSH_CHUNK  # two rows a token
    next(recorder.uses["lds"][ids[-1]])
    await recorder.flush()
    assert recorder.flush_errors == 1 and recorder.pending == 0
    assert all(len(call) <= FLUSH_CHUNK for call in sink.row_calls)
    assert all(len(batch) <= FLUSH_CHUNK for batch in sink.batches)
    written: dict[tuple[str, str, str], int] = {}
    for call in sink.row_calls:
        for token_id, api, code, n in call:
            written[token_id, api, code] = written.get((token_id, api, code), 0) + n
    expected = {(t, "maps", ""): 1 + n % 3 for n, t in enumerate(ids)}
    expected |= {(t, "sql", ""): 1 for t in ids}
    expected[ids[-1], "lds", ""] = 1
    expected[ids[0], "maps", "source_not_granted"] = 1
    assert written == expected
    assert {t for batch in sink.batches for t in batch} == set(ids)


async def test_close_during_a_flush_writes_what_the_cancelled_write_held() -> None:
    """close() cancels a flush stuck in its last_used_at write, then flushes: that chunk's
    last uses and counts are written then, once."""
    import asyncio

    sink = ChunkSink(fail_calls=set())
    gate = asyncio.Event()
    stuck = asyncio.Event()
    write_used = sink.record_usage

    async def first_call_hangs(last_used: Mapping[str, datetime]) -> None:
        if sink.calls["used"] == 0:
            sink.calls["used"] += 1
            stuck.set()
            await gate.wait()  # never set: the write hangs until cancelled
        await write_used(last_used)

    sink.record_usage = first_call_hangs  # type: ignore[method-assign]
    recorder = UsageRecorder(sink, interval=0.01)
    for _ in range(3):
        next(recorder.uses["maps"]["tok_a"])
    recorder.start()
    await asyncio.wait_for(stuck.wait(), 5)
    await recorder.close()
    assert [set(b) for b in sink.batches] == [{"tok_a"}]
    assert sink.row_calls == [[("tok_a", "maps", "", 3)]]
