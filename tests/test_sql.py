"""token_guard.core.sql: which tables a query reads, name normalisation, fingerprints, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sql_corpus import BQ, BQD, CORPUS, PG, SF, Expected
from token_guard.core import pg_parser
from token_guard.core.connections import Connection
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer, SqlRefusal, is_system_table

# What refusals say (a part of ``SqlRefusal.reason``), for the tables below.
UNQUALIFIED = "is not fully qualified"
TOO_MANY_PARTS = "has more than 2 parts before '*'"
NOT_WILDCARD = "is not a wildcard source"
NOT_READ_ONLY = "which the guard does not know to be read-only"
RANGE_VARIABLE = "starts like the range variable"
EMPTY_PART = "has an empty part"
CATALOG_OR_SCHEMA = "may name catalog.table or schema.table"
UNKNOWN_CHARACTER = "tokenizer does not know"
OTHER_LANGUAGE = "to another SQL language"
NESTED_COMMENT = "engines differ on whether comments nest"
BACKSLASH = "whether a backslash escapes a quote"

@pytest.fixture(scope="module")
def analyzer() -> SqlAnalyzer:
    return SqlAnalyzer()


@pytest.mark.parametrize(
    ("connection", "query", "expected"),
    [pytest.param(conn, query, expected, id=case_id) for case_id, conn, query, expected in CORPUS],
)
def test_corpus(
    analyzer: SqlAnalyzer, connection: Connection, query: str, expected: Expected
) -> None:
    result = analyzer.analyze(query, connection)
    if isinstance(expected, str):
        assert isinstance(result, SqlRefusal), result
        assert expected in result.reason
        assert result.hint
    else:
        assert isinstance(result, QueryAnalysis), result
        assert set(result.tables) == expected


def test_corpus_is_large_and_covers_three_dialects() -> None:
    assert len(CORPUS) >= 60
    assert {c.dialect for _, c, _, _ in CORPUS} >= {"bigquery", "postgres", "snowflake"}
    assert len({case_id for case_id, _, _, _ in CORPUS}) == len(CORPUS)


def test_repeated_query_is_served_from_cache(analyzer: SqlAnalyzer) -> None:
    query = "SELECT * FROM proj.ds.cached_one"
    first = analyzer.analyze(query, BQ)
    assert analyzer.analyze(query, BQ) is first


def test_refusals_are_cached_too(analyzer: SqlAnalyzer) -> None:
    query = "DELETE FROM proj.ds.t WHERE TRUE"
    first = analyzer.analyze(query, BQ)
    assert isinstance(first, SqlRefusal) and "contains DELETE" in first.reason
    assert analyzer.analyze(query, BQ) is first


def test_cache_is_per_connection_settings(analyzer: SqlAnalyzer) -> None:
    query = "SELECT * FROM stores"
    refused = analyzer.analyze(query, BQ)
    assert isinstance(refused, SqlRefusal) and UNQUALIFIED in refused.reason
    result = analyzer.analyze(query, BQD)
    assert isinstance(result, QueryAnalysis)
    assert result.tables == {("carto-demo-data", "demo_tables", "stores")}


def test_cache_stays_bounded() -> None:
    small = SqlAnalyzer(cache_size=8)
    for i in range(50):
        small.analyze(f"SELECT {i} FROM proj.ds.t", BQ)
    assert len(small._queries) <= 8


# --- size limit ----------------------------------------------------------------------


def _query_of_bytes(size: int) -> str:
    head = "SELECT * FROM proj.ds.t WHERE s = '"
    return head + "x" * (size - len(head) - 1) + "'"


def test_query_at_the_byte_limit_is_analysed() -> None:
    analyzer = SqlAnalyzer(max_query_bytes=1000)
    query = _query_of_bytes(1000)
    assert len(query.encode()) == 1000
    assert isinstance(analyzer.analyze(query, BQ), QueryAnalysis)


def test_query_over_the_byte_limit_is_refused_before_parsing() -> None:
    analyzer = SqlAnalyzer(max_query_bytes=1000)
    result = analyzer.analyze(_query_of_bytes(1001), BQ)
    assert isinstance(result, SqlRefusal) and "longer than 1000 bytes" in result.reason
    assert "1000 bytes" in result.reason


def test_byte_limit_counts_utf8_bytes_not_characters() -> None:
    analyzer = SqlAnalyzer(max_query_bytes=1000)
    head = "SELECT * FROM proj.ds.t WHERE s = '"
    query = head + "é" * 490 + "'"  # fewer than 1000 characters, more than 1000 bytes
    assert len(query) < 1000 < len(query.encode())
    result = analyzer.analyze(query, BQ)
    assert isinstance(result, SqlRefusal) and "longer than 1000 bytes" in result.reason


def test_default_limit_is_64_kib(analyzer: SqlAnalyzer) -> None:
    assert isinstance(analyzer.analyze(_query_of_bytes(65536), BQ), QueryAnalysis)
    result = analyzer.analyze(_query_of_bytes(65537), BQ)
    assert isinstance(result, SqlRefusal) and "longer than 65536 bytes" in result.reason


def test_deep_nesting_is_refused_not_crashing(analyzer: SqlAnalyzer) -> None:
    query = "SELECT " + "(" * 3000 + "1" + ")" * 3000
    nested = "SELECT * FROM " + "(SELECT * FROM " * 3000 + "proj.ds.t" + ") AS s" * 3000
    for deep in (query, nested):
        result = analyzer.analyze(deep, BQ)
        assert isinstance(result, SqlRefusal) and "nests too deeply" in result.reason


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "a", "b"),
    [
        pytest.param(BQ, "`proj.ds.t`", "`proj`.`ds`.`t`", id="bq-backtick-path-vs-parts"),
        pytest.param(BQ, "proj.ds.t", "`proj`.ds.`t`", id="bq-quoting-irrelevant"),
        pytest.param(BQ, "PROJ.ds.t", "proj.ds.t", id="bq-project-case-folds"),
        pytest.param(BQD, "retail_stores", "carto-demo-data.demo_tables.retail_stores",
                     id="bq-default-path"),
        pytest.param(PG, "Public.Stores", "public.stores", id="pg-unquoted-folds-lower"),
        pytest.param(PG, '"public"."stores"', "PUBLIC.STORES", id="pg-quoted-lower-same"),
        pytest.param(PG, "stores", "app.public.stores", id="pg-default-path"),
        pytest.param(SF, "db.public.t", "DB.PUBLIC.T", id="sf-unquoted-folds-upper"),
        pytest.param(SF, '"DB"."PUBLIC"."T"', "db.public.t", id="sf-quoted-upper-same"),
    ],
)
def test_names_that_are_the_same_table(
    analyzer: SqlAnalyzer, connection: Connection, a: str, b: str
) -> None:
    key_a = analyzer.table_key(a, connection)
    assert not isinstance(key_a, SqlRefusal), key_a
    assert key_a == analyzer.table_key(b, connection)


@pytest.mark.parametrize(
    ("connection", "a", "b"),
    [
        pytest.param(BQ, "proj.DS.t", "proj.ds.t", id="bq-dataset-case-sensitive"),
        pytest.param(BQ, "proj.ds.T", "proj.ds.t", id="bq-table-case-sensitive"),
        pytest.param(PG, 'public."Stores"', "public.stores", id="pg-quoted-keeps-case"),
        pytest.param(SF, 'db.public."t"', "db.public.t", id="sf-quoted-keeps-case"),
        pytest.param(PG, '"a.b".c', 'a."b.c"', id="pg-dots-inside-quotes"),
    ],
)
def test_names_that_are_different_tables(
    analyzer: SqlAnalyzer, connection: Connection, a: str, b: str
) -> None:
    key_a = analyzer.table_key(a, connection)
    assert not isinstance(key_a, SqlRefusal), key_a
    assert key_a != analyzer.table_key(b, connection)


@pytest.mark.parametrize(
    ("connection", "name"),
    [
        ("carto-demo-data.demo_tables.retail_stores", BQ),
        ("Geo.Stores", PG),
        ('"My DB".geo."Stores"', SF),
    ],
)
def test_query_tables_match_table_key_of_the_same_name(
    analyzer: SqlAnalyzer, connection: str, name: Connection
) -> None:
    # (arguments swapped by name only: parametrize ids stay readable)
    conn, text = name, connection
    result = analyzer.analyze(f"SELECT * FROM {text}", conn)
    assert isinstance(result, QueryAnalysis)
    assert result.tables == {analyzer.table_key(text, conn)}


@pytest.mark.parametrize(
    ("connection", "name", "reason"),
    [
        pytest.param(BQ, "retail_stores", "not fully qualified", id="bq-short"),
        pytest.param(BQ, "a.b.c.d", "more than 3 parts", id="bq-long"),
        pytest.param(BQ, "proj.ds.t; DROP TABLE x", "not a plain table name", id="semicolon"),
        pytest.param(BQ, "proj.ds.t -- x", "not a plain table name", id="comment"),
        pytest.param(BQ, "proj.ds.t AS x", "not a table name", id="alias"),
        pytest.param(BQ, "proj.ds.t WHERE 1=1", "not a table name", id="clause"),
        pytest.param(BQ, "proj.ds.fn(1)", "computed part", id="function"),
        pytest.param(BQ, "proj.ds.events_*", "wildcard table", id="wildcard-table"),
        pytest.param(BQ, "", "not a table name", id="empty"),
        pytest.param(PG, "pg_authid", "system catalog", id="pg-catalog-short"),
    ],
)
def test_refused_names(
    analyzer: SqlAnalyzer, connection: Connection, name: str, reason: str
) -> None:
    result = analyzer.table_key(name, connection)
    assert isinstance(result, SqlRefusal), result
    assert reason in result.reason


def test_short_name_refusal_says_how_to_qualify(analyzer: SqlAnalyzer) -> None:
    result = analyzer.table_key("stores", BQ)
    assert isinstance(result, SqlRefusal)
    assert "qualify it as proj.dataset.table" in result.hint


@pytest.mark.parametrize(
    ("connection", "source", "expected"),
    [
        pytest.param(BQ, "carto-demo-data.shared.*", ("carto-demo-data", "shared"), id="bq"),
        pytest.param(BQ, "`Proj`.`ds`.*", ("proj", "ds"), id="bq-quoted"),
        pytest.param(BQD, "other.*", ("carto-demo-data", "other"), id="bq-default"),
        pytest.param(PG, "Geo.*", ("app", "geo"), id="pg-default-db"),
        pytest.param(SF, "db.public.*", ("DB", "PUBLIC"), id="sf"),
    ],
)
def test_wildcard_prefix(
    analyzer: SqlAnalyzer, connection: Connection, source: str, expected: tuple[str, ...]
) -> None:
    assert analyzer.wildcard_prefix(source, connection) == expected


@pytest.mark.parametrize(
    ("connection", "source", "reason"),
    [
        pytest.param(BQ, "ds.*", UNQUALIFIED, id="bq-too-short"),
        pytest.param(BQ, "a.b.c.*", TOO_MANY_PARTS, id="bq-too-long"),
        pytest.param(BQ, "proj.ds", NOT_WILDCARD, id="no-star"),
        pytest.param(BQ, "proj.ds.*; DROP", NOT_WILDCARD, id="trailing-junk"),
    ],
)
def test_refused_wildcards(
    analyzer: SqlAnalyzer, connection: Connection, source: str, reason: str
) -> None:
    result = analyzer.wildcard_prefix(source, connection)
    assert isinstance(result, SqlRefusal) and reason in result.reason, result


@pytest.mark.parametrize(
    ("key", "system"),
    [
        pytest.param(("proj", "ds", "INFORMATION_SCHEMA.TABLES"), True, id="bq-dataset-view"),
        pytest.param(("proj", "region-us", "INFORMATION_SCHEMA.JOBS"), True, id="bq-region"),
        pytest.param(("DB", "INFORMATION_SCHEMA", "TABLES"), True, id="sf"),
        pytest.param(("app", "information_schema", "tables"), True, id="pg"),
        pytest.param(("app", "pg_catalog", "pg_authid"), True, id="pg-catalog"),
        pytest.param(("proj", "ds", "__TABLES__"), True, id="bq-meta-table"),
        pytest.param(("SNOWFLAKE", "ACCOUNT_USAGE", "QUERY_HISTORY"), True, id="sf-usage"),
        pytest.param(("system", "access", "audit"), True, id="databricks-system"),
        pytest.param(("proj", "ds", "stores"), False, id="plain"),
        pytest.param(("proj", "ds", "schema_info"), False, id="similar-name"),
    ],
)
def test_is_system_table(key: tuple[str, ...], system: bool) -> None:
    assert is_system_table(key) is system


# --- functions -----------------------------------------------------------------------


def test_listed_function_schema_is_allowed() -> None:
    analyzer = SqlAnalyzer(allowed_functions={"carto-un.carto.*"})
    query = "SELECT `carto-un`.carto.H3_BOUNDARY(h3) FROM proj.ds.t"
    result = analyzer.analyze(query, BQ)
    assert isinstance(result, QueryAnalysis), result
    other = analyzer.analyze("SELECT `evil`.carto.H3_BOUNDARY(h3) FROM proj.ds.t", BQ)
    assert isinstance(other, SqlRefusal) and NOT_READ_ONLY in other.reason


def test_listing_a_name_does_not_allow_it_in_another_schema() -> None:
    analyzer = SqlAnalyzer(allowed_functions={"my_fn"})
    assert isinstance(analyzer.analyze("SELECT my_fn(1)", PG), QueryAnalysis)
    other = analyzer.analyze("SELECT other.my_fn(1)", PG)
    assert isinstance(other, SqlRefusal) and NOT_READ_ONLY in other.reason


def test_empty_function_list_keeps_only_the_catalogued_builtins() -> None:
    analyzer = SqlAnalyzer(allowed_functions=())
    assert isinstance(analyzer.analyze("SELECT ST_X(g) FROM proj.ds.t", BQ), QueryAnalysis)
    result = analyzer.analyze("SELECT ST_NOT_A_BUILTIN(g) FROM proj.ds.t", BQ)
    assert isinstance(result, SqlRefusal) and NOT_READ_ONLY in result.reason


# --- fingerprints --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "a", "b"),
    [
        pytest.param(BQ, "SELECT * FROM proj.ds.t WHERE city = @city",
                     "select *\n  from   proj.ds.t\twhere city=@city", id="whitespace-case"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t -- note\nWHERE x = 1",
                     "SELECT * /* c */ FROM proj.ds.t WHERE x = 1", id="comments"),
        pytest.param(BQ, "SELECT * FROM `proj.ds.t`", "SELECT * FROM proj.ds.t",
                     id="table-spelling"),
        pytest.param(BQD, "SELECT * FROM retail_stores",
                     "SELECT * FROM `carto-demo-data.demo_tables.retail_stores`",
                     id="default-path"),
        pytest.param(PG, "SELECT * FROM Stores WHERE city = :city",
                     "select * from app.public.stores where city = :city", id="pg"),
        pytest.param(SF, "SELECT * FROM t;", "SELECT * FROM db.public.T", id="sf-semicolon"),
    ],
)
def test_equal_fingerprints(analyzer: SqlAnalyzer, connection: Connection, a: str, b: str) -> None:
    fa = analyzer.fingerprint(a, connection)
    assert isinstance(fa, str), fa
    assert fa == analyzer.fingerprint(b, connection)


@pytest.mark.parametrize(
    ("connection", "a", "b"),
    [
        pytest.param(BQ, "SELECT * FROM proj.ds.t WHERE city = 'Paris'",
                     "SELECT * FROM proj.ds.t WHERE city = 'Rome'", id="literal"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t", "SELECT * FROM proj.ds.u", id="table"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t", "SELECT * FROM proj.DS.t",
                     id="bq-dataset-case"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t WHERE city = @city",
                     "SELECT * FROM proj.ds.t WHERE city = @town", id="parameter-name"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t WHERE x = 1",
                     "SELECT * FROM proj.ds.t WHERE x = 1 OR TRUE", id="extra-clause"),
        pytest.param(PG, 'SELECT * FROM "Stores"', "SELECT * FROM Stores", id="pg-quoted"),
        pytest.param(BQD, "SELECT * FROM t", "SELECT * FROM T", id="bq-short-case"),
    ],
)
def test_different_fingerprints(
    analyzer: SqlAnalyzer, connection: Connection, a: str, b: str
) -> None:
    fa = analyzer.fingerprint(a, connection)
    fb = analyzer.fingerprint(b, connection)
    assert isinstance(fa, str) and isinstance(fb, str)
    assert fa != fb


def test_fingerprint_matches_analysis(analyzer: SqlAnalyzer) -> None:
    query = "SELECT * FROM proj.ds.t"
    result = analyzer.analyze(query, BQ)
    assert isinstance(result, QueryAnalysis)
    assert analyzer.fingerprint(query, BQ) == result.fingerprint


def test_fingerprint_of_a_refused_query_is_a_refusal(analyzer: SqlAnalyzer) -> None:
    result = analyzer.fingerprint("DROP TABLE proj.ds.t", BQ)
    assert isinstance(result, SqlRefusal) and "contains DROP" in result.reason


# --- property: nesting never hides a table -------------------------------------------

_NAMES = ("t1", "t2", "t3", "stores")
_PROP = Connection("bigquery", default_path=("proj", "ds"))


@st.composite
def _queries(draw: st.DrawFn, depth: int = 3, scope: frozenset[str] = frozenset()) -> (
    tuple[str, frozenset[tuple[str, ...]]]
):
    """A query and the tables it reads, built so that the oracle is the construction."""
    shape = draw(st.sampled_from(["leaf"] if depth == 0 else
                                 ["leaf", "union", "subquery", "join", "in", "scalar", "cte"]))
    if shape == "leaf":
        name = draw(st.sampled_from(_NAMES))
        form = draw(st.sampled_from(["short", "qualified", "backtick", "parts"]))
        if form == "short":
            # A short name is the CTE when one of that name is in scope, else the table.
            tables = frozenset() if name in scope else frozenset({("proj", "ds", name)})
            return f"SELECT * FROM {name}", tables
        text = {
            "qualified": f"proj.ds.{name}",
            "backtick": f"`proj.ds.{name}`",
            "parts": f"`proj`.ds.`{name}`",
        }[form]
        return f"SELECT * FROM {text}", frozenset({("proj", "ds", name)})
    a, ta = draw(_queries(depth - 1, scope))
    if shape == "subquery":
        return f"SELECT * FROM ({a}) AS s", ta
    if shape == "cte":
        name = draw(st.sampled_from(_NAMES))
        body, tb = a, ta  # the body does not see its own name
        main, tm = draw(_queries(depth - 1, scope | {name}))
        return f"WITH {name} AS ({body}) SELECT * FROM ({main}) AS q", tb | tm
    b, tb = draw(_queries(depth - 1, scope))
    if shape == "union":
        op = draw(st.sampled_from(["UNION ALL", "UNION DISTINCT", "INTERSECT DISTINCT"]))
        return f"({a}) {op} ({b})", ta | tb
    if shape == "join":
        return f"SELECT * FROM ({a}) AS x JOIN ({b}) AS y ON TRUE", ta | tb
    if shape == "in":
        return f"SELECT * FROM ({a}) AS x WHERE 1 IN ({b})", ta | tb
    return f"SELECT ({b}) AS v FROM ({a}) AS x", ta | tb


@settings(max_examples=150, deadline=None)
@given(_queries())
def test_analysis_finds_exactly_the_tables_built_in(
    case: tuple[str, frozenset[tuple[str, ...]]],
) -> None:
    query, tables = case
    result = SqlAnalyzer().analyze(query, _PROP)
    assert isinstance(result, QueryAnalysis), (query, result)
    assert result.tables == tables, query


@settings(max_examples=100, deadline=None)
@given(_queries(), st.sampled_from([" ", "\n", "\t  ", " /* x */ "]))
def test_fingerprint_ignores_spacing_and_comments(
    case: tuple[str, frozenset[tuple[str, ...]]], gap: str
) -> None:
    query, _ = case
    analyzer = SqlAnalyzer()
    spaced = query.replace(" ", gap)
    assert analyzer.fingerprint(query, _PROP) == analyzer.fingerprint(spaced, _PROP)


# --- never narrower than the engine ----------------------------------------------------

RS = Connection("redshift", default_path=("db", "public"))
SFA = Connection("snowflake", default_path=("ANALYTICS",))
DUCK = Connection("duckdb", default_path=("db", "main"))
DBX = Connection("databricks", default_path=("main", "default"))
SECRET = ("proj", "ds", "secret")


@pytest.mark.parametrize(
    ("connection", "query", "reason"),
    [
        # BigQuery reads the table `proj.ds.secret` (a quoted path is one name there);
        # sqlglot made it an UNNEST of the alias `proj`.
        pytest.param(BQ, "SELECT s.* FROM proj.ds.allowed AS proj, `proj.ds.secret` AS s",
                     RANGE_VARIABLE, id="bq-alias-then-quoted-path"),
        pytest.param(BQ, "WITH proj AS (SELECT 1 AS x) SELECT * FROM proj, `proj.ds.secret`",
                     RANGE_VARIABLE, id="bq-cte-then-quoted-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.allowed AS proj, `proj.ds`.secret",
                     RANGE_VARIABLE, id="bq-alias-then-quoted-prefix"),
        pytest.param(BQ, "SELECT * FROM proj.ds.allowed AS proj, `proj`.`ds.secret`",
                     RANGE_VARIABLE, id="bq-alias-then-quoted-suffix"),
        pytest.param(BQ, "SELECT * FROM proj.ds.allowed AS Proj, `proj.ds.secret`",
                     RANGE_VARIABLE, id="bq-alias-case-then-quoted-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.allowed AS proj CROSS JOIN `proj.ds.secret`",
                     RANGE_VARIABLE, id="bq-cross-join-quoted-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.allowed AS proj, `proj.ds.secret` AS s, s.x",
                     RANGE_VARIABLE, id="bq-chained-after-quoted-path"),
        pytest.param(RS, 'SELECT * FROM db.public.allowed AS "T", t.secret',
                     RANGE_VARIABLE, id="rs-alias-matches-only-after-folding"),
        pytest.param(BQ, "SELECT * FROM `proj..secret`", EMPTY_PART, id="bq-quoted-empty-part"),
        pytest.param(BQ, "SELECT * FROM `.proj.ds`.t", EMPTY_PART, id="bq-quoted-leading-dot"),
        # Snowflake: RAW..SECRET is RAW.PUBLIC.SECRET, not <default>.RAW.SECRET.
        pytest.param(SFA, "SELECT * FROM RAW..SECRET", EMPTY_PART, id="sf-empty-schema"),
        pytest.param(SF, "SELECT * FROM DB..SECRET", EMPTY_PART, id="sf-empty-schema-full-default"),
        pytest.param(SF, "SELECT * FROM .PUBLIC.SECRET", EMPTY_PART, id="sf-leading-dot"),
        pytest.param(PG, "SELECT * FROM app..secret", EMPTY_PART, id="pg-empty-part"),
        pytest.param(DUCK, "SELECT * FROM db..secret", EMPTY_PART, id="duck-empty-part"),
        pytest.param(BQD, "SELECT * FROM proj..secret", EMPTY_PART, id="bq-empty-part"),
        # DuckDB reads a two-part name as catalog.table when no such schema exists.
        pytest.param(DUCK, "SELECT * FROM other.secret",
                     CATALOG_OR_SCHEMA, id="duck-two-part-ambiguous"),
        # DuckDB quotes identifiers with backticks; sqlglot's DuckDB tokenizer does not
        # know them and read the rest as a comment (found by the differential fuzz).
        pytest.param(DUCK, "SELECT `--x` FROM db.main.secret",
                     UNKNOWN_CHARACTER, id="duck-backtick-comment"),
        pytest.param(PG, "SELECT `--x` FROM app.public.secret",
                     UNKNOWN_CHARACTER, id="pg-backtick"),
        pytest.param(SF, "SELECT `--x` FROM DB.PUBLIC.SECRET", UNKNOWN_CHARACTER, id="sf-backtick"),
        pytest.param(BQ, "#legacySQL\nSELECT x FROM proj.ds.ok",
                     OTHER_LANGUAGE, id="bq-legacy-sql"),
        pytest.param(BQ, "  #LegacySQL\nSELECT x FROM proj.ds.ok",
                     OTHER_LANGUAGE, id="bq-legacy-sql-spaced"),
        # Comments: engines differ on nesting, so a '/*' inside a comment is refused.
        pytest.param(PG, "SELECT 1 /* /* */ , (SELECT 1 FROM app.public.secret) -- */",
                     NESTED_COMMENT, id="pg-nested-comment"),
        pytest.param(BQ, "SELECT 1 /* /* */ FROM proj.ds.ok /* */ */",
                     NESTED_COMMENT, id="bq-nested-comment"),
        pytest.param(RS, "SELECT 1 /* /* */ , (SELECT 1 FROM db.public.secret) -- */",
                     NESTED_COMMENT, id="rs-nested-comment"),
        # Backslash in strings: an escape under some settings (PostgreSQL
        # standard_conforming_strings=off, Spark escapedStringLiterals), not under others.
        pytest.param(PG, "SELECT 'a\\' , (SELECT 1 FROM app.public.secret) -- '",
                     BACKSLASH, id="pg-backslash-string"),
        pytest.param(RS, "SELECT 'a\\' , (SELECT 1 FROM db.public.secret) -- '",
                     BACKSLASH, id="rs-backslash-string"),
        pytest.param(DBX, "SELECT 'a\\' , (SELECT 1 FROM main.x.secret) -- '",
                     BACKSLASH, id="dbx-backslash-string"),
    ],
)
def test_engine_reads_more_than_sqlglot_sees(
    analyzer: SqlAnalyzer, connection: Connection, query: str, reason: str
) -> None:
    result = analyzer.analyze(query, connection)
    assert isinstance(result, SqlRefusal) and reason in result.reason, result
    assert result.hint


@pytest.mark.parametrize(
    ("connection", "query", "tables"),
    [
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t, t.arr", {("proj", "ds", "t")},
                     id="bq-alias-array-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t, t.arr AS a", {("proj", "ds", "t")},
                     id="bq-table-name-array-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t, t.s.arr", {("proj", "ds", "t")},
                     id="bq-alias-struct-array-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t CROSS JOIN `t`.arr",
                     {("proj", "ds", "t")}, id="bq-quoted-alias-array-path"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t, t.arr AS a, a.inner_arr",
                     {("proj", "ds", "t")}, id="bq-chained-array-paths"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS x, proj.ds.secret", {("proj", "ds", "t"),
                     SECRET}, id="bq-path-not-an-alias-is-a-table"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t, UNNEST([1, 2]) AS x", {("proj", "ds", "t")},
                     id="bq-unnest-of-a-literal"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t CROSS JOIN UNNEST(GENERATE_ARRAY(1, t.n))",
                     {("proj", "ds", "t")}, id="bq-unnest-of-a-call"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t, UNNEST(t.arr) WITH OFFSET AS o",
                     {("proj", "ds", "t")}, id="bq-unnest-with-offset"),
        pytest.param(BQ, "SELECT * FROM proj.ds.t AS t, UNNEST((t.arr)) AS a",
                     {("proj", "ds", "t")}, id="bq-unnest-parenthesised"),
        pytest.param(RS, "SELECT * FROM db.public.t AS t, t.arr AS a",
                     {("db", "public", "t")}, id="rs-partiql-navigation"),
        pytest.param(SF, "SELECT * FROM DB.PUBLIC.T", {("DB", "PUBLIC", "T")}, id="sf-plain"),
        pytest.param(DUCK, "SELECT * FROM db.main.t JOIN t2 USING (id)",
                     {("db", "main", "t"), ("db", "main", "t2")}, id="duck-one-and-three"),
    ],
)
def test_shapes_the_engine_reads_as_columns_stay_allowed(
    analyzer: SqlAnalyzer, connection: Connection, query: str, tables: set[tuple[str, ...]]
) -> None:
    result = analyzer.analyze(query, connection)
    assert isinstance(result, QueryAnalysis), result
    assert set(result.tables) == tables


def test_implicit_unnest_fingerprint_matches_explicit_unnest(analyzer: SqlAnalyzer) -> None:
    a = analyzer.fingerprint("SELECT * FROM proj.ds.t AS t, t.arr", BQ)
    b = analyzer.fingerprint("SELECT * FROM proj.ds.t AS t CROSS JOIN UNNEST(t.arr)", BQ)
    assert isinstance(a, str) and a == b


@pytest.mark.parametrize(
    ("connection", "name", "reason"),
    [
        pytest.param(SFA, "RAW..SECRET", EMPTY_PART, id="sf-empty-schema"),
        pytest.param(SF, ".PUBLIC.SECRET", EMPTY_PART, id="sf-leading-dot"),
        pytest.param(PG, "app..secret", EMPTY_PART, id="pg-empty-part"),
        pytest.param(DUCK, "other.secret", CATALOG_OR_SCHEMA, id="duck-two-part"),
    ],
)
def test_ambiguous_names_are_refused(
    analyzer: SqlAnalyzer, connection: Connection, name: str, reason: str
) -> None:
    result = analyzer.table_key(name, connection)
    assert isinstance(result, SqlRefusal) and reason in result.reason, result


@pytest.mark.parametrize(
    ("connection", "source", "reason"),
    [
        pytest.param(SFA, "RAW..*", EMPTY_PART, id="sf-empty-schema"),
        pytest.param(PG, "app..*", EMPTY_PART, id="pg-empty-part"),
    ],
)
def test_ambiguous_wildcards_are_refused(
    analyzer: SqlAnalyzer, connection: Connection, source: str, reason: str
) -> None:
    result = analyzer.wildcard_prefix(source, connection)
    assert isinstance(result, SqlRefusal) and reason in result.reason, result


def test_redshift_quoted_names_keep_their_case(analyzer: SqlAnalyzer) -> None:
    # With enable_case_sensitive_identifier on, "Secret" and secret are two tables.
    assert analyzer.table_key('db.public."Secret"', RS) != analyzer.table_key(
        "db.public.secret", RS
    )


def test_bigquery_cte_names_match_only_as_written(analyzer: SqlAnalyzer) -> None:
    result = analyzer.analyze("WITH Secret AS (SELECT 1 AS x) SELECT * FROM secret", BQD)
    assert isinstance(result, QueryAnalysis)
    assert result.tables == {("carto-demo-data", "demo_tables", "secret")}


@pytest.mark.parametrize(
    ("connection", "allowed", "query"),
    [
        # BigQuery dataset names (and UDF names) are case-sensitive.
        pytest.param(BQ, {"carto-un.carto.*"}, "SELECT `carto-un`.CARTO.H3_X(h) FROM proj.ds.t",
                     id="bq-dataset-case"),
        pytest.param(BQ, {"carto-un.carto.h3_x"}, "SELECT `carto-un`.carto.H3_X(h) FROM p.d.t",
                     id="bq-udf-case"),
        pytest.param(BQ, {"carto-un.carto.*"}, "SELECT `carto-un.CARTO`.H3_X(h) FROM p.d.t",
                     id="bq-dataset-case-quoted-path"),
        # A quoted name is exact in PostgreSQL/Snowflake: not the built-in it resembles.
        pytest.param(PG, {"st_area"}, 'SELECT "ST_Area"(g) FROM app.public.t', id="pg-quoted"),
        pytest.param(SF, {"st_area"}, 'SELECT "st_area"(g) FROM DB.PUBLIC.T', id="sf-quoted"),
    ],
)
def test_function_names_compare_by_the_dialect_rule(
    connection: Connection, allowed: set[str], query: str
) -> None:
    result = SqlAnalyzer(allowed_functions=allowed).analyze(query, connection)
    assert isinstance(result, SqlRefusal) and NOT_READ_ONLY in result.reason, result


@pytest.mark.parametrize(
    ("connection", "allowed", "query"),
    [
        pytest.param(BQ, {"carto-un.carto.*"}, "SELECT `carto-un`.carto.H3_X(h) FROM p.d.t",
                     id="bq-schema-wildcard"),
        pytest.param(BQ, {"carto-un.carto.H3_X"}, "SELECT `carto-un.carto.H3_X`(h) FROM p.d.t",
                     id="bq-quoted-path"),
        pytest.param(BQ, {"carto-un.carto.H3_X"}, "SELECT `Carto-Un`.carto.H3_X(h) FROM p.d.t",
                     id="bq-project-case-insensitive"),
        pytest.param(PG, {"st_area"}, "SELECT ST_Area(g) FROM app.public.t", id="pg-unquoted"),
        pytest.param(SF, {"st_area"}, "SELECT st_area(g) FROM DB.PUBLIC.T", id="sf-unquoted"),
    ],
)
def test_function_names_that_the_rule_allows(
    connection: Connection, allowed: set[str], query: str
) -> None:
    result = SqlAnalyzer(allowed_functions=allowed).analyze(query, connection)
    assert isinstance(result, QueryAnalysis), result


# --- PostgreSQL's own parser must agree (pglast) -----------------------------------------

PG_BOTH = pg_parser


@pytest.mark.skipif(not PG_BOTH.AVAILABLE, reason="pglast is not installed")
def test_postgres_parser_must_accept_the_query() -> None:
    query = "SELECT 1 FROM app.public.s UNION ALL WITH t AS (SELECT 1) SELECT 1 FROM t"
    assert isinstance(SqlAnalyzer(postgres_parser_check=False).analyze(query, PG), QueryAnalysis)
    result = SqlAnalyzer(postgres_parser_check=True).analyze(query, PG)
    assert isinstance(result, SqlRefusal) and "PostgreSQL's parser rejects" in result.reason


@pytest.mark.skipif(not PG_BOTH.AVAILABLE, reason="pglast is not installed")
def test_relation_only_postgres_reads_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = PG_BOTH.relations
    monkeypatch.setattr(PG_BOTH, "relations", lambda q: real(q) | {(None, "x", "hidden")})
    result = SqlAnalyzer(postgres_parser_check=True).analyze("SELECT * FROM s", PG)
    assert isinstance(result, SqlRefusal) and "'x.hidden'" in result.reason


@pytest.mark.skipif(not PG_BOTH.AVAILABLE, reason="pglast is not installed")
@pytest.mark.parametrize(
    "query",
    [
        pytest.param("SELECT * FROM s WHERE a = :a AND b = ? AND c::int = 1", id="placeholders"),
        pytest.param("SELECT a[1:2], a[x:y] FROM s WHERE t = :t", id="slices"),
        pytest.param("WITH c AS (SELECT * FROM s) SELECT * FROM c JOIN app.public.u ON TRUE",
                     id="cte"),
    ],
)
def test_postgres_parser_agrees_on_plain_queries(query: str) -> None:
    assert isinstance(SqlAnalyzer(postgres_parser_check=True).analyze(query, PG), QueryAnalysis)


def test_postgres_parser_check_needs_pglast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PG_BOTH, "AVAILABLE", False)
    with pytest.raises(ValueError, match="pglast"):
        SqlAnalyzer(postgres_parser_check=True)
    assert isinstance(SqlAnalyzer().analyze("SELECT * FROM s", PG), QueryAnalysis)


@pytest.mark.parametrize(
    ("connection", "name"),
    [
        pytest.param(PG, "app.public." + "a" * 64, id="pg-64-bytes"),
        pytest.param(RS, "db.public." + "a" * 128, id="rs-128-bytes"),
    ],
)
def test_names_the_database_would_truncate_are_refused(
    analyzer: SqlAnalyzer, connection: Connection, name: str
) -> None:
    for result in (analyzer.table_key(name, connection),
                   analyzer.analyze(f"SELECT * FROM {name}", connection)):
        assert isinstance(result, SqlRefusal) and "is longer than" in result.reason, result
    assert isinstance(analyzer.table_key(name[:-1], connection), tuple)
