"""No input makes SQL analysis raise: sqlglot errors become refusals, in every dialect.

Bounded in CI (a few hundred examples per test). ``TOKEN_GUARD_LONG_FUZZ=1`` runs 20,000
examples per test (``TOKEN_GUARD_FUZZ_EXAMPLES`` overrides the count).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot.dialects.dialect import Dialect

from tests.sql_corpus import CORPUS
from token_guard.core.connections import DIALECT_DEPTH, Connection
from token_guard.core.decision import Denial
from token_guard.core.facts import RequestFacts, Source
from token_guard.core.policy import Policy
from token_guard.core.records import TokenRecord
from token_guard.core.spec import parse_token_spec
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer, SqlRefusal

LONG = os.environ.get("TOKEN_GUARD_LONG_FUZZ") == "1"
EXAMPLES = int(os.environ.get("TOKEN_GUARD_FUZZ_EXAMPLES", 20_000 if LONG else 200))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

DIALECTS = sorted(DIALECT_DEPTH)
CONNECTIONS = [Connection(d) for d in DIALECTS] + [
    Connection(d, default_path=("db", "sch")[: DIALECT_DEPTH[d] - 1]) for d in DIALECTS
]
QUERIES = sorted({query for _, _, query, _ in CORPUS})
# Every function name each dialect's sqlglot parser knows: generation raises on some of them
# when an argument is missing or extra (BigQuery REGEXP_REPLACE(x, y), Snowflake DIV0(x)).
FUNCTIONS: dict[str, list[str]] = {
    d: sorted(Dialect.get_or_raise(d).parser_class.FUNCTIONS) for d in DIALECTS
}
ALL_FUNCTIONS = sorted({name for names in FUNCTIONS.values() for name in names})
ANALYZER = SqlAnalyzer(cache_size=64)

_TOKENS = [
    "SELECT", "FROM", "WHERE", "WITH", "RECURSIVE", "AS", "UNION", "ALL", "JOIN", "ON",
    "(", ")", ",", ".", "..", "*", "'", '"', "`", "/*", "*/", "--", "\n", ";", "@p", ":p",
    "$1", "?", "UNNEST", "LATERAL", "TABLE", "VALUES", "NULL", "1", "x", "t", "proj.ds.t",
    "OVER", "PARTITION BY", "ORDER BY", "LIMIT", "GROUP BY", "QUALIFY", "PIVOT", "\\",
    "INTERVAL", "CASE", "WHEN", "END", "::", "[", "]", "{", "}", "=>", "IN", "EXISTS",
]


_ARGS = ["x", "y", "1", "'a'", "NULL", "*"]


def _call(name: str, arity: int) -> str:
    return name + "(" + ", ".join(_ARGS[:arity]) + ")"


@st.composite
def _function_queries(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(ALL_FUNCTIONS))
    call = _call(name, draw(st.integers(0, 5)))
    shape = draw(st.sampled_from([
        "SELECT {c} FROM proj.ds.t",
        "SELECT * FROM proj.ds.t WHERE {c} IS NULL",
        "SELECT * FROM {c}",
        "WITH RECURSIVE r AS (SELECT {c} AS v UNION ALL SELECT v FROM r) SELECT * FROM r",
    ]))
    return shape.format(c=call)


@st.composite
def _mutations(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(QUERIES) | _function_queries())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "swap"]))
        if op == "insert":
            text = f"{text[:at]} {draw(st.sampled_from(_TOKENS))} {text[at:]}"
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 10)) :]
        elif op == "duplicate":
            text = text[:at] + text[at : at + draw(st.integers(1, 20))] + text[at:]
        else:
            words = text.split(" ")
            i, j = draw(st.integers(0, len(words) - 1)), draw(st.integers(0, len(words) - 1))
            words[i], words[j] = words[j], words[i]
            text = " ".join(words)
    return text


INPUTS = st.one_of(_mutations(), _function_queries(), st.text(max_size=200))


def _check_never_raises(text: str, connection: Connection) -> None:
    result = ANALYZER.analyze(text, connection)
    assert isinstance(result, QueryAnalysis | SqlRefusal)
    assert isinstance(ANALYZER.fingerprint(text, connection), str | SqlRefusal)
    assert isinstance(ANALYZER.table_key(text[:200], connection), tuple | SqlRefusal)
    assert isinstance(ANALYZER.wildcard_prefix(text[:200] + ".*", connection), tuple | SqlRefusal)
    if isinstance(result, SqlRefusal):
        assert result.reason and result.hint


@FUZZ
@given(st.sampled_from(CONNECTIONS), INPUTS)
def test_analysis_never_raises(connection: Connection, text: str) -> None:
    _check_never_raises(text, connection)


@pytest.mark.parametrize("connection", CONNECTIONS, ids=lambda c: f"{c.dialect}-{c.default_path}")
def test_every_known_function_at_odd_arities_never_raises(connection: Connection) -> None:
    analyzer = SqlAnalyzer(cache_size=16)
    step = 1 if LONG else 7  # CI: a seventh of the functions, each at every arity
    for name in FUNCTIONS[connection.dialect][::step]:
        for arity in range(4):
            query = f"SELECT {_call(name, arity)} FROM db.sch.t"
            assert isinstance(analyzer.analyze(query, connection), QueryAnalysis | SqlRefusal)


_POLICY = Policy({d: d for d in DIALECTS})
_TOKEN = _POLICY.compile(TokenRecord(
    id="tok_fuzz",
    spec=parse_token_spec({"grants": [{"connection_name": d, "source": "*"} for d in DIALECTS],
                           "allowed_apis": ["sql"]}),
    created_at=datetime.now(UTC),
))


@FUZZ
@given(st.sampled_from(DIALECTS), INPUTS)
def test_policy_decides_every_query_without_raising(dialect: str, text: str) -> None:
    denial = _POLICY.decide(_TOKEN, RequestFacts("sql", dialect, (Source("query", text),)), 0.0)
    if denial is not None:
        assert isinstance(denial, Denial) and denial.status == 403


@pytest.mark.parametrize(
    ("dialect", "query"),
    [
        pytest.param("bigquery", "SELECT REGEXP_REPLACE(x, y) FROM proj.ds.t", id="bq-regexp"),
        pytest.param("snowflake", "SELECT DIV0(x) FROM db.sch.t", id="sf-div0"),
    ],
)
def test_sqlglot_error_is_a_query_not_allowed_denial(dialect: str, query: str) -> None:
    denial = _POLICY.decide(_TOKEN, RequestFacts("sql", dialect, (Source("query", query),)), 0.0)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.code) == (403, "query_not_allowed")
    assert "could not be analysed" in denial.message
