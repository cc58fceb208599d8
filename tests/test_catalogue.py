"""Per-dialect function catalogues: every entry classified, refused ones refused end to end."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import token_guard as tg
from token_guard.core.catalogue import CATALOGUES
from token_guard.core.connections import Connection
from token_guard.core.records import TokenRecord
from token_guard.core.spec import parse_token_spec
from token_guard.core.sql import DEFAULT_ALLOWED_FUNCTIONS, SqlAnalyzer, SqlRefusal
from token_guard.guard import Guard
from token_guard.stores.memory import MemoryStore

CATALOGUE_DIR = Path(tg.__file__).parent / "core" / "catalogues"
# Connections as the guard sees them, and a table each may read.
DIALECT_TABLES = {
    "bigquery": "proj.ds.t",
    "snowflake": "db.sch.t",
    "databricks": "cat.sch.t",
    "postgres": "db.sch.t",
    "redshift": "db.sch.t",
    "duckdb": "cat.sch.t",
    "sqlite": "t",
}
ANALYZER = SqlAnalyzer()


def _callable(name: str) -> bool:
    return re.fullmatch(r"[a-z_][a-z0-9_$]*", name) is not None


@pytest.mark.parametrize("dialect", sorted(DIALECT_TABLES))
def test_every_catalogued_function_is_classified(dialect: str) -> None:
    lines = (CATALOGUE_DIR / f"{dialect}.tsv").read_text().splitlines()
    entries = [line.split("\t") for line in lines if line and not line.startswith("#")]
    assert entries, f"{dialect}.tsv is empty"
    names = [e[0] for e in entries]
    assert len(names) == len(set(names)), "a name is listed twice"
    for entry in entries:
        assert entry[0] == entry[0].lower() and entry[0].strip() == entry[0]
        assert entry[1] in ("read", "refused"), entry
        if entry[1] == "refused":
            assert len(entry) == 3 and len(entry[2]) > 10, f"{entry[0]}: no reason given"
    catalogue = CATALOGUES[dialect]
    assert len(catalogue.reads) + len(catalogue.refused) == len(entries)
    assert not catalogue.reads & set(catalogue.refused)


@pytest.mark.parametrize("dialect", sorted(DIALECT_TABLES))
def test_refused_functions_stay_refused(dialect: str) -> None:
    conn = Connection(dialect)
    allowed: list[str] = []
    for name in CATALOGUES[dialect].refused:
        if not _callable(name):
            continue
        result = ANALYZER.analyze(f"SELECT {name}(x) FROM {DIALECT_TABLES[dialect]}", conn)
        if not isinstance(result, SqlRefusal):
            allowed.append(name)
    assert allowed == [], f"{dialect}: refused functions the guard allows: {allowed}"


@pytest.mark.parametrize("dialect", sorted(DIALECT_TABLES))
def test_catalogued_reads_are_allowed(dialect: str) -> None:
    conn = Connection(dialect)
    unknown = []
    for name in sorted(CATALOGUES[dialect].reads):
        if not _callable(name):
            continue
        result = ANALYZER.analyze(f"SELECT {name}(x) FROM {DIALECT_TABLES[dialect]}", conn)
        if isinstance(result, SqlRefusal) and "does not know" in result.reason:
            unknown.append(name)
    assert unknown == []


REFUSED_EXAMPLES = [
    pytest.param(
        "postgres",
        "SELECT AddGeometryColumn('t', 'g', 4326, 'POINT', 2)",
        id="pg-addgeometrycolumn",
    ),
    pytest.param(
        "postgres",
        "SELECT UpdateGeometrySRID('t', 'g', 3857)",
        id="pg-updategeometrysrid",
    ),
    pytest.param(
        "postgres",
        "SELECT query_to_xml('select * from secret', true, true, '')",
        id="pg-query-to-xml",
    ),
    pytest.param(
        "postgres",
        "SELECT set_config('search_path', 'x', false)",
        id="pg-set-config",
    ),
    pytest.param(
        "postgres",
        "SELECT lo_import('/etc/passwd')",
        id="pg-lo-import",
    ),
    pytest.param(
        "postgres",
        "SELECT pg_read_file('/etc/passwd')",
        id="pg-read-file",
    ),
    pytest.param(
        "postgres",
        "SELECT dblink('host=x', 'select 1')",
        id="pg-dblink",
    ),
    pytest.param(
        "postgres",
        "SELECT * FROM db.sch.t WHERE ST_EstimatedExtent('sch', 't', 'g') IS "
        "NULL",
        id="pg-estimated-extent",
    ),
    pytest.param(
        "postgres",
        "SELECT pgr_dijkstra('SELECT id, source, target, cost FROM secret', 1, "
        "2)",
        id="pg-pgr-dijkstra",
    ),
    pytest.param(
        "postgres",
        "SELECT nextval('seq')",
        id="pg-nextval",
    ),
    pytest.param(
        "postgres",
        "SELECT pg_catalog.set_config('a', 'b', false)",
        id="pg-qualified-set-config",
    ),
    pytest.param(
        "redshift",
        "SELECT current_setting('search_path')",
        id="rs-current-setting",
    ),
    pytest.param(
        "duckdb",
        "SELECT getenv('HOME')",
        id="duck-getenv",
    ),
    pytest.param(
        "duckdb",
        "SELECT current_setting('threads')",
        id="duck-current-setting",
    ),
    pytest.param(
        "bigquery",
        "SELECT ST_REGIONSTATS(geom, 'gs://bucket/x.tif') FROM proj.ds.t",
        id="bq-regionstats",
    ),
    pytest.param(
        "snowflake",
        "SELECT GET_DDL('table', 'secret')",
        id="sf-get-ddl",
    ),
    pytest.param(
        "sqlite",
        "SELECT load_extension('x.so')",
        id="sqlite-load-extension",
    ),
]


@pytest.mark.parametrize(("dialect", "query"), REFUSED_EXAMPLES)
def test_documented_dangerous_functions_are_refused(dialect: str, query: str) -> None:
    path = () if dialect == "sqlite" else ("db", "sch")
    result = ANALYZER.analyze(query, Connection(dialect, default_path=path))
    assert isinstance(result, SqlRefusal)


ALLOWED_EXAMPLES = [
    pytest.param(
        "postgres",
        "SELECT ST_Relate(a.g, b.g), ST_GeometryFromText('POINT(0 0)'), "
        "ST_PointOnSurface(a.g), ST_IsValidReason(a.g) FROM db.sch.a AS a, "
        "db.sch.b AS b",
        id="pg-relate",
    ),
    pytest.param(
        "postgres",
        "SELECT ST_LineLocatePoint(g, ST_MakePoint(0, 0)), ST_3DDistance(g, g),"
        " ST_MakeValid(g), ST_LineInterpolatePoint(g, 0.5), ST_AsEWKT(g) FROM "
        "db.sch.t",
        id="pg-lrs",
    ),
    pytest.param(
        "postgres",
        "SELECT json_build_object('id', id), row_to_json(t) FROM db.sch.t AS t",
        id="pg-json",
    ),
    pytest.param(
        "postgres",
        "SELECT ST_AsMVT(q, 'layer') FROM (SELECT ST_AsMVTGeom(g, "
        "ST_TileEnvelope(1, 0, 0)) AS geom FROM db.sch.t) AS q",
        id="pg-asmvt",
    ),
    pytest.param(
        "postgres",
        "SELECT ST_Value(rast, ST_MakePoint(1, 2)), ST_SummaryStats(rast) FROM "
        "db.sch.r",
        id="pg-raster-read",
    ),
    pytest.param(
        "postgres",
        "SELECT ST_Distance(geog, ST_GeogFromText('POINT(0 0)')::geography) "
        "FROM db.sch.t",
        id="pg-geography",
    ),
    pytest.param(
        "bigquery",
        "SELECT ST_CENTROID_AGG(g), ST_BOUNDINGBOX(g), ST_NUMGEOMETRIES(g), "
        "ST_EXTERIORRING(g) FROM proj.ds.t",
        id="bq-geography",
    ),
    pytest.param(
        "bigquery",
        "SELECT SAFE.ST_GEOGFROMTEXT(w), NET.HOST(u), JSON_VALUE(j, '$.a') FROM"
        " proj.ds.t",
        id="bq-safe-net-json",
    ),
    pytest.param(
        "duckdb",
        "SELECT now(), ST_Area(g) FROM cat.sch.t",
        id="duck-now-spatial",
    ),
    pytest.param(
        "snowflake",
        "SELECT H3_LATLNG_TO_CELL(lat, lon, 8), ST_ASGEOJSON(g) FROM db.sch.t",
        id="sf-h3",
    ),
    pytest.param(
        "databricks",
        "SELECT h3_longlatash3(lon, lat, 7), st_astext(g) FROM cat.sch.t",
        id="dbx-h3-st",
    ),
    pytest.param(
        "redshift",
        "SELECT ST_AsGeoJSON(g), H3_FromLongLat(lon, lat, 7) FROM db.sch.t",
        id="rs-spatial",
    ),
]


@pytest.mark.parametrize(("dialect", "query"), ALLOWED_EXAMPLES)
def test_documented_read_functions_are_allowed(dialect: str, query: str) -> None:
    result = ANALYZER.analyze(query, Connection(dialect))
    assert not isinstance(result, SqlRefusal), result


def test_a_refused_builtin_cannot_be_allowed() -> None:
    with pytest.raises(tg.ConfigurationError, match="set_config"):
        SqlAnalyzer(allowed_functions=["set_config"])
    with pytest.raises(tg.ConfigurationError, match="pg_catalog"):
        SqlAnalyzer(allowed_functions=["pg_catalog.*"])


def test_a_schema_wildcard_does_not_reach_refused_builtins() -> None:
    analyzer = SqlAnalyzer(allowed_functions=["public.*"])
    pg = Connection("postgres")
    allowed = analyzer.analyze("SELECT public.ST_Area(g) FROM db.sch.t", pg)
    assert not isinstance(allowed, SqlRefusal)
    refused = analyzer.analyze("SELECT public.AddGeometryColumn('t', 'g', 4326, 'POINT', 2)", pg)
    assert isinstance(refused, SqlRefusal)


def test_the_default_spatial_list_holds_no_refused_builtin() -> None:
    for dialect, catalogue in CATALOGUES.items():
        assert not DEFAULT_ALLOWED_FUNCTIONS & set(catalogue.refused), dialect


def test_refused_builtins_are_refused_by_the_guard_end_to_end() -> None:
    connections = {f"c_{d}": d for d in DIALECT_TABLES}
    body = {
        "name": "everything",
        "grants": [{"connection_name": c, "source": "*"} for c in connections],
        "referers": [],
        "allowed_apis": ["sql"],
    }
    record = TokenRecord("tok_x", parse_token_spec(body), datetime.now(UTC))
    guard = Guard(store=MemoryStore(), connections=connections)
    compiled = guard.policy.compile(record)
    passed = []
    for conn, dialect in connections.items():
        for name in CATALOGUES[dialect].refused:
            if not _callable(name):
                continue
            query = f"SELECT {name}(x) FROM {DIALECT_TABLES[dialect]}"
            facts = tg.RequestFacts("sql", conn, (tg.Source("query", query),))
            denial = guard.policy.decide(compiled, facts, time.time())
            if denial is None or denial.code != "query_not_allowed":
                passed.append((dialect, name))
    assert passed == []
    query = "SELECT set_config('a', 'b', false)"
    facts = tg.RequestFacts("sql", "c_postgres", (tg.Source("query", query),))
    denial = guard.policy.decide(compiled, facts, time.time())
    assert denial is not None and "changes or reveals session" in denial.message


ROW_SOURCES = [
    pytest.param("SELECT d.geom FROM db.sch.t AS t, ST_Dump(t.g) AS d", {("db", "sch", "t")},
                 id="st-dump-lateral-comma"),
    pytest.param("SELECT * FROM db.sch.t CROSS JOIN LATERAL ST_DumpPoints(t.g) AS p",
                 {("db", "sch", "t")}, id="st-dumppoints-lateral"),
    pytest.param("SELECT * FROM generate_series(1, 3)", set(), id="generate-series"),
    pytest.param("SELECT * FROM ST_Dump((SELECT g FROM db.sch.secret))",
                 {("db", "sch", "secret")}, id="argument-subquery-is-checked"),
]


@pytest.mark.parametrize(("query", "tables"), ROW_SOURCES)
def test_catalogued_builtins_may_be_table_sources(
    query: str, tables: set[tuple[str, ...]]
) -> None:
    result = ANALYZER.analyze(query, Connection("postgres"))
    assert not isinstance(result, SqlRefusal), result
    assert result.tables == tables


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("SELECT * FROM public.ST_Dump(g)", id="qualified"),
        pytest.param("SELECT * FROM db.sch.t, LATERAL other.st_dump(t.g)", id="qualified-lateral"),
        pytest.param("SELECT * FROM my_udf(1)", id="udf"),
        pytest.param("SELECT * FROM query_to_xml('select 1', true, true, '')", id="refused"),
    ],
)
def test_other_table_functions_stay_refused(query: str) -> None:
    analyzer = SqlAnalyzer(allowed_functions=["my_udf", "other.st_dump"])
    assert isinstance(analyzer.analyze(query, Connection("postgres")), SqlRefusal)


CASE_RULES = [
    pytest.param("postgres", 'SELECT "ST_Area"(g) FROM db.sch.t', False, id="pg-quoted-mixed-case"),
    pytest.param("postgres", 'SELECT "st_area"(g) FROM db.sch.t', True, id="pg-quoted-folded"),
    pytest.param("postgres", "SELECT ST_AREA(g) FROM db.sch.t", True, id="pg-unquoted-folds"),
    pytest.param("snowflake", 'SELECT "st_area"(g) FROM db.sch.t', False, id="sf-quoted-lower"),
    pytest.param("snowflake", 'SELECT "ST_AREA"(g) FROM db.sch.t', True, id="sf-quoted-upper"),
    pytest.param("snowflake", "SELECT st_area(g) FROM db.sch.t", True, id="sf-unquoted-folds"),
    pytest.param("bigquery", "SELECT st_Area(g) FROM proj.ds.t", True, id="bq-builtin-any-case"),
    pytest.param("databricks", "SELECT ST_ASTEXT(g) FROM c.s.t", True, id="dbx-any-case"),
    pytest.param("duckdb", "SELECT St_Area(g) FROM c.s.t", True, id="duckdb-any-case"),
]


@pytest.mark.parametrize(("dialect", "query", "allowed"), CASE_RULES)
def test_builtin_names_compare_by_the_dialects_case_rule(
    dialect: str, query: str, allowed: bool
) -> None:
    result = ANALYZER.analyze(query, Connection(dialect))
    assert isinstance(result, SqlRefusal) is not allowed, result


@pytest.mark.parametrize(
    ("query", "allowed"),
    [
        pytest.param("SELECT ST_LineSubstring(g, .25, 0.5) FROM db.sch.t", True,
                     id="leading-dot-number"),
        pytest.param("SELECT * FROM CAST('POINT(0 1)' AS geometry) AS g", True, id="cast-as-row"),
        pytest.param("SELECT * FROM db..t", False, id="empty-part-still-refused"),
        pytest.param("SELECT * FROM .5t", False, id="dot-after-from"),
    ],
)
def test_number_and_cast_spellings(query: str, allowed: bool) -> None:
    result = ANALYZER.analyze(query, Connection("postgres"))
    assert isinstance(result, SqlRefusal) is not allowed, result
