"""Policy: compile a token, decide requests (pure, no I/O)."""

from __future__ import annotations

import inspect
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import tokens
from token_guard.core import decision
from token_guard.core import policy as policy_module
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.facts import RequestFacts, Source
from token_guard.core.policy import CompiledToken, Policy
from token_guard.core.records import TokenRecord
from token_guard.core.secret import new_secret
from token_guard.core.spec import parse_token_spec
from token_guard.core.sql import SqlAnalyzer, SqlRefusal

NOW = time.time()
POLICY = Policy({"carto_dw": "bigquery", "sf": "snowflake", "pg": "postgres"})

# The design's body with a star grant on Snowflake, no website restriction and no expiry.
BODY: dict[str, Any] = tokens.body(
    grants=[*tokens.BODY["grants"], {"connection_name": "sf", "source": "*"}],
    referers=[],
    expiration_date=...,
)


def compiled(body: dict[str, Any] | None = None) -> CompiledToken:
    spec = parse_token_spec(body or BODY)
    record = TokenRecord(id="tok_test", spec=spec, created_at=datetime.now(UTC))
    return POLICY.compile(record)


def facts(
    api: str = "maps",
    connection: str | None = "carto_dw",
    *sources: Source,
    origin: str | None = None,
    referer: str | None = None,
) -> RequestFacts:
    return RequestFacts(api, connection, tuple(sources), origin, referer)


def table(name: str) -> Source:
    return Source("table", name)


def query(text: str) -> Source:
    return Source("query", text)


TOKEN = compiled()

CASES = [
    pytest.param(facts("maps", "carto_dw", table("carto-demo-data.demo_tables.retail_stores")),
                 None, id="granted-table"),
    pytest.param(facts("maps", "carto_dw", table("`carto-demo-data.demo_tables.retail_stores`")),
                 None, id="granted-table-backtick-path"),
    pytest.param(facts("maps", "carto_dw", table("carto-demo-data.shared.anything")),
                 None, id="wildcard-child"),
    pytest.param(facts("maps", "carto_dw", table("carto-demo-data.demo_tables.other")),
                 "source_not_granted", id="table-not-granted"),
    pytest.param(facts("maps", "carto_dw", table("carto-demo-data.shared")),
                 "source_not_granted", id="wildcard-parent-itself"),
    pytest.param(facts("maps", "carto_dw", table("carto-demo-data.sharedx.t")),
                 "source_not_granted", id="wildcard-lookalike-dataset"),
    pytest.param(facts("maps", "carto_dw", table("retail_stores")),
                 "source_not_granted", id="unqualified-name"),
    pytest.param(facts("lds", None), "api_not_allowed", id="api-not-allowed"),
    pytest.param(facts("maps", "other_conn", table("a.b.c")), "unknown_connection",
                 id="unknown-connection"),
    pytest.param(facts("maps", "pg", table("db.public.t")), "connection_not_granted",
                 id="connection-not-granted"),
    pytest.param(facts("sql", "sf", table("DB.SCHEMA.ANY")), None, id="star-grant"),
    pytest.param(facts("sql", "sf", query("select * from db.information_schema.tables")),
                 "source_not_granted", id="star-does-not-cover-information-schema"),
    pytest.param(
        facts("sql", "carto_dw", query(
            "SELECT s.* FROM `carto-demo-data.demo_tables.retail_stores` s "
            "JOIN `carto-demo-data.shared.cities` c ON s.city = c.name")),
        None, id="query-over-granted-tables"),
    pytest.param(
        facts("sql", "carto_dw", query(
            "SELECT * FROM `carto-demo-data.demo_tables.retail_stores` "
            "UNION ALL SELECT * FROM `carto-demo-data.private.salaries`")),
        "source_not_granted", id="union-reads-ungranted"),
    pytest.param(
        facts("maps", "carto_dw", query(
            "select *   from `carto-demo-data`.demo_tables.stores  where city = @city")),
        None, id="granted-query-normalised"),
    pytest.param(
        facts("maps", "carto_dw", query(
            "SELECT * FROM `carto-demo-data`.demo_tables.stores WHERE city = 'Paris'")),
        "source_not_granted", id="granted-query-different-literal"),
    pytest.param(
        facts("sql", "carto_dw", query("DELETE FROM `carto-demo-data.demo_tables.retail_stores`")),
        "query_not_allowed", id="write-refused"),
    pytest.param(
        facts("sql", "carto_dw", query(
            "SELECT 1; DROP TABLE `carto-demo-data.demo_tables.retail_stores`")),
        "query_not_allowed", id="two-statements"),
]


@pytest.mark.parametrize(("request_facts", "code"), CASES)
def test_decide(request_facts: RequestFacts, code: str | None) -> None:
    denial = POLICY.decide(TOKEN, request_facts, NOW)
    assert (denial.code if denial else None) == code
    if denial is not None:
        assert denial.message and denial.hint


