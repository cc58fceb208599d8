"""PostGIS operators on PostgreSQL connections: they parse, and their operands are checked."""

from __future__ import annotations

import pytest

from token_guard.core import pg_parser
from token_guard.core.connections import Connection
from token_guard.core.postgis import SPATIAL_OPERATORS, PostGIS
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer, SqlRefusal

PG = Connection("postgres", default_path=("app", "public"))
T = ("app", "public", "t")
SECRET = ("app", "public", "secret")
ANALYZER = SqlAnalyzer()
# Every operator of PostGIS's reference (doc/reference_operator.xml), plain and raster.
OPERATORS = sorted(SPATIAL_OPERATORS - {"="})


@pytest.mark.parametrize("op", OPERATORS)
def test_each_operator_parses_and_reads_only_its_tables(op: str) -> None:
    query = f"SELECT id FROM t WHERE geom {op} ST_MakeEnvelope(0, 0, 1, 1, 4326)"
    result = ANALYZER.analyze(query, PG)
    assert isinstance(result, QueryAnalysis), result
    assert result.tables == {T}


@pytest.mark.parametrize("op", OPERATORS)
def test_a_subquery_operand_is_checked(op: str) -> None:
    query = f"SELECT id FROM t WHERE geom {op} (SELECT geom FROM secret LIMIT 1)"
    result = ANALYZER.analyze(query, PG)
    assert isinstance(result, QueryAnalysis), result
    assert result.tables == {T, SECRET}


@pytest.mark.parametrize("op", OPERATORS)
def test_knn_ordering_reads_the_ordered_table(op: str) -> None:
    query = f"SELECT id FROM t ORDER BY geom {op} (SELECT geom FROM secret) LIMIT 5"
    result = ANALYZER.analyze(query, PG)
    assert isinstance(result, QueryAnalysis) and SECRET in result.tables


def test_operators_keep_their_own_fingerprint() -> None:
    prints = set()
    for op in OPERATORS:
        result = ANALYZER.analyze(f"SELECT id FROM t WHERE a {op} b", PG)
        assert isinstance(result, QueryAnalysis)
        prints.add(result.fingerprint)
    assert len(prints) == len(OPERATORS), "two operators share a fingerprint"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("SELECT id FROM t WHERE a OPERATOR(public.&&&) b", id="qualified-operator"),
        pytest.param("SELECT id FROM t WHERE a OPERATOR(===) b", id="unknown-operator"),
        pytest.param("SELECT @ -5 FROM t", id="prefix-at"),
        pytest.param("SELECT id FROM t WHERE a &&&& b", id="not-an-operator"),
    ],
)
def test_other_operators_stay_refused(query: str) -> None:
    assert isinstance(ANALYZER.analyze(query, PG), SqlRefusal)


@pytest.mark.skipif(not pg_parser.AVAILABLE, reason="pglast is not installed")
@pytest.mark.parametrize("op", OPERATORS)
def test_postgresql_parser_agrees(op: str) -> None:
    query = (
        f"SELECT t.id FROM app.public.t AS t JOIN app.geo.u AS u ON t.geom {op} u.geom "
        f"WHERE t.geom {op} (SELECT geom FROM app.public.secret)"
    )
    names = pg_parser.relations(query)
    result = ANALYZER.analyze(query, PG)
    assert isinstance(result, QueryAnalysis), result
    assert {tuple(p for p in n if p) for n in names} == result.tables


def test_the_stock_postgres_dialect_is_unchanged() -> None:
    from sqlglot import parse_one
    from sqlglot.errors import ParseError

    with pytest.raises(ParseError):
        parse_one("SELECT a &&& b", read="postgres")
    assert PostGIS().parse("SELECT a &&& b")[0] is not None
