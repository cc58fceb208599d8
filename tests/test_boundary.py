"""Boundary sources (@carto/api-client boundaryTableSource / boundaryQuerySource).

A boundary request names two sources, a tileset of boundaries and their properties (a table
or a query); the guard checks every one it names. Parameter names are the client's
(src/sources/boundary-{table,query}-source.ts).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

import token_guard as tg
from token_guard.core.decision import Denial
from token_guard.core.records import TokenRecord
from token_guard.guard import Guard
from token_guard.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio
BODY = {
    "name": "boundaries",
    "grants": [
        {"connection_name": "dw", "source": "carto-boundaries.us.tileset_counties"},
        {"connection_name": "dw", "source": "proj.ds.county_sales"},
    ],
    "referers": [],
    "allowed_apis": ["maps"],
}
PATH = b"/v3/maps/dw/boundary"
TILESET = "carto-boundaries.us.tileset_counties"


async def _guard() -> tuple[Guard, bytes]:
    store = MemoryStore()
    issued = await store.create_token(BODY)
    guard = Guard(store=store, connections={"dw": "bigquery"})
    return guard, b"Bearer " + issued.token.encode()


async def _decide(params: dict[str, str], *, body: bytes | None = None) -> object:
    guard, auth = await _guard()
    query = urlencode(params).encode()
    if body is None:
        return await guard.check_async("GET", PATH, query, auth)
    return await guard.check_async("POST", PATH, query, auth, body=body)


CASES = [
    pytest.param({"tilesetTableName": TILESET, "propertiesTableName": "proj.ds.county_sales"},
                 None, id="table-source-granted"),
    pytest.param({"tilesetTableName": TILESET,
                  "propertiesSqlQuery": "SELECT geoid, SUM(x) AS x FROM proj.ds.county_sales "
                                        "GROUP BY geoid"},
                 None, id="query-source-granted"),
    pytest.param({"tilesetTableName": TILESET, "propertiesTableName": "proj.ds.secret"},
                 "source_not_granted", id="ungranted-properties-table"),
    pytest.param({"tilesetTableName": "proj.ds.secret_tiles",
                  "propertiesTableName": "proj.ds.county_sales"},
                 "source_not_granted", id="ungranted-tileset"),
    pytest.param({"tilesetTableName": TILESET,
                  "propertiesSqlQuery": "SELECT * FROM proj.ds.county_sales JOIN proj.ds.secret "
                                        "USING (geoid)"},
                 "source_not_granted", id="query-reads-an-ungranted-table"),
    pytest.param({"tilesetTableName": TILESET, "propertiesTableName": "proj.ds.county_sales",
                  "propertiesSqlQuery": "SELECT * FROM proj.ds.secret"},
                 "source_not_granted", id="both-properties-each-checked"),
    pytest.param({"tilesetTableName": TILESET, "propertiesTableName": "proj.ds.county_sales",
                  "columns": "geoid,(SELECT 1 FROM proj.ds.secret)"},
                 "malformed_request", id="columns-checked"),
]


@pytest.mark.parametrize(("params", "code"), CASES)
async def test_every_source_a_boundary_request_names_is_checked(
    params: dict[str, str], code: str | None
) -> None:
    result = await _decide(params)
    if code is None:
        assert isinstance(result, TokenRecord), result
    else:
        assert isinstance(result, Denial) and result.code == code, result


async def test_boundary_tiles_are_checked_like_the_instantiation() -> None:
    guard, auth = await _guard()
    query = urlencode({"tilesetTableName": TILESET, "propertiesTableName": "proj.ds.secret"})
    result = await guard.check_async("GET", PATH + b"/3/1/2", query.encode(), auth)
    assert isinstance(result, Denial) and result.code == "source_not_granted"


async def test_a_post_body_names_the_sources_too() -> None:
    body = json.dumps({"tilesetTableName": TILESET, "propertiesSqlQuery":
                       "SELECT * FROM proj.ds.secret"}).encode()
    result = await _decide({}, body=body)
    assert isinstance(result, Denial) and result.code == "source_not_granted"


async def test_a_source_sent_twice_is_ambiguous() -> None:
    guard, auth = await _guard()
    query = (f"tilesetTableName={TILESET}&propertiesTableName=proj.ds.county_sales"
             "&propertiesTableName=proj.ds.secret").encode()
    result = await guard.check_async("GET", PATH, query, auth)
    assert isinstance(result, Denial) and result.status == 400


def test_a_route_declares_several_sources() -> None:
    route = tg.Route(api="maps", path="/v3/custom/{connection}/join", source_param="left",
                     more_sources=(("right", "table"), ("sql", "query")))
    assert route.more_sources[1] == ("sql", "query")
    with pytest.raises(tg.ConfigurationError, match="more_sources"):
        Guard(store=MemoryStore(), connections={"dw": "bigquery"}, routes=[tg.Route(
            api="maps", path="/v3/custom/{connection}/bad", source_param="a",
            more_sources=(("b", "view"),))])  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigurationError, match="must"):
        Guard(store=MemoryStore(), connections={"dw": "bigquery"}, routes=[tg.Route(
            api="maps", path="/v3/custom/{connection}/dup", source_param="a",
            more_sources=(("a", "table"),))])
