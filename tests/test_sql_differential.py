"""Differential tests: the engine's own parser lists the tables a query reads; the guard
must list each of them too, or refuse the query.

PostgreSQL: ``pglast`` (libpg_query, the PostgreSQL server's parser). DuckDB: DuckDB's
parser through ``json_serialize_sql``. A table the real parser sees and the guard does not
is a failure. Queries: the project's corpus (every entry, read in that engine's dialect),
mutations of it, and generated queries with name tricks (CTE shadowing, quoting, case,
comments, string escapes, dollar quotes, empty name parts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sql_corpus import CORPUS
from token_guard.core.connections import Connection
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer

pglast = pytest.importorskip("pglast")
duckdb = pytest.importorskip("duckdb")

PG = Connection("postgres", default_path=("app", "public"))
DUCK = Connection("duckdb", default_path=("db", "main"))
LONG = os.environ.get("TOKEN_GUARD_LONG_FUZZ") == "1"
EXAMPLES = 20_000 if LONG else 300

Key = tuple[str, ...]


# --- what the engines' parsers read ------------------------------------------------------


def _pg_walk(node: Any, ctes: frozenset[str], out: set[Key]) -> None:
    """RangeVars outside the scope of a same-named CTE (scopes: a WITH and what it wraps)."""
    from pglast import ast

    if isinstance(node, tuple | list):
        for child in node:
            _pg_walk(child, ctes, out)
        return
    if not isinstance(node, ast.Node):
        return
    if isinstance(node, ast.RangeVar):
        if node.schemaname is None and node.catalogname is None and node.relname in ctes:
            return
        out.add((node.catalogname or "app", node.schemaname or "public", str(node.relname)))
        return
    with_clause = getattr(node, "withClause", None)
    if isinstance(with_clause, ast.WithClause):
        names = [cte.ctename for cte in with_clause.ctes or ()]
        # Over-approximating CTE visibility (every CTE of the WITH hides its name in every
        # body) can only hide tables from this oracle, never invent them.
        ctes = ctes | frozenset(names)
    for name in node:
        if name == "withClause":
            for cte in with_clause.ctes or () if isinstance(with_clause, ast.WithClause) else ():
                _pg_walk(cte.ctequery, ctes, out)
            continue
        _pg_walk(getattr(node, name), ctes, out)


def pg_tables(query: str) -> set[Key] | None:
    """Tables PostgreSQL's parser sees, qualified like PG; None if it does not parse."""
    try:
        statements = pglast.parse_sql(query)
    except pglast.parser.ParseError:
        return None
    out: set[Key] = set()
    _pg_walk(statements, frozenset(), out)
    return out


_DUCK = duckdb.connect()


def _duck_walk(node: Any, ctes: frozenset[str], out: set[Key]) -> None:
    if isinstance(node, list):
        for child in node:
            _duck_walk(child, ctes, out)
        return
    if not isinstance(node, dict):
        return
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        ctes = ctes | {entry["key"].lower() for entry in cte_map.get("map", [])}
    if node.get("type") == "BASE_TABLE":
        catalog, schema = node.get("catalog_name", ""), node.get("schema_name", "")
        table = str(node.get("table_name", "")).lower()
        if not catalog and not schema and table in ctes:
            return
        out.add(((catalog or "db").lower(), (schema or "main").lower(), table))
        return
    for value in node.values():
        _duck_walk(value, ctes, out)


def duck_tables(query: str) -> set[Key] | None:
    """Tables DuckDB's parser sees (case-insensitive: lower-cased); None if unparsable."""
    try:
        text = _DUCK.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    except duckdb.Error:
        return None
    assert text is not None
    parsed = json.loads(text[0])
    if parsed.get("error"):
        return None
    out: set[Key] = set()
    _duck_walk(parsed.get("statements", []), frozenset(), out)
    return out


ENGINES = {"postgres": (PG, pg_tables), "duckdb": (DUCK, duck_tables)}


# --- the rule ----------------------------------------------------------------------------


ANALYZER = SqlAnalyzer()


def missed(dialect: str, query: str) -> set[Key]:
    """Tables the engine's parser reads that the guard neither lists nor refuses."""
    connection, engine = ENGINES[dialect]
    real = engine(query)
    if not real:
        return set()
    result = ANALYZER.analyze(query, connection)
    if not isinstance(result, QueryAnalysis):
        return set()
    return real - set(result.tables)


