"""Prometheus metrics: the example app serves /metrics, scraped over HTTP; gauges; latency."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port
from tests.test_examples import create_token, running, uvicorn
from tests.tokens import CONNECTIONS, FULL
from token_guard.guard import Guard
from token_guard.metrics import GuardMetrics
from token_guard.stores.memory import MemoryStore


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_example_app_serves_metrics_that_a_scrape_reads(tmp_path: Path) -> None:
    db = tmp_path / "tokens.db"
    token = create_token(db)
    port = free_port()
    with running(uvicorn("examples.metrics_app:app", port), port, db) as url:
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            r = httpx.get(f"{url}/v3/maps/carto_dw/table?name=proj.ds.stores", headers=auth)
            assert r.status_code == 200
        r = httpx.get(f"{url}/v3/maps/carto_dw/table?name=proj.ds.other", headers=auth)
        assert r.status_code == 403
        assert httpx.get(f"{url}/v3/sql/carto_dw/query?q=select+1").status_code == 401
        scraped = httpx.get(f"{url}/metrics/", timeout=10)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    got = samples(scraped.text)
    assert got[("token_guard_decisions_total", (("api", "maps"), ("code", "allowed")))] == 3
    assert got[("token_guard_decisions_total",
                (("api", "maps"), ("code", "source_not_granted")))] == 1
    assert got[("token_guard_decisions_total", (("api", "sql"), ("code", "missing_token")))] == 1
    assert got[("token_guard_cache_misses_total", ())] >= 1  # the start-up probe may miss too
    assert got[("token_guard_cache_hits_total", ())] >= 3
    assert got[("token_guard_change_feed_healthy", ())] == 1
    assert got[("token_guard_store_lookup_seconds_count", ())] >= 1
    assert token not in scraped.text


@pytest.mark.anyio
async def test_limit_rejections_redis_latency_and_a_registered_gauge(
    redis_url: str,
) -> None:
    metrics = GuardMetrics()
    store = MemoryStore()
    prefix = f"tg_test:metrics:{time.time_ns()}:"
    guard = Guard(store=metrics.timed_store(store), connections=CONNECTIONS,
                  on_decision=metrics.on_decision, limiter=f"{redis_url}?prefix={prefix}")
    metrics.attach(guard)
    metrics.add_gauge("token_guard_custom", "A gauge of the app's own.", lambda: 1)
    issued = await store.create_token({**FULL, "limits": {"rate": [
        {"requests": 1, "per": "hour"}]}})
    for _ in range(2):
        await guard.check_async("GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.stores",
                                f"Bearer {issued.token}".encode())
    await guard.limiter.close()
    from prometheus_client import generate_latest

    got = samples(generate_latest(metrics.registry).decode())
    assert got[("token_guard_limit_rejections_total", (("code", "rate_limited"),))] == 1
    assert got[("token_guard_limiter_redis_seconds_count", ())] == 2
    assert got[("token_guard_custom", ())] == 1
    assert got[("token_guard_report_only", ())] == 0  # enforcing
    assert re.search(r"token_guard_decisions_total\{api=\"maps\",code=\"rate_limited\"\} 1",
                     generate_latest(metrics.registry).decode())


@pytest.mark.anyio
async def test_report_only_mode_is_visible_in_the_exposition() -> None:
    metrics = GuardMetrics()
    store = MemoryStore()
    with pytest.warns(UserWarning, match="report-only|Nothing is enforced"):
        guard = Guard(store=store, connections=CONNECTIONS, report_only=True)
    metrics.attach(guard)
    issued = await store.create_token(FULL)
    await guard.check_async("GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.other",
                            f"Bearer {issued.token}".encode())
    from prometheus_client import generate_latest

    got = samples(generate_latest(metrics.registry).decode())
    assert got[("token_guard_report_only", ())] == 1
    assert got[("token_guard_would_refuse_total", (("code", "source_not_granted"),))] == 1
