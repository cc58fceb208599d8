"""Time RouteMap.match + RouteMap.facts per request (run: python benchmarks/bench_routes.py)."""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from token_guard.core.facts import RequestFacts, Source
from token_guard.core.routes import RouteMap, RouteMatch

CASES: list[tuple[str, str, bytes, bytes]] = [
    ("maps table GET", "GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.t&v=3.4&client=deck"),
    (
        "maps tile GET",
        "GET",
        b"/v3/maps/carto_dw/table/12/2048/1361",
        b"name=proj.ds.t&cache=1700000000&formatTiles=mvt&v=3.4&client=deck",
    ),
    (
        "sql query GET",
        "GET",
        b"/v3/sql/carto_dw/query",
        b"q=SELECT%20*%20FROM%20%60p.d.t%60%20WHERE%20a%20%3D%20%40a&queryParameters=%7B%22a%22%3A1%7D",
    ),
    ("stats GET", "GET", b"/v3/stats/carto_dw/proj.ds.t/population", b"v=3.4"),
    ("lds GET", "GET", b"/v3/lds/isolines", b"lat=1&lng=2"),
    ("escaped path GET", "GET", b"/v3/stats/carto_dw/proj.ds.t%2Dx/a%20b", b""),
    ("outside prefix", "GET", b"/static/app.js", b""),
]


def _per_call(func: Callable[[], object], number: int = 100_000) -> float:
    # CPU time of this process, best of 7: the machine is shared, wall time is noise.
    best = min(timeit.repeat(func, number=number, repeat=7, timer=time.process_time))
    return best / number * 1e6


def main() -> None:
    """Print µs per match + facts for each case (CPU time, best of 7 repeats)."""
    routes = RouteMap()
    floor = _per_call(lambda: RequestFacts("maps", "c", (Source("table", "p.d.t"),), None, None))
    print(f"{'(RequestFacts alone)':22} {floor:6.2f} µs")
    for label, method, path, query in CASES:

        def once(method: str = method, path: bytes = path, query: bytes = query) -> None:
            found = routes.match(method, path)
            if isinstance(found, RouteMatch):
                routes.facts(found, query, None, None, None)

        print(f"{label:22} {_per_call(once):6.2f} µs")


if __name__ == "__main__":
    main()