def _corpus_queries() -> Iterator[str]:
    seen: set[str] = set()
    for _, _, query, _ in CORPUS:
        if query not in seen:
            seen.add(query)
            yield query


CORPUS_QUERIES = list(_corpus_queries())


@pytest.mark.parametrize("dialect", sorted(ENGINES))
def test_corpus_reads_no_table_the_guard_misses(dialect: str) -> None:
    failures = {q: missed(dialect, q) for q in CORPUS_QUERIES}
    assert {q: m for q, m in failures.items() if m} == {}


def test_oracles_see_tables() -> None:
    assert pg_tables("WITH c AS (SELECT 1) SELECT * FROM c, s.t") == {("app", "s", "t")}
    assert duck_tables("WITH c AS (SELECT 1) SELECT * FROM c, db.s.t") == {("db", "s", "t")}
    assert pg_tables("SELEC 1") is None


# --- known disagreements, each fixed in the guard ---------------------------------------


@pytest.mark.parametrize(
    ("dialect", "query"),
    [
        pytest.param("postgres", "SELECT 1 /* /* */ , (SELECT 1 FROM app.public.s) -- */",
                     id="pg-nested-comment"),
        pytest.param("postgres", "SELECT E'a\\'' , (SELECT 1 FROM app.public.s) -- '",
                     id="pg-escape-string"),
        pytest.param("postgres", "SELECT $$ ' $$, (SELECT 1 FROM app.public.s) -- '",
                     id="pg-dollar-quote"),
        pytest.param("postgres", "SELECT $a$ $$ ' $a$, (SELECT 1 FROM app.public.s) -- '",
                     id="pg-tagged-dollar-quote"),
        pytest.param("postgres", "SELECT U&'\\0027' , (SELECT 1 FROM app.public.s) -- '",
                     id="pg-unicode-string"),
        pytest.param("postgres", "SELECT * FROM app..s", id="pg-empty-part"),
        pytest.param("postgres", 'SELECT * FROM "S"', id="pg-quoted-case"),
        pytest.param("postgres", "WITH t AS (SELECT * FROM t) SELECT * FROM t",
                     id="pg-cte-self-reference"),
        pytest.param("duckdb", "SELECT 1 /* /* */ , (SELECT 1 FROM db.main.s) -- */",
                     id="duck-nested-comment"),
        pytest.param("duckdb", "SELECT E'a\\'' , (SELECT 1 FROM db.main.s) -- '",
                     id="duck-escape-string"),
        pytest.param("duckdb", "SELECT $$ ' $$, (SELECT 1 FROM db.main.s) -- '",
                     id="duck-dollar-quote"),
        pytest.param("duckdb", "FROM db.main.s SELECT 1", id="duck-from-first"),
        # Found by the long run: DuckDB quotes identifiers with backticks.
        pytest.param("duckdb", "SELECT `--carto-un`.carto.H3_BOUNDARY(h3) FROM proj.ds.t",
                     id="duck-backtick-identifier"),
        pytest.param("duckdb", "SELECT * FROM s.t", id="duck-two-part"),
        # DuckDB reads a.b.INFORMATION_SCHEMA.TABLES as a.information_schema.tables.
        pytest.param("duckdb", "SELECT * FROM proj.ds.INFORMATION_SCHEMA.TABLES",
                     id="duck-four-part-catalog-view"),
        pytest.param("duckdb", "SELECT * FROM db.main.s.t", id="duck-four-part"),
        pytest.param("postgres", "SELECT * FROM ONLY s", id="pg-only"),
        pytest.param("postgres", "TABLE s", id="pg-table-statement"),
        pytest.param("postgres", "SELECT * FROM (TABLE s) AS x WHERE 1 IN (TABLE u)",
                     id="pg-table-subquery"),
        pytest.param("postgres", 'SELECT * FROM U&"d\0061ta"', id="pg-unicode-identifier"),
        pytest.param("postgres", "SELECT * FROM s NATURAL JOIN u", id="pg-natural-join"),
        pytest.param("postgres", "SELECT 1 FROM s GROUP BY GROUPING SETS ((SELECT 1 FROM u))",
                     id="pg-subquery-in-grouping-sets"),
        pytest.param("duckdb", "SELECT * FROM s UNION BY NAME SELECT * FROM u",
                     id="duck-union-by-name"),
        pytest.param("duckdb", "SELECT * FROM s POSITIONAL JOIN u", id="duck-positional-join"),
        pytest.param("duckdb", "SELECT [x FOR x IN (SELECT 1 FROM u)] FROM s",
                     id="duck-list-comprehension"),
    ],
)
def test_tricky_queries_agree(dialect: str, query: str) -> None:
    assert missed(dialect, query) == set()