def test_expired_token_is_refused_with_401() -> None:
    body = dict(BODY, expiration_date=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    token = compiled(body)
    early = POLICY.decide(token, facts("lds", None), NOW)
    assert early is not None and early.code == "api_not_allowed"
    ok = facts("maps", "carto_dw", table("carto-demo-data.shared.t"))
    assert POLICY.decide(token, ok, NOW) is None
    late = POLICY.decide(token, ok, NOW + 7200)
    assert isinstance(late, Denial) and (late.status, late.code) == (401, "expired_token")


def test_origin_checked_when_referers_set() -> None:
    token = compiled(dict(BODY, referers=["https://*.example.com"]))
    ok = facts("maps", "carto_dw", table("carto-demo-data.shared.t"),
               origin="https://app.example.com")
    assert POLICY.decide(token, ok, NOW) is None
    for origin in (None, "null", "https://example.com.evil.com", "https://example.com"):
        bad = facts("maps", "carto_dw", table("carto-demo-data.shared.t"), origin=origin)
        denial = POLICY.decide(token, bad, NOW)
        assert denial is not None and denial.code == "origin_not_allowed", origin


# --- denials never repeat header values, literals or comments -----------------------

SECRET = new_secret()
LISTED = compiled(dict(BODY, referers=["https://*.example.com"]))
UNDER_MAPS = compiled(dict(BODY, referers=["https://*.example.com/maps"]))
IN_AN_HOUR = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
EXPIRING = compiled(dict(BODY, expiration_date=IN_AN_HOUR))
# A Referer that passes LISTED's check and carries the secret in its query and fragment.
REFERER = f"https://app.example.com/maps/page?access_token={SECRET}#{SECRET}"


def leaky(api: str, connection: str | None, *sources: Source, origin: str | None = None,
          referer: str | None = REFERER) -> RequestFacts:
    return facts(api, connection, *sources, origin=origin, referer=referer)


# Every kind of denial the policy gives, each with the secret somewhere in the facts (the
# Referer's query or path, the Origin, a query's literal or comment). Denials name tables,
# connections and functions (what to grant); never these.
SECRET_CASES = [
    pytest.param(EXPIRING, leaky("maps", "carto_dw"), NOW + 7200, "expired_token",
                 id="expired"),
    pytest.param(LISTED, leaky("lds", None), NOW, "api_not_allowed", id="api"),
    pytest.param(LISTED, leaky("maps", "carto_dw", referer=f"https://evil.com/{SECRET}?t={SECRET}"),
                 NOW, "origin_not_allowed", id="origin-not-listed"),
    pytest.param(LISTED, leaky("maps", "carto_dw", origin="null"), NOW, "origin_not_allowed",
                 id="origin-null"),
    pytest.param(LISTED, leaky("maps", "carto_dw", origin="https://other.example.com"), NOW,
                 "origin_not_allowed", id="origin-conflicts-with-referer"),
    pytest.param(LISTED, leaky("maps", "carto_dw", origin=f"https://app.example.com/{SECRET}"),
                 NOW, "origin_not_allowed", id="origin-unparseable"),
    pytest.param(LISTED, leaky("maps", "carto_dw", referer=f"ht!tp://{SECRET}"), NOW,
                 "origin_not_allowed", id="referer-unparseable"),
    pytest.param(LISTED, leaky("maps", "carto_dw", referer=REFERER + "x" * 5000), NOW,
                 "origin_not_allowed", id="referer-too-long"),
    pytest.param(UNDER_MAPS, leaky("maps", "carto_dw",
                                   referer=f"https://app.example.com/{SECRET}?t={SECRET}"),
                 NOW, "origin_not_allowed", id="referer-not-under-path"),
    pytest.param(UNDER_MAPS, leaky("maps", "carto_dw",
                                   referer=f"https://app.example.com/maps/../{SECRET}"),
                 NOW, "origin_not_allowed", id="referer-dot-segment"),
    pytest.param(LISTED, leaky("maps", "nowhere"), NOW, "unknown_connection",
                 id="unknown-connection"),
    pytest.param(LISTED, leaky("maps", "pg"), NOW, "connection_not_granted",
                 id="connection-not-granted"),
    pytest.param(LISTED, leaky("maps", "carto_dw", table("p.private.t")), NOW,
                 "source_not_granted", id="table-not-granted"),
    pytest.param(LISTED, leaky("maps", "carto_dw", table("p..t")), NOW,
                 "source_not_granted", id="table-name-refused"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(
        f"SELECT * FROM p.private.t WHERE k = '{SECRET}' -- {SECRET}")), NOW,
                 "source_not_granted", id="query-reads-ungranted"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(
        f"DELETE FROM p.private.t WHERE k = '{SECRET}'")), NOW,
                 "query_not_allowed", id="query-writes"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(
        f"SELECT * FROM p.d.t WHERE k = '{SECRET}' )")), NOW,
                 "query_not_allowed", id="query-does-not-parse"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(f"SELECT '{SECRET}'; SELECT 1")), NOW,
                 "query_not_allowed", id="query-two-statements"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(
        f"SELECT x FROM p.d.t /* {SECRET} /* */")), NOW,
                 "query_not_allowed", id="query-nested-comment"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(
        f"SELECT my_fn('{SECRET}') FROM p.d.t")), NOW,
                 "query_not_allowed", id="query-unknown-function"),
    pytest.param(LISTED, leaky("sql", "carto_dw", query(
        f"SELECT * FROM EXTERNAL_QUERY('{SECRET}', 'SELECT 1')")), NOW,
                 "query_not_allowed", id="query-table-function"),
]


