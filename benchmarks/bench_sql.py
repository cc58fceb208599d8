"""Microbenchmark of SqlAnalyzer: `python -m benchmarks.bench_sql`.

Prints the best-of-5 time per call for a cold analysis (tokenize, parse, walk, fingerprint)
of a typical three-table join, and for a cache hit with a fresh query string (as a request
brings one: equal text, a new object whose hash is not cached yet). Printed, not asserted.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from token_guard.core.connections import Connection
from token_guard.core.sql import SqlAnalyzer, SqlRefusal

JOIN = (
    "SELECT a.name, b.revenue, c.region FROM `carto-demo-data`.demo_tables.retail_stores AS a "
    "JOIN `carto-demo-data.demo_tables.sales` AS b ON a.store_id = b.store_id "
    "LEFT JOIN carto-demo-data.demo_tables.regions AS c ON c.id = a.region_id "
    "WHERE a.city = @city AND b.revenue > 1000 ORDER BY b.revenue DESC LIMIT 100"
)
CONNECTIONS = {
    "bigquery": (Connection("bigquery"), JOIN),
    "postgres": (
        Connection("postgres", default_path=("app", "public")),
        "SELECT a.name, b.revenue, c.region FROM retail_stores AS a "
        "JOIN sales.daily AS b ON a.store_id = b.store_id "
        'LEFT JOIN "Geo".regions AS c ON c.id = a.region_id '
        "WHERE a.city = :city AND b.revenue > 1000 ORDER BY b.revenue DESC LIMIT 100",
    ),
}


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Best of five runs, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def cases(conn: Connection, query: str) -> dict[str, tuple[Callable[[], object], int]]:
    """The timed calls for one connection: name -> (call, calls per run)."""
    fresh = SqlAnalyzer()
    warm = SqlAnalyzer()
    warm.analyze(query, conn)
    # A request carries a new str each time: rebuild it so its hash is computed per call.
    head, tail = query[:10], query[10:]

    def cold() -> object:
        fresh._queries.clear()  # a miss every call: the whole analysis is timed
        return fresh.analyze(query, conn)

    return {
        "cold: tokenize, parse, walk, fingerprint": (cold, 50),
        "baseline: build a fresh query string": (lambda: head + tail, 200_000),
        "hit, fresh query string (incl. baseline)": (
            lambda: warm.analyze(head + tail, conn),
            200_000,
        ),
        "hit, same str object (hash cached)": (lambda: warm.analyze(query, conn), 200_000),
    }


def main() -> None:
    """Measure and print the cases."""
    for dialect, (conn, query) in CONNECTIONS.items():
        result = SqlAnalyzer().analyze(query, conn)
        tables = sorted(result.tables) if not isinstance(result, SqlRefusal) else result
        print(f"{dialect}: reads {tables}")
        for name, (fn, number) in cases(conn, query).items():
            print(f"  {name:44s} {per_call_us(fn, number):9.3f} µs")
    names = SqlAnalyzer()
    bq = Connection("bigquery")
    table = "carto-demo-data.demo_tables.retail_stores"
    names.table_key(table, bq)
    hit = per_call_us(lambda: names.table_key(table, bq), 200_000)
    print(f"  {'table_key hit':44s} {hit:9.3f} µs")


if __name__ == "__main__":
    main()
