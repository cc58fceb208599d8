"""CARTO's Analytics Toolbox as a named allowed_functions preset, per warehouse."""

from __future__ import annotations

import pytest

import token_guard as tg
from token_guard import presets
from token_guard.core.connections import Connection
from token_guard.core.sql import QueryAnalysis, SqlAnalyzer, SqlRefusal

CASES = [
    pytest.param(
        "bigquery",
        "SELECT `carto-un`.carto.H3_FROMGEOGPOINT(geom, 5), "
        "`carto-un-eu.carto.QUADBIN_FROMLONGLAT`(lon, lat, 10) FROM proj.ds.t",
        id="bigquery-us-and-eu",
    ),
    pytest.param("snowflake", "SELECT carto.carto.H3_CENTER(h) FROM db.s.t", id="snowflake"),
    pytest.param("redshift", "SELECT carto.QUADBIN_TOPARENT(q, 4) FROM db.s.t", id="redshift"),
    pytest.param("postgres", "SELECT carto.H3_BOUNDARY(h) FROM db.s.t", id="postgres"),
    pytest.param("databricks", "SELECT carto.QUADBIN_BOUNDARY(q) FROM c.s.t", id="databricks"),
]


@pytest.mark.parametrize(("warehouse", "query"), CASES)
def test_the_preset_allows_the_toolbox_at_its_documented_location(
    warehouse: str, query: str
) -> None:
    conn = Connection(warehouse)
    assert isinstance(SqlAnalyzer(allowed_functions=()).analyze(query, conn), SqlRefusal)
    allowed = SqlAnalyzer(allowed_functions=presets.analytics_toolbox(warehouse))
    assert isinstance(allowed.analyze(query, conn), QueryAnalysis)
    named = SqlAnalyzer(allowed_functions=[presets.ANALYTICS_TOOLBOX])
    assert isinstance(named.analyze(query, conn), QueryAnalysis)


def test_bigquery_toolbox_paths_are_case_sensitive() -> None:
    analyzer = SqlAnalyzer(allowed_functions=presets.analytics_toolbox("bigquery"))
    query = "SELECT `carto-un`.CARTO.h3_fromgeogpoint(geom, 5) FROM proj.ds.t"
    assert isinstance(analyzer.analyze(query, Connection("bigquery")), SqlRefusal)


def test_procedures_and_other_schemas_are_not_in_the_preset() -> None:
    names = presets.analytics_toolbox("bigquery")
    assert names and all(n.startswith(("carto-un.carto.", "carto-un-eu.carto.")) for n in names)
    assert not any(n.endswith("_TABLE") for n in names if "H3_POLYFILL" in n)
    analyzer = SqlAnalyzer(allowed_functions=names)
    query = "SELECT `evil-proj`.carto.H3_CENTER(h) FROM proj.ds.t"
    assert isinstance(analyzer.analyze(query, Connection("bigquery")), SqlRefusal)


def test_a_custom_location() -> None:
    names = presets.analytics_toolbox("postgres", location="toolbox")
    analyzer = SqlAnalyzer(allowed_functions=names)
    query = "SELECT toolbox.H3_CENTER(h) FROM db.s.t"
    assert isinstance(analyzer.analyze(query, Connection("postgres")), QueryAnalysis)


def test_bad_preset_arguments_fail_at_start_up() -> None:
    with pytest.raises(tg.ConfigurationError, match="analytics_toolbox: unknown warehouse"):
        presets.analytics_toolbox("oracle-ish")
    with pytest.raises(tg.ConfigurationError, match="location"):
        presets.analytics_toolbox("bigquery", location="carto-un.*")


def test_the_preset_is_one_line_for_token_guard() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    guard = tg.TokenGuard(app, store=tg.MemoryStore(), connections={"dw": "bigquery"},
                          allowed_functions=tg.presets.analytics_toolbox("bigquery"))
    assert guard is not None
