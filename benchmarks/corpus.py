"""False refusals on third-party read queries: `python -m benchmarks.corpus [-v]`.

Reads tests/data/sql_corpus.jsonl (valid read queries from PostGIS's regression/OGC suite and
reference, ZetaSQL's function reference, DuckDB spatial's reference; see
scripts/build_sql_corpus.py) and prints per dialect: how many the guard refuses, overall and
among queries calling ST_* functions, and how many it would let through with one table the
query reads left ungranted (must be 0). The tables a query reads come from the guard and,
on PostgreSQL, from PostgreSQL's own parser (pglast) as well. Printed, not asserted.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import token_guard as tg
from token_guard.core import pg_parser
from token_guard.core.connections import Connection
from token_guard.core.records import TokenRecord
from token_guard.core.spec import parse_token_spec
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer
from token_guard.guard import Guard
from token_guard.stores.memory import MemoryStore

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "sql_corpus.jsonl"
CONNECTIONS = {
    "postgres": Connection("postgres", default_path=("app", "public")),
    "bigquery": Connection("bigquery", default_path=("proj", "ds")),
    "duckdb": Connection("duckdb", default_path=("db", "main")),
}
SPATIAL = re.compile(r"\bST_[A-Za-z0-9_]+\s*\(", re.I)
# Refusals that are the guard's purpose, not false denials: the query writes, reads files,
# reads tables named by text or another database, or changes session state.
BY_DESIGN = re.compile(
    r"writes or changes the database|named by its arguments|reads files|names a file|"
    r"runs SQL given as text|session or server state|volatile|another database"
)


def _oracle(
    query: str, dialect: str, analysis: QueryAnalysis, conn: Connection
) -> set[tuple[str, ...]]:
    tables = set(analysis.tables)
    if dialect == "postgres" and pg_parser.AVAILABLE:
        for catalog, schema, name in pg_parser.relations(query):
            parts = tuple(p for p in (catalog, schema, name) if p)
            tables.add((*conn.default_path[: 3 - len(parts)], *parts))
    return tables


def _leaks(guard: Guard, conn_name: str, query: str, tables: set[tuple[str, ...]]) -> int:
    """Queries allowed with one of their tables left out of the grants (each must refuse)."""
    leaks = 0
    for left_out in tables:
        grants = [{"connection_name": conn_name, "source": ".".join(t)}
                  for t in tables if t != left_out]
        if not grants:
            grants = [{"connection_name": conn_name, "source": "other.schema.table"}]
        body = {"name": "corpus", "grants": grants, "referers": [], "allowed_apis": ["sql"]}
        try:
            record = TokenRecord("tok_x", parse_token_spec(body), datetime.now(UTC))
        except tg.InvalidTokenSpec:
            continue  # a name no grant can spell: the query cannot be granted at all
        facts = tg.RequestFacts("sql", conn_name, (tg.Source("query", query),))
        if guard.policy.decide(guard.policy.compile(record), facts, time.time()) is None:
            leaks += 1
    return leaks


def main() -> None:
    """Print the per-dialect figures (and, with -v, each refused query's reason)."""
    verbose = "-v" in sys.argv
    entries = [json.loads(line) for line in CORPUS.read_text().splitlines() if line]
    analyzer = SqlAnalyzer()
    guard = Guard(store=MemoryStore(), connections={f"c_{d}": c for d, c in CONNECTIONS.items()})
    for dialect, conn in CONNECTIONS.items():
        rows = [e for e in entries if e["dialect"] == dialect]
        refused = spatial = spatial_refused = leaks = by_design = by_design_st = 0
        reasons: Counter[str] = Counter()
        for entry in rows:
            query = entry["query"]
            calls_st = bool(SPATIAL.search(query))
            spatial += calls_st
            result = analyzer.analyze(query, conn)
            if not isinstance(result, QueryAnalysis):
                refused += 1
                spatial_refused += calls_st
                if BY_DESIGN.search(result.reason):
                    by_design += 1
                    by_design_st += calls_st
                shape = re.sub(r"'[^']*'|\"[^\"]*\"|\b[A-Z_0-9]{3,}\b", "…", result.reason)
                reasons[shape[:90]] += 1
                if verbose:
                    print(f"  REFUSED {result.reason[:100]}\n     {query[:160]}")
                continue
            tables = _oracle(query, dialect, result, conn)
            if tables:
                leaks += _leaks(guard, f"c_{dialect}", query, tables)
        n = len(rows)
        false, false_st = refused - by_design, spatial_refused - by_design_st
        print(f"{dialect}: {n} queries, refused {refused} ({100 * refused / max(n, 1):.2f} %); "
              f"calling ST_*: {spatial}, refused {spatial_refused} "
              f"({100 * spatial_refused / max(spatial, 1):.2f} %); "
              f"allowed with an ungranted table: {leaks}")
        print(f"  without the {by_design} refused by design (writes, files, tables named by "
              f"text, session state): refused {false} ({100 * false / max(n - by_design, 1):.2f}"
              f" %), calling ST_* {false_st} "
              f"({100 * false_st / max(spatial - by_design_st, 1):.2f} %)")
        for reason, count in reasons.most_common(8):
            print(f"    {count:5d}  {reason}")


if __name__ == "__main__":
    main()