def assert_denied_without_secret(
    policy: Policy, token: CompiledToken, request_facts: RequestFacts, now: float, code: str
) -> None:
    denial = policy.decide(token, request_facts, now)
    assert denial is not None and denial.code == code, denial
    assert SECRET not in denial.message + denial.hint, denial


def test_every_denial_code_the_policy_gives_has_a_secret_case() -> None:
    given_codes = {
        getattr(decision, name)
        for name in re.findall(r"codes\.([A-Z_]+)", inspect.getsource(policy_module))
    }
    assert {p.values[3] for p in SECRET_CASES} == given_codes


@pytest.mark.parametrize(("token", "request_facts", "now", "code"), SECRET_CASES)
def test_denials_never_contain_header_values_literals_or_comments(
    token: CompiledToken, request_facts: RequestFacts, now: float, code: str
) -> None:
    assert_denied_without_secret(POLICY, token, request_facts, now, code)


def test_the_secret_check_fails_on_a_denial_that_echoes_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def echoing(self: Policy, name: str, sources: tuple[Source, ...]) -> tuple[Denial, ...]:
        return (Denial(403, "query_not_allowed", f"refused {sources[0].value}", "fix it"),)

    monkeypatch.setattr(Policy, "_prepare", echoing)
    policy = Policy({"carto_dw": "bigquery", "sf": "snowflake", "pg": "postgres"})
    case = next(p for p in SECRET_CASES if p.id == "query-writes")
    with pytest.raises(AssertionError):
        assert_denied_without_secret(policy, *case.values)  # type: ignore[arg-type]


def test_grant_for_unconfigured_connection_grants_nothing() -> None:
    token = compiled({"grants": [{"connection_name": "nowhere", "source": "*"}],
                      "allowed_apis": ["sql"]})
    denial = POLICY.decide(token, facts("sql", "nowhere", table("a.b.c")), NOW)
    assert denial is not None and denial.code == "unknown_connection"


def test_decision_cost_does_not_depend_on_grant_count() -> None:
    grants = [{"connection_name": "carto_dw", "source": f"p.d{i}.t{i}"} for i in range(5000)]
    grants += [{"connection_name": "carto_dw", "source": f"p.w{i}.*"} for i in range(5000)]
    token = compiled({"grants": grants, "allowed_apis": ["maps"]})
    assert token.grants["carto_dw"].prefix_lengths == (2,)
    assert POLICY.decide(token, facts("maps", "carto_dw", table("p.w4999.x")), NOW) is None
    assert POLICY.decide(token, facts("maps", "carto_dw", table("p.d7.t7")), NOW) is None
    denied = POLICY.decide(token, facts("maps", "carto_dw", table("p.d7.t8")), NOW)
    assert denied is not None and denied.code == "source_not_granted"


segment = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


@given(
    granted=st.lists(st.tuples(segment, segment, segment | st.just("*")), max_size=6),
    asked=st.tuples(segment, segment, segment),
)
def test_wildcard_and_table_grants_match_oracle(
    granted: list[tuple[str, str, str]], asked: tuple[str, str, str]
) -> None:
    body = {
        "grants": [{"connection_name": "pg", "source": ".".join(g)} for g in granted],
        "allowed_apis": ["sql"],
    }
    token = compiled(body)

    def oracle() -> bool:
        return any((p, d) == asked[:2] and t in ("*", asked[2]) for p, d, t in granted)

    denial = POLICY.decide(token, facts("sql", "pg", table(".".join(asked))), NOW)
    expected_code = None if oracle() else ("connection_not_granted" if not granted
                                           else "source_not_granted")
    assert (denial.code if denial else None) == expected_code


