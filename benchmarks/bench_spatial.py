"""Cold analysis of spatial queries: `python -m benchmarks.bench_spatial`.

Best-of-5 time per cold analysis (tokenize, parse, walk, fingerprint; PostgreSQL also runs
pglast where installed) of a tile query per dialect, each using only functions every
version of the guard allows, so the same script measures before and after a change to
function lookups. Printed, not asserted.
"""

from __future__ import annotations

import timeit

from token_guard.core.connections import Connection
from token_guard.core.sql import SqlAnalyzer, SqlRefusal

QUERIES: dict[str, tuple[Connection, str]] = {
    "postgres": (
        Connection("postgres", default_path=("app", "public")),
        "SELECT s.id, s.name, ST_AsMVTGeom(ST_Transform(s.geom, 3857), "
        "ST_TileEnvelope(:z, :x, :y)) AS geom, ST_Area(b.geom) AS area "
        "FROM stores AS s JOIN geo.blocks AS b ON ST_Intersects(s.geom, b.geom) "
        "WHERE ST_DWithin(s.geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), 1000) "
        "AND s.city IN (SELECT city FROM geo.cities WHERE ST_Within(geom, "
        "ST_MakeEnvelope(-10, 35, 5, 45, 4326))) ORDER BY area DESC LIMIT 500",
    ),
    "bigquery": (
        Connection("bigquery"),
        "SELECT s.id, ST_AsGeoJSON(ST_Simplify(s.geom, 10)) AS geom, ST_Area(b.geom) AS a "
        "FROM `proj.ds.stores` AS s JOIN proj.ds.blocks AS b ON ST_Intersects(s.geom, b.geom) "
        "WHERE ST_DWithin(s.geom, ST_GeogPoint(@lon, @lat), 1000) AND s.city IN "
        "(SELECT city FROM proj.ds.cities WHERE ST_Within(geom, ST_GeogFromText(@area))) "
        "ORDER BY a DESC LIMIT 500",
    ),
    "snowflake": (
        Connection("snowflake", default_path=("DB", "PUBLIC")),
        "SELECT s.id, ST_AsGeoJSON(s.geom) AS g, H3_LATLNG_TO_CELL(s.lat, s.lon, 8) AS h3 "
        "FROM stores AS s JOIN blocks AS b ON ST_Intersects(s.geom, b.geom) "
        "WHERE ST_DWithin(s.geom, ST_MakePoint(:lon, :lat), 1000) LIMIT 500",
    ),
}


def main() -> None:
    """Print the cold analysis time of each spatial query."""
    for dialect, (conn, query) in QUERIES.items():
        analyzer = SqlAnalyzer()
        result = analyzer.analyze(query, conn)
        shown = result.reason if isinstance(result, SqlRefusal) else sorted(result.tables)
        print(f"{dialect}: {shown}")

        def cold(a: SqlAnalyzer = analyzer, q: str = query, c: Connection = conn) -> object:
            a._queries.clear()  # a miss every call: the whole analysis is timed
            return a.analyze(q, c)

        best = min(timeit.repeat(cold, number=50, repeat=5)) / 50 * 1e6
        print(f"  cold analysis {best:9.1f} µs")


if __name__ == "__main__":
    main()
