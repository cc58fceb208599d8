"""Section 5: scale.

- Memory per cached token: tracemalloc over filling the resolver's cache with compiled
  tokens (100,000 by default: the cache's default bound). The store builds every record
  from its columns on each lookup, as SQLite and PostgreSQL do, so the record, its spec and
  its strings are counted as well as the compiled token and the cache's own entries. Each
  token has a table grant (one of 1,000 tables: a catalogue many tokens share, which also
  keeps sqlglot's parse of every name out of a fill traced by tracemalloc), a shared
  wildcard, two referers and two APIs. The rows after the total say which modules hold it.
- Memory per cached token under traffic: the peak (tracemalloc) while 5,000 tokens (400
  quick) each serve 100 distinct tile URLs through ``TokenGuard`` — memos are bounded
  globally, so the peak per token must stay near the one-request figure.
- Decision time with 10,000 grants on one token (tables, wildcards and queries) against a
  token with the one grant the request needs; interleaved, medians. It must not grow with
  the number of grants.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from benchmarks.bench_postgres import bench_id, bench_secret
from benchmarks.inprocess import CONNECTIONS, ORIGIN, TOKEN_BODY
from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import interleaved, median
from token_guard.core.facts import RequestFacts, Source
from token_guard.core.policy import CompiledToken, Policy
from token_guard.core.records import TokenRecord, UsageRow
from token_guard.core.secret import hash_secret
from token_guard.core.spec import parse_token_spec
from token_guard.resolver import CacheSettings, Resolver
from token_guard.stores.memory import MemoryStore
from token_guard.stores.schema import spec_from_columns

SECTION = "5. scale"
_CREATED = datetime(2025, 1, 1, tzinfo=UTC)
_REFERERS = json.dumps(TOKEN_BODY["referers"])
_APIS = json.dumps(TOKEN_BODY["allowed_apis"])


class ColumnStore(MemoryStore):
    """Holds ``count`` benchmark tokens as columns and builds a fresh record per lookup;
    the request counts the guard writes go where a database's would, out of this process
    (``MemoryStore`` would keep a row per token and hour in a dict: ~100 B a token that is
    the store's, not the cache's)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self._index = {hash_secret(bench_secret(i)): i for i in range(count)}

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Take the rows as written (a database store writes them to its tables)."""

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """A record rebuilt from its stored columns, as a database store returns it."""
        i = self._index.get(secret_hash)
        if i is None:
            return None
        grants = json.dumps([
            {"connection_name": "carto_dw", "source": f"proj.ds{i % 10}.table_{i % 1000}"},
            {"connection_name": "carto_dw", "source": "proj.shared.*"},
        ])
        spec = spec_from_columns(f"token {i}", grants, _REFERERS, _APIS, None)
        return TokenRecord(id=bench_id(i), spec=spec, created_at=_CREATED)


async def _fill(count: int) -> tuple[int, int, list[tuple[str, int]]]:
    store = ColumnStore(count + 1)
    policy = Policy(CONNECTIONS)
    resolver: Resolver[CompiledToken] = Resolver(
        store, policy.compile, settings=CacheSettings(max_entries=count + 1)
    )
    await resolver.resolve(bench_secret(count))  # first use: lazy imports, the feed, the flusher
    gc.collect()
    tracemalloc.start()
    first = tracemalloc.take_snapshot()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        # The cache key is the request's own string, so it is built inside the window.
        answer = await resolver.resolve(bench_secret(i))
        if not isinstance(answer, CompiledToken):
            raise RuntimeError(f"benchmark token {i} was refused: {answer}")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    by_file = tracemalloc.take_snapshot().compare_to(first, "filename")
    tracemalloc.stop()
    cached = resolver.stats()["positive_entries"]
    await resolver.close()
    top = [(_short(d.traceback[0].filename), d.size_diff) for d in by_file[:4]]
    return after - before, cached, top


def _short(filename: str) -> str:
    for marker in ("token_guard/", "site-packages/", "benchmarks/", "python3.11/"):
        if marker in filename:
            return filename[filename.index(marker):].removeprefix("site-packages/")
    return filename


URLS_PER_TOKEN = 100


async def _traffic(count: int) -> tuple[int, int, int]:
    """Peak and final traced bytes while ``count`` tokens each serve 100 distinct tile URLs
    through TokenGuard (5 views of 20 tiles per token, tokens taking turns); cached tokens."""
    from benchmarks.instructions import drive
    from benchmarks.workloads import browser, inner_app, tile_request
    from token_guard.adapters.asgi import TokenGuard

    store = ColumnStore(count + 1)
    guard = TokenGuard(inner_app(), store=store, connections=CONNECTIONS)
    rng = random.Random("traffic")
    shared = [f"proj.shared.layer_{k}" for k in range(20)]

    def request(i: int, k: int) -> dict[str, Any]:
        # Tile k of token i: distinct per token (the view's place), 70 % its table.
        secret = bench_secret(i)
        table = f"proj.ds{i % 10}.table_{i % 1000}" if k % 10 < 7 else shared[k % 20]
        tile = (14, i, k)
        return tile_request("table", table, tile, secret, browser(rng, secret)).scope()

    await drive(guard, [request(count, k) for k in range(3)])  # lazy imports, the flusher
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    for view in range(URLS_PER_TOKEN // 20):
        for i in range(count):
            statuses = await drive(guard, [request(i, view * 20 + j) for j in range(20)])
            if statuses != [200] * 20:
                raise RuntimeError(f"token {i} was refused: {statuses}")
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cached = guard.guard.resolver.stats()["positive_entries"]
    await guard.guard.resolver.close()
    return peak - before, after - before, cached


def traffic_rows(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Peak bytes per cached token after each token served 100 distinct tile URLs."""
    count = budget.traffic_tokens
    started = time.perf_counter()
    peak, final, cached = asyncio.run(_traffic(count))
    note = (f"{count:,} tokens x {URLS_PER_TOKEN} distinct tile URLs through TokenGuard, "
            f"{cached - 1:,} cached; {time.perf_counter() - started:.0f} s under tracemalloc")
    return ([Row(SECTION, "memory per cached token under traffic: peak", peak / count, "B",
                 note),
             Row(SECTION, "memory per cached token under traffic: after", final / count, "B")],
            [Threshold("peak memory per cached token after 100 distinct URLs each",
                       peak / count, 2048, True, "B")])


