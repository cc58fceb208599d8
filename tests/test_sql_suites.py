"""Third-party read queries (tests/data/sql_corpus.jsonl): none leaks an ungranted table.

For every query the guard allows, each table it reads (by the guard and, on PostgreSQL, by
PostgreSQL's own parser) is left out of the grants in turn: the guard must refuse. The
refusal rates are printed by ``python -m benchmarks.corpus``, not asserted here.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.corpus import CONNECTIONS, CORPUS, _leaks, _oracle
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer
from token_guard.guard import Guard
from token_guard.stores.memory import MemoryStore

ENTRIES = [json.loads(line) for line in CORPUS.read_text().splitlines() if line]


def test_every_entry_names_its_source() -> None:
    assert len(ENTRIES) > 1000
    for entry in ENTRIES:
        assert entry["dialect"] in CONNECTIONS and entry["query"]
        assert "@" in entry["source"] and ":" in entry["source"], entry["source"]


@pytest.mark.parametrize("dialect", sorted(CONNECTIONS))
def test_no_allowed_query_reads_an_ungranted_table(dialect: str) -> None:
    analyzer = SqlAnalyzer()
    guard = Guard(store=MemoryStore(), connections={f"c_{d}": c for d, c in CONNECTIONS.items()})
    conn = CONNECTIONS[dialect]
    checked = leaks = 0
    for entry in ENTRIES:
        if entry["dialect"] != dialect:
            continue
        result = analyzer.analyze(entry["query"], conn)
        if isinstance(result, QueryAnalysis):
            tables = _oracle(entry["query"], dialect, result, conn)
            if tables:
                checked += 1
                leaks += _leaks(guard, f"c_{dialect}", entry["query"], tables)
    assert leaks == 0
    assert checked > 0