# --- generated queries -------------------------------------------------------------------

_NAMES = ["t", "s", "T", '"T"', '"s"', "secret", '"Secret"', "x1", '"a.b"', '"a""b"']
# DuckDB two-part names are refused by the guard, so its qualifiers are mostly three-part.
_QUALIFIERS = {
    "postgres": ["", "public.", "other.", "app.public.", "app.other.", '"Public".', "main."],
    "duckdb": ["", "db.main.", "db.other.", '"db"."Main".', "DB.main.", "x.main."],
}
# DuckDB reads a name holding a dot as a file path (refused), so it gets few of those.
_TABLE_NAMES = {"postgres": _NAMES, "duckdb": [n for n in _NAMES if "." not in n]}
_ALIASES = ["a", "b", "t", "s", "c1"]


@st.composite
def _query(draw: st.DrawFn, dialect: str, depth: int = 2) -> str:
    """A SELECT over random tables, CTEs, subqueries and set operations."""
    ctes: list[str] = []
    head = ""
    if depth and draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(_NAMES[:6]), min_size=1, max_size=2, unique=True))
        parts = []
        for name in names:
            parts.append(f"{name} AS ({draw(_query(dialect, depth - 1))})")
            ctes.append(name)
        recursive = "RECURSIVE " if draw(st.booleans()) else ""
        head = f"WITH {recursive}{', '.join(parts)} "
    items = []
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["table", "table", "cte", "sub"] if depth else ["table"]))
        alias = f" AS {draw(st.sampled_from(_ALIASES))}{i}" if draw(st.booleans()) else ""
        if kind == "sub":
            items.append(f"({draw(_query(dialect, depth - 1))}) AS q{i}")
        elif kind == "cte" and ctes:
            items.append(draw(st.sampled_from(ctes)) + alias)
        else:
            qualifier = draw(st.sampled_from(_QUALIFIERS[dialect]))
            items.append(qualifier + draw(st.sampled_from(_TABLE_NAMES[dialect])) + alias)
    joiner = draw(st.sampled_from([", ", " JOIN ", " CROSS JOIN "]))
    source = items[0]
    for item in items[1:]:
        source += joiner + item + (" ON TRUE" if joiner == " JOIN " else "")
    body = f"SELECT 1 AS v FROM {source}"
    if depth and draw(st.booleans()):
        body += f" WHERE EXISTS ({draw(_query(dialect, depth - 1))})"
    if depth and draw(st.booleans()):
        body += f" UNION ALL ({draw(_query(dialect, depth - 1))})"
    return head + body


_NOISE = [
    " /* x */ ", " -- x\n", " /* /* */ ", " */ ", "'", "''", "E'\\''", "'\\'", "$$", "$a$",
    '"', "..", ".", ";", "\\", "U&'\\0027'", " , (SELECT 1 FROM app.public.secret) ",
    " , (SELECT 1 FROM db.main.secret) ", "--", "/*", "(", ")",
]


@st.composite
def _mutated(draw: st.DrawFn, dialect: str) -> str:
    """A corpus or generated query with inserted, deleted or duplicated pieces."""
    text = draw(st.one_of(st.sampled_from(CORPUS_QUERIES), _query(dialect), _query(dialect)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(_NOISE)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        else:
            text = text[:at] + text[at : at + 12] + text[at:]
    return text


_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
)


def generated(dialect: str) -> st.SearchStrategy[str]:
    return _query(dialect)


def mutated(dialect: str) -> st.SearchStrategy[str]:
    return _mutated(dialect)


@_SETTINGS
@given(st.sampled_from(sorted(ENGINES)).flatmap(lambda d: st.tuples(st.just(d), generated(d))))
def test_generated_queries_read_no_table_the_guard_misses(case: tuple[str, str]) -> None:
    dialect, query = case
    assert missed(dialect, query) == set(), query


@_SETTINGS
@given(st.sampled_from(sorted(ENGINES)).flatmap(lambda d: st.tuples(st.just(d), mutated(d))))
def test_mutated_queries_read_no_table_the_guard_misses(case: tuple[str, str]) -> None:
    dialect, query = case
    assert missed(dialect, query) == set(), query