def memory_rows(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Bytes per cached token at ``memory_tokens`` cached tokens."""
    started = time.perf_counter()
    grown, cached, top = asyncio.run(_fill(budget.memory_tokens))
    per_token = grown / budget.memory_tokens
    note = (f"{cached - 1:,} tokens cached, {grown / 2**20:.1f} MiB traced, "
            f"fill took {time.perf_counter() - started:.0f} s under tracemalloc")
    rows = [Row(SECTION, "memory per cached token", per_token, "B", note)]
    rows += [Row(SECTION, f"  of which allocated in {name}", size / budget.memory_tokens, "B")
             for name, size in top]
    return (rows,
            [Threshold("memory per cached token", per_token, 2048, True, "B")])


def many_grants(count: int) -> list[dict[str, str]]:
    """``count`` grants: about 70% tables, 29% wildcards, 1% queries."""
    grants = []
    for i in range(count):
        if i % 100 == 0:
            source = f"SELECT a FROM proj.q{i}.t WHERE b = @b"
        elif i % 10 < 3:
            source = f"proj.w{i}.*"
        else:
            source = f"proj.d{i % 97}.t{i}"
        grants.append({"connection_name": "carto_dw", "source": source})
    return grants


def _compiled(policy: Policy, grants: list[dict[str, str]]) -> CompiledToken:
    body = {"name": "grants", "grants": grants, "referers": TOKEN_BODY["referers"],
            "allowed_apis": ["maps", "sql"]}
    return policy.compile(TokenRecord(id="tok_grants", spec=parse_token_spec(body),
                                      created_at=_CREATED))


def _decide_batch(policy: Policy, token: CompiledToken, facts: RequestFacts
                  ) -> Callable[[int], float]:
    now = time.time()

    def batch(n: int) -> float:
        started = time.thread_time()
        for _ in range(n):
            policy.decide(token, facts, now)
        return time.thread_time() - started

    return batch


def grants_rows(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Decision time with ``grants`` grants vs one grant, for a table and a wildcard match."""
    policy = Policy(CONNECTIONS)
    grants = many_grants(budget.grants)
    table = grants[-1]["source"]  # the last table grant: no early exit helps it
    wildcard_grant = next(g["source"] for g in reversed(grants) if g["source"].endswith(".*"))
    wildcard_table = wildcard_grant[:-1] + "stores"
    big = _compiled(policy, grants)
    cases = {
        "table": (table, _compiled(policy, [{"connection_name": "carto_dw", "source": table}])),
        "wildcard": (wildcard_table, _compiled(
            policy, [{"connection_name": "carto_dw", "source": wildcard_grant}])),
    }
    variants = {}
    for label, (name, one) in cases.items():
        facts = RequestFacts("maps", "carto_dw", (Source("table", name),), ORIGIN)
        for token in (one, big):
            if policy.decide(token, facts, time.time()) is not None:
                raise RuntimeError(f"the {label} request was refused; the benchmark is wrong")
        variants[f"{label}/1"] = _decide_batch(policy, one, facts)
        variants[f"{label}/many"] = _decide_batch(policy, big, facts)
    samples = interleaved(variants, rounds=budget.rounds, batch_seconds=budget.batch_seconds)
    us = {name: median(s) * 1e6 for name, s in samples.items()}
    rows = []
    worst = 0.0
    for label in cases:
        ratio = us[f"{label}/many"] / us[f"{label}/1"]
        worst = max(worst, ratio)
        rows += [
            Row(SECTION, f"decide, {label} grant: 1 grant", us[f"{label}/1"], "µs"),
            Row(SECTION, f"decide, {label} grant: {budget.grants:,} grants",
                us[f"{label}/many"], "µs", "70% tables, 29% wildcards, 1% queries"),
            Row(SECTION, f"decide, {label} grant: ratio many / 1", ratio, "x"),
        ]
    return rows, [Threshold(f"decision with {budget.grants:,} grants / 1 grant (worse case)",
                            worst, 2.0, True, "x")]


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Memory per cached token and decision time against the number of grants."""
    rows, thresholds = grants_rows(budget)
    more_rows, more_thresholds = memory_rows(budget)
    traffic, traffic_thresholds = traffic_rows(budget)
    return (more_rows + traffic + rows,
            more_thresholds + traffic_thresholds + thresholds)