def test_remembered_answers_follow_the_facts_object_not_its_id() -> None:
    token = compiled()
    allowed = facts("maps", "carto_dw", table("carto-demo-data.shared.t"))
    assert POLICY.decide(token, allowed, NOW) is None
    assert POLICY.decide(token, allowed, NOW) is None  # remembered
    for _ in range(300):  # new objects, some reusing freed ids: each decided on its own
        denied = facts("maps", "carto_dw", table("carto-demo-data.private.t"))
        verdict = POLICY.decide(token, denied, NOW)
        assert verdict is not None and verdict.code == "source_not_granted"
    late = POLICY.decide(compiled(dict(BODY, expiration_date=(
        datetime.now(UTC) + timedelta(hours=1)).isoformat())), allowed, NOW + 7200)
    assert late is not None and late.code == "expired_token"


# --- SQL analysis never raises; one bad grant never breaks a token --------------------

RAISING_QUERIES = [
    pytest.param(
        "carto_dw", "SELECT REGEXP_REPLACE(x, y) FROM proj.ds.t", id="bq-regexp-replace-2"
    ),
    pytest.param("sf", "SELECT DIV0(x) FROM db.sch.t", id="sf-div0-1"),
]


@pytest.mark.parametrize(("connection", "text"), RAISING_QUERIES)
def test_query_that_makes_sqlglot_raise_is_a_403(connection: str, text: str) -> None:
    token = compiled({"grants": [{"connection_name": connection, "source": "*"}],
                      "allowed_apis": ["sql"]})
    denial = POLICY.decide(token, facts("sql", connection, query(text)), NOW)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.code) == (403, "query_not_allowed")
    assert "could not be analysed" in denial.message


@pytest.mark.parametrize(("connection", "text"), RAISING_QUERIES)
def test_unanalysable_query_grant_grants_nothing_and_spares_the_other_grants(
    connection: str, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = "proj.ds.ok" if connection == "carto_dw" else "db.sch.ok"
    body = {"grants": [{"connection_name": connection, "source": text},
                       {"connection_name": connection, "source": good}],
            "allowed_apis": ["sql", "maps"]}
    with caplog.at_level("WARNING", logger="token_guard.core.policy"):
        token = compiled(body)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "tgk_" not in warnings[0].getMessage()
    assert POLICY.decide(token, facts("maps", connection, table(good)), NOW) is None
    denial = POLICY.decide(token, facts("sql", connection, query(text)), NOW)
    assert isinstance(denial, Denial) and (denial.status, denial.code) == (
        403, "query_not_allowed")


def test_grant_whose_compilation_raises_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(SqlAnalyzer):
        def fingerprint(self, query: str, connection: Connection) -> str | SqlRefusal:
            raise RuntimeError("boom")

    policy = Policy({"carto_dw": "bigquery"}, sql=Exploding())
    spec = parse_token_spec({"grants": [
        {"connection_name": "carto_dw", "source": "SELECT 1 FROM proj.ds.t"},
        {"connection_name": "carto_dw", "source": "proj.ds.ok"}], "allowed_apis": ["maps"]})
    with caplog.at_level("WARNING", logger="token_guard.core.policy"):
        token = policy.compile(TokenRecord(id="tok_x", spec=spec, created_at=datetime.now(UTC)))
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1
    assert policy.decide(token, facts("maps", "carto_dw", table("proj.ds.ok")), NOW) is None


@pytest.mark.parametrize(("grant", "allowed"), [
    pytest.param("*", False, id="star"),
    pytest.param("DB.INFORMATION_SCHEMA.*", False, id="wildcard"),
    pytest.param("DB.INFORMATION_SCHEMA.TABLES", True, id="exact"),
])
@pytest.mark.parametrize("source", [
    pytest.param(table("DB.INFORMATION_SCHEMA.TABLES"), id="table-source"),
    pytest.param(query("SELECT table_name FROM DB.INFORMATION_SCHEMA.TABLES"), id="query"),
    pytest.param(query("SELECT t.a FROM DB.S.T t JOIN DB.INFORMATION_SCHEMA.TABLES i "
                       "ON t.a = i.table_name"), id="query-joining-it"),
])
def test_a_catalog_table_is_allowed_only_by_an_exact_grant(
    grant: str, allowed: bool, source: Source
) -> None:
    """Catalog tables are told apart once, when a source is prepared (not per request):
    the second decision, from the prepared memo, must say what the first said."""
    policy = Policy({"sf": "snowflake"})
    grants = [{"connection_name": "sf", "source": grant},
              {"connection_name": "sf", "source": "DB.S.T"}]
    token = policy.compile(TokenRecord(
        id="tok_cat", spec=parse_token_spec(dict(BODY, grants=grants)),
        created_at=datetime.now(UTC)))
    request = facts("sql", "sf", source)
    for _ in range(2):
        denial = policy.decide(token, request, NOW)
        assert (denial is None) is allowed, denial
        if denial is not None:
            assert denial.code == "source_not_granted"
            assert "INFORMATION_SCHEMA" in denial.message.upper()
