"""Route classification: raw path + query + body -> RequestFacts, a Denial, or pass-through."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_guard.core import decision as codes
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.facts import RequestFacts, Source
from token_guard.core.routes import DEFAULT_ROUTES, Route, RouteMap, RouteMatch, SqlParam

ROUTES = RouteMap()
TOKEN = "tgk_" + "A" * 32 + "BBBBBB"


def classify(
    method: str,
    target: bytes,
    body: Any = None,
    routes: RouteMap = ROUTES,
    origin: str | None = None,
    referer: str | None = None,
) -> RequestFacts | Denial | None:
    """Split ``target`` like a server does and run match + facts, as a transport would."""
    path, _, query = target.partition(b"?")
    found = routes.match(method, path)
    if not isinstance(found, RouteMatch):
        return found
    return routes.facts(found, query, body if found.needs_body else None, origin, referer)


def facts(api: str, connection: str | None, *sources: tuple[str, str]) -> RequestFacts:
    return RequestFacts(
        api=api,
        connection=connection,
        sources=tuple(Source(kind, value) for kind, value in sources),  # type: ignore[arg-type]
    )


# -- every default route --------------------------------------------------------------

T = ("table", "proj.ds.t")
Q = ("query", "SELECT 1")

DEFAULT_CASES = [
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&v=3.4&client=deck",
        None,
        facts("maps", "dw", T),
        id="maps-table-get",
    ),
    pytest.param(
        "POST",
        b"/v3/maps/dw/table",
        {"name": "proj.ds.t", "v": "3.4"},
        facts("maps", "dw", T),
        id="maps-table-post-body",
    ),
    pytest.param(
        "POST",
        b"/v3/maps/dw/table?name=proj.ds.t",
        {"name": "proj.ds.t"},
        facts("maps", "dw", T),
        id="maps-table-post-both-equal",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/tileset?name=proj.ds.tiles",
        None,
        facts("maps", "dw", ("tileset", "proj.ds.tiles")),
        id="maps-tileset",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/query?q=SELECT+1&queryParameters=%7B%7D",
        None,
        facts("maps", "dw", Q),
        id="maps-query-plus-is-space",
    ),
    pytest.param(
        "POST",
        b"/v3/maps/dw/query",
        {"q": "SELECT 1", "queryParameters": {"a": 1}},
        facts("maps", "dw", Q),
        id="maps-query-post",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/raster?name=proj.ds.r",
        None,
        facts("maps", "dw", ("table", "proj.ds.r")),
        id="maps-raster",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&format=tilejson&cache=1",
        None,
        facts("maps", "dw", T),
        id="maps-data-url-tilejson",
    ),
    pytest.param(
        "POST",
        b"/v3/maps/dw/table?name=proj.ds.t&format=tilejson",
        {"v": "3.4"},
        facts("maps", "dw", T),
        id="maps-data-url-long-post",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table/3/4/5?name=proj.ds.t&formatTiles=mvt",
        None,
        facts("maps", "dw", T),
        id="maps-table-tile",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/tileset/0/0/0?name=proj.ds.tiles",
        None,
        facts("maps", "dw", ("tileset", "proj.ds.tiles")),
        id="maps-tileset-tile",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/query/1/2/3?q=SELECT%201",
        None,
        facts("maps", "dw", Q),
        id="maps-query-tile",
    ),
    pytest.param(
        "HEAD", b"/v3/maps/dw/table?name=proj.ds.t", None, facts("maps", "dw", T), id="head-is-get"
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/query?q=SELECT%201&columns=",
        None,
        facts("maps", "dw", Q),
        id="maps-columns-empty-list",
    ),
    pytest.param(
        "GET",
        b"/v3/stats/dw/proj.ds.t/population",
        None,
        facts("maps", "dw", T),
        id="stats-table-path-source",
    ),
    pytest.param(
        "GET",
        b"/v3/stats/dw/proj.ds.t%20x/population",
        None,
        facts("maps", "dw", ("table", "proj.ds.t x")),
        id="stats-encoded-source",
    ),
    pytest.param(
        "GET",
        b"/v3/stats/dw/population?q=SELECT%201",
        None,
        facts("maps", "dw", Q),
        id="stats-query",
    ),
    pytest.param(
        "GET", b"/v3/sql/dw/query?q=SELECT%201", None, facts("sql", "dw", Q), id="sql-query-get"
    ),
    pytest.param(
        "POST", b"/v3/sql/dw/query", {"q": "SELECT 1"}, facts("sql", "dw", Q), id="sql-query-post"
    ),
    pytest.param(
        "POST", b"/v3/sql/dw/job", {"query": "SELECT 1"}, facts("sql", "dw", Q), id="sql-job-post"
    ),
    pytest.param("GET", b"/v3/sql/dw/job/abc-123", None, facts("sql", "dw"), id="sql-job-get"),
    pytest.param(
        "DELETE", b"/v3/sql/dw/job/abc-123", None, facts("sql", "dw"), id="sql-job-delete"
    ),
    pytest.param(
        "GET",
        b"/v3/sql/dw/model/category?type=table&source=proj.ds.t&params=%7B%7D",
        None,
        facts("sql", "dw", T),
        id="sql-model-table",
    ),
    pytest.param(
        "POST",
        b"/v3/sql/dw/model/histogram",
        {"type": "query", "source": "SELECT 1", "params": {}},
        facts("sql", "dw", Q),
        id="sql-model-query-post",
    ),
    pytest.param(
        "GET", b"/v3/lds/geocoding/geocode?address=x", None, facts("lds", None), id="lds-geocode"
    ),
    pytest.param(
        "GET", b"/v3/lds/geocoding/reverse?lat=1&lng=2", None, facts("lds", None), id="lds-reverse"
    ),
    pytest.param("POST", b"/v3/lds/geocoding/batch", None, facts("lds", None), id="lds-batch"),
    pytest.param(
        "GET",
        b"/v3/sql/dw/query?q=SELECT+1%3B",
        None,
        facts("sql", "dw", ("query", "SELECT 1;")),
        id="encoded-semicolon-in-query-value",
    ),
    pytest.param("GET", b"/v3/lds/isolines", None, facts("lds", None), id="lds-isolines"),
    pytest.param("GET", b"/v3/lds/routing", None, facts("lds", None), id="lds-routing"),
    pytest.param("GET", b"/v3/lds/quotas", None, facts("lds", None), id="lds-quotas"),
    pytest.param(
        "POST",
        b"/v3/imports",
        {"connection": "dw", "destination": "proj.ds.new", "url": "https://x/a.csv"},
        facts("imports", "dw", ("table", "proj.ds.new")),
        id="imports-post",
    ),
    pytest.param("GET", b"/v3/imports/imp-1", None, facts("imports", None), id="imports-get"),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&access_token=" + TOKEN.encode(),
        None,
        facts("maps", "dw", T),
        id="access-token-param-ignored",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&",
        None,
        facts("maps", "dw", T),
        id="trailing-ampersand",
    ),
    pytest.param(
        "GET", b"/v3/maps/dw/table?n%61me=proj.ds.t", None, facts("maps", "dw", T), id="encoded-key"
    ),
    pytest.param(
        "GET",
        b"/v%33/maps/dw/table?name=proj.ds.t",
        None,
        facts("maps", "dw", T),
        id="encoded-literal-matches-like-the-app",
    ),
    pytest.param(
        "GET",
        "/v3/maps/dw/table?name=proj.ds.café".encode(),
        None,
        facts("maps", "dw", ("table", "proj.ds.café")),
        id="raw-utf8-query",
    ),
]


@pytest.mark.parametrize(("method", "target", "body", "expected"), DEFAULT_CASES)
def test_default_routes_yield_facts(
    method: str, target: bytes, body: Mapping[str, Any] | None, expected: RequestFacts
) -> None:
    assert classify(method, target, body) == expected


def test_origin_and_referer_are_carried() -> None:
    got = classify(
        "GET", b"/v3/lds/isolines", origin="https://a.example", referer="https://a.example/m"
    )
    assert got == RequestFacts("lds", None, (), "https://a.example", "https://a.example/m")


@pytest.mark.parametrize(
    ("method", "path", "needs_body"),
    [
        pytest.param("POST", b"/v3/maps/dw/table", True, id="maps-post"),
        pytest.param("GET", b"/v3/maps/dw/table", False, id="maps-get"),
        pytest.param("POST", b"/v3/sql/dw/query", True, id="sql-query-post"),
        pytest.param("POST", b"/v3/sql/dw/job", True, id="sql-job-post"),
        pytest.param("POST", b"/v3/sql/dw/model/pick", True, id="model-post"),
        pytest.param("POST", b"/v3/imports", True, id="imports-post"),
        # filters and spatialDataType may come in a POST body (the client POSTs long URLs)
        pytest.param("POST", b"/v3/stats/dw/proj.ds.t/a", True, id="stats-path-source"),
        pytest.param("POST", b"/v3/lds/geocoding/batch", False, id="lds-no-source"),
        pytest.param("DELETE", b"/v3/sql/dw/job/1", False, id="job-delete"),
    ],
)
def test_needs_body(method: str, path: bytes, needs_body: bool) -> None:
    found = ROUTES.match(method, path)
    assert isinstance(found, RouteMatch)
    assert found.needs_body is needs_body


def test_match_params_are_decoded() -> None:
    found = ROUTES.match("GET", b"/v3/stats/dw/proj.ds.t%2Dx/a%20b")
    assert isinstance(found, RouteMatch)
    assert dict(found.params) == {"connection": "dw", "source": "proj.ds.t-x", "attribute": "a b"}


# -- attacks and malformed requests ---------------------------------------------------

ATTACKS = [
    # dot segments, plain and encoded, anywhere inside (or resolving into) the prefix
    pytest.param("GET", b"/v3/maps/c/../../admin", codes.MALFORMED_REQUEST, id="dotdot"),
    pytest.param("GET", b"/v3/maps/c/./table?name=a.b.c", codes.MALFORMED_REQUEST, id="dot"),
    pytest.param("GET", b"/v3/maps/c/%2e%2e/x", codes.MALFORMED_REQUEST, id="encoded-dotdot"),
    pytest.param("GET", b"/v3/maps/c/%2E/table", codes.MALFORMED_REQUEST, id="encoded-dot"),
    pytest.param(
        "GET", b"/x/../v3/maps/c/table?name=a", codes.MALFORMED_REQUEST, id="dotdot-into-prefix"
    ),
    pytest.param("GET", b"/v3/../admin", codes.MALFORMED_REQUEST, id="dotdot-out-of-prefix"),
    pytest.param("GET", b"/v3/maps/c/table/..", codes.MALFORMED_REQUEST, id="trailing-dotdot"),
    # empty segments
    pytest.param("GET", b"/v3//maps", codes.MALFORMED_REQUEST, id="double-slash"),
    pytest.param(
        "GET", b"//v3/maps/c/table?name=a", codes.MALFORMED_REQUEST, id="leading-double-slash"
    ),
    pytest.param("GET", b"/v3/maps/c/table/", codes.MALFORMED_REQUEST, id="trailing-slash"),
    pytest.param("GET", b"/v3/maps//table?name=a", codes.MALFORMED_REQUEST, id="empty-connection"),
    # encoded separators and NUL
    pytest.param(
        "GET", b"/v3/maps/c%2Fx/table?name=a", codes.MALFORMED_REQUEST, id="encoded-slash"
    ),
    pytest.param(
        "GET", b"/v3/maps/c%2fx/table?name=a", codes.MALFORMED_REQUEST, id="encoded-slash-lower"
    ),
    pytest.param(
        "GET", b"/v3%2Fmaps/c/table?name=a", codes.MALFORMED_REQUEST, id="encoded-slash-in-prefix"
    ),
    pytest.param(
        "GET", b"/v3/maps/c%5Cx/table?name=a", codes.MALFORMED_REQUEST, id="encoded-backslash"
    ),
    pytest.param(
        "GET", b"/v3/maps/c\\..\\x/table?name=a", codes.MALFORMED_REQUEST, id="raw-backslash"
    ),
    pytest.param("GET", b"/v3/maps/c%00/table?name=a", codes.MALFORMED_REQUEST, id="nul"),
    pytest.param("GET", b"/v3%00/maps/c/table?name=a", codes.MALFORMED_REQUEST, id="nul-in-prefix"),
    pytest.param("GET", b"/v3/maps/c\x00/table?name=a", codes.MALFORMED_REQUEST, id="raw-nul"),
    pytest.param(
        "GET", b"/v3/maps/c%0a/table?name=a", codes.MALFORMED_REQUEST, id="encoded-newline"
    ),
    pytest.param("GET", b"/v3/maps/c /table?name=a", codes.MALFORMED_REQUEST, id="raw-space"),
    pytest.param(
        "GET", b"/v3/maps/c%252e%252e/table?name=a", codes.MALFORMED_REQUEST, id="double-encoded"
    ),
    # invalid percent-encoding / UTF-8
    pytest.param("GET", b"/v3/maps/c%zz/table?name=a", codes.MALFORMED_REQUEST, id="bad-escape"),
    pytest.param("GET", b"/v3/maps/c%2/table?name=a", codes.MALFORMED_REQUEST, id="short-escape"),
    pytest.param("GET", b"/v3/maps/c%/table?name=a", codes.MALFORMED_REQUEST, id="bare-percent"),
    pytest.param(
        "GET", b"/v3/maps/c%ff/table?name=a", codes.MALFORMED_REQUEST, id="encoded-non-utf8"
    ),
    pytest.param("GET", b"/v3/maps/c\xff/table?name=a", codes.MALFORMED_REQUEST, id="raw-non-utf8"),
    pytest.param(
        "GET", b"/v3/maps/c%c0%af/table?name=a", codes.MALFORMED_REQUEST, id="overlong-utf8-slash"
    ),
    # matrix parameters, fragments, query in the path
    pytest.param("GET", b"/v3/maps/c/table;x=1?name=a", codes.MALFORMED_REQUEST, id="matrix"),
    pytest.param(
        "GET", b"/v3;x=1/maps/c/table?name=a", codes.MALFORMED_REQUEST, id="matrix-in-prefix"
    ),
    pytest.param(
        "GET", b"/v3/maps/c%3Bx/table?name=a", codes.MALFORMED_REQUEST, id="encoded-semicolon"
    ),
    pytest.param("GET", b"/v3/maps/c/table#x", codes.MALFORMED_REQUEST, id="fragment"),
    # overlong
    pytest.param(
        "GET", b"/v3/stats/c/" + b"a" * 5000 + b"/x", codes.MALFORMED_REQUEST, id="overlong-path"
    ),
    pytest.param("GET", b"/v3/" + b"a/" * 40 + b"a", codes.UNKNOWN_ROUTE, id="many-segments"),
    # case and unknown shapes: deny-by-default
    pytest.param("GET", b"/v3/Maps/c/table?name=a", codes.UNKNOWN_ROUTE, id="case-segment"),
    pytest.param("GET", b"/V3/maps/c/table?name=a", codes.UNKNOWN_ROUTE, id="case-prefix"),
    pytest.param("GET", b"/v3/maps/c/TABLE?name=a", codes.UNKNOWN_ROUTE, id="case-literal"),
    pytest.param("GET", b"/v3", codes.UNKNOWN_ROUTE, id="prefix-without-slash"),
    pytest.param("GET", b"/v3/", codes.UNKNOWN_ROUTE, id="prefix-root"),
    pytest.param("GET", b"/v3/admin", codes.UNKNOWN_ROUTE, id="unknown"),
    pytest.param("GET", b"/v3/maps/c/tables?name=a", codes.UNKNOWN_ROUTE, id="unknown-type"),
    pytest.param("GET", b"/v3/maps/public/abcd-1234", codes.UNKNOWN_ROUTE, id="public-map"),
    pytest.param("GET", b"/v3/maps/c/table/1/2?name=a", codes.UNKNOWN_ROUTE, id="short-tile"),
    pytest.param("GET", b"/v3/tokens", codes.UNKNOWN_ROUTE, id="tokens-api-not-a-data-route"),
    pytest.param("PUT", b"/v3/maps/c/table?name=a", codes.UNKNOWN_ROUTE, id="wrong-method"),
    pytest.param("GET", b"/v3/sql/c/job", codes.UNKNOWN_ROUTE, id="job-get-without-id"),
    pytest.param("OPTIONS", b"/v3/maps/c/table", codes.UNKNOWN_ROUTE, id="options"),
    pytest.param("get", b"/v3/maps/c/table?name=a", codes.UNKNOWN_ROUTE, id="lowercase-method"),
    pytest.param("POST", b"/v3/lds/geocoding/unknown", codes.UNKNOWN_ROUTE, id="lds-unknown"),
    # a path that is not origin-form cannot be proven outside the prefix
    pytest.param(
        "GET", b"http://h/v3/maps/c/table?name=a", codes.MALFORMED_REQUEST, id="absolute-form"
    ),
    pytest.param("GET", b"", codes.MALFORMED_REQUEST, id="empty-path"),
    # connection names
    pytest.param(
        "GET", b"/v3/maps/-c/table?name=a", codes.MALFORMED_REQUEST, id="bad-connection-name"
    ),
    pytest.param(
        "GET",
        b"/v3/maps/" + b"c" * 129 + b"/table?name=a",
        codes.MALFORMED_REQUEST,
        id="long-connection-name",
    ),
    pytest.param(
        "GET", b"/v3/maps/c%20d/table?name=a", codes.MALFORMED_REQUEST, id="connection-with-space"
    ),
    # source parameters
    pytest.param("GET", b"/v3/maps/c/table", codes.MALFORMED_REQUEST, id="missing-source"),
    pytest.param("GET", b"/v3/maps/c/table?name=", codes.MALFORMED_REQUEST, id="empty-source"),
    pytest.param("GET", b"/v3/maps/c/table?name=%20", codes.MALFORMED_REQUEST, id="blank-source"),
    pytest.param(
        "GET", b"/v3/maps/c/table?name", codes.MALFORMED_REQUEST, id="source-without-value"
    ),
    pytest.param(
        "GET",
        b"/v3/maps/c/table?name=a.b.c&name=a.b.c",
        codes.AMBIGUOUS_REQUEST,
        id="duplicate-equal",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/c/table?name=a.b.c&name=x.y.z",
        codes.AMBIGUOUS_REQUEST,
        id="duplicate-different",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/c/table?name=a.b.c&n%61me=x.y.z",
        codes.AMBIGUOUS_REQUEST,
        id="duplicate-encoded-key",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/c/query?q=SELECT+1&q=SELECT+2",
        codes.AMBIGUOUS_REQUEST,
        id="duplicate-query",
    ),
    pytest.param(
        "GET", b"/v3/maps/c/table?name=a%zz", codes.MALFORMED_REQUEST, id="query-bad-escape"
    ),
    pytest.param(
        "GET",
        b"/v3/maps/c/table?name=a.b.c&v=%",
        codes.MALFORMED_REQUEST,
        id="query-bad-escape-elsewhere",
    ),
    pytest.param("GET", b"/v3/maps/c/table?name=%ff", codes.MALFORMED_REQUEST, id="query-non-utf8"),
    pytest.param(
        "GET", b"/v3/maps/c/table?name=\xff", codes.MALFORMED_REQUEST, id="query-raw-non-utf8"
    ),
    pytest.param(
        "GET",
        b"/v3/sql/c/model/category?source=a.b.c",
        codes.MALFORMED_REQUEST,
        id="model-without-type",
    ),
    pytest.param(
        "GET",
        b"/v3/sql/c/model/category?type=tileset&source=a.b.c",
        codes.MALFORMED_REQUEST,
        id="model-tileset",
    ),
    pytest.param(
        "GET",
        b"/v3/sql/c/model/category?type=TABLE&source=a.b.c",
        codes.MALFORMED_REQUEST,
        id="model-type-case",
    ),
    pytest.param(
        "GET",
        b"/v3/sql/c/model/category?type=table&type=query&source=a.b.c",
        codes.AMBIGUOUS_REQUEST,
        id="model-duplicate-type",
    ),
    pytest.param("GET", b"/v3/stats/c/attr", codes.MALFORMED_REQUEST, id="stats-query-missing"),
    pytest.param(
        "GET",
        b"/v3/maps/c/table?name=a.b.c&x=1;name=x.y.z",
        codes.MALFORMED_REQUEST,
        id="semicolon-separator-smuggling",
    ),
]

BODY_ATTACKS = [
    pytest.param(
        "POST",
        b"/v3/maps/c/table?name=a.b.c",
        {"name": "x.y.z"},
        codes.AMBIGUOUS_REQUEST,
        id="query-and-body-differ",
    ),
    pytest.param(
        "POST",
        b"/v3/maps/c/table",
        {"name": ["a.b.c"]},
        codes.MALFORMED_REQUEST,
        id="body-list-value",
    ),
    pytest.param(
        "POST", b"/v3/maps/c/table", {"name": None}, codes.MALFORMED_REQUEST, id="body-null-value"
    ),
    pytest.param(
        "POST", b"/v3/maps/c/table", {"name": 3}, codes.MALFORMED_REQUEST, id="body-number-value"
    ),
    pytest.param(
        "POST", b"/v3/maps/c/table", ["a.b.c"], codes.MALFORMED_REQUEST, id="body-not-object"
    ),
    pytest.param("POST", b"/v3/maps/c/table", {}, codes.MALFORMED_REQUEST, id="body-empty"),
    pytest.param("POST", b"/v3/sql/c/job", None, codes.MALFORMED_REQUEST, id="job-no-body"),
    pytest.param(
        "POST",
        b"/v3/sql/c/model/x",
        {"type": "tileset", "source": "a.b.c"},
        codes.MALFORMED_REQUEST,
        id="model-body-tileset",
    ),
    pytest.param(
        "POST",
        b"/v3/sql/c/model/x?type=query",
        {"type": "table", "source": "a.b.c"},
        codes.AMBIGUOUS_REQUEST,
        id="model-type-differs",
    ),
    pytest.param(
        "POST",
        b"/v3/imports",
        {"destination": "a.b.c"},
        codes.MALFORMED_REQUEST,
        id="imports-no-connection",
    ),
    pytest.param(
        "POST",
        b"/v3/imports",
        {"connection": "c"},
        codes.MALFORMED_REQUEST,
        id="imports-no-destination",
    ),
    pytest.param(
        "POST",
        b"/v3/imports",
        {"connection": "../x", "destination": "a.b.c"},
        codes.MALFORMED_REQUEST,
        id="imports-bad-connection",
    ),
    pytest.param(
        "POST",
        b"/v3/imports?connection=c",
        {"connection": "d", "destination": "a"},
        codes.AMBIGUOUS_REQUEST,
        id="imports-connection-differs",
    ),
]


@pytest.mark.parametrize(("method", "target", "code"), ATTACKS)
def test_attacks_are_denied(method: str, target: bytes, code: str) -> None:
    got = classify(method, target)
    assert isinstance(got, Denial), got
    assert got.code == code, got
    assert got.status == (403 if code == codes.UNKNOWN_ROUTE else 400)
    assert got.message and got.hint


@pytest.mark.parametrize(("method", "target", "body", "code"), BODY_ATTACKS)
def test_body_attacks_are_denied(method: str, target: bytes, body: Any, code: str) -> None:
    got = classify(method, target, body)
    assert isinstance(got, Denial), got
    assert got.code == code, got
    assert got.status == 400


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(b"/", id="root"),
        pytest.param(b"/v3x/maps/c/table", id="prefix-trick"),
        pytest.param(b"/v33/maps", id="prefix-digit"),
        pytest.param(b"/static/app.js", id="static"),
        pytest.param(b"/static//app.js", id="empty-segment-outside"),
        pytest.param(b"/static/%zz", id="bad-escape-outside"),
        pytest.param(b"/health;x=1", id="matrix-outside"),
        pytest.param(b"/api/v3/maps/c/table", id="prefix-not-at-start"),
    ],
)
def test_outside_the_prefix_passes_through(path: bytes) -> None:
    assert ROUTES.match("GET", path) is None


def test_denials_name_the_parameter_and_never_echo_values() -> None:
    got = classify("GET", b"/v3/maps/c/table?access_token=" + TOKEN.encode())
    assert isinstance(got, Denial) and got.code == codes.MALFORMED_REQUEST
    assert "name" in got.message
    for target, code in (
        (b"/v3/maps/c/table?name=a&name=b&access_token=" + TOKEN.encode(),
         codes.AMBIGUOUS_REQUEST),
        (b"/v3/maps/" + TOKEN.encode() + b"x/table", codes.MALFORMED_REQUEST),
        (b"/v3/" + TOKEN.encode(), codes.UNKNOWN_ROUTE),
        (b"/v3/maps/c/table?access_token=" + TOKEN.encode() + b"&name=%zz",
         codes.MALFORMED_REQUEST),
    ):
        denial = classify("GET", target)
        assert isinstance(denial, Denial) and denial.code == code, target
        assert TOKEN not in repr(denial)


def test_unknown_route_hint_says_how_to_declare_one() -> None:
    got = classify("GET", b"/v3/custom/dw/things")
    assert isinstance(got, Denial) and got.code == codes.UNKNOWN_ROUTE
    assert "Route(" in got.hint


def test_wrong_method_lists_the_declared_methods() -> None:
    got = classify("POST", b"/v3/sql/c/job/1")
    assert isinstance(got, Denial) and got.code == codes.UNKNOWN_ROUTE
    assert "DELETE, GET" in got.message


# -- custom routes and configuration ---------------------------------------------------


def test_custom_route_in_a_few_lines() -> None:
    routes = RouteMap(
        routes=[
            Route(api="sql", path="/v3/custom/{connection}/things", source_param="table"),
            Route(
                api="maps",
                path="/v3/custom/{connection}/summary/{source}",
                methods=frozenset({"GET"}),
            ),
        ]
    )
    assert classify("GET", b"/v3/custom/dw/things?table=p.d.t", routes=routes) == facts(
        "sql", "dw", ("table", "p.d.t")
    )
    assert classify("POST", b"/v3/custom/dw/things", {"table": "p.d.t"}, routes=routes) == facts(
        "sql", "dw", ("table", "p.d.t")
    )
    assert classify("GET", b"/v3/custom/dw/summary/p.d.t", routes=routes) == facts(
        "maps", "dw", ("table", "p.d.t")
    )
    # the defaults are still there
    assert classify("GET", b"/v3/sql/dw/query?q=SELECT+1", routes=routes) == facts("sql", "dw", Q)


def test_literal_segment_wins_over_a_placeholder() -> None:
    routes = RouteMap(
        routes=[
            Route(api="lds", path="/v3/things/{connection}/list"),
            Route(api="maps", path="/v3/things/special/list"),
        ],
        include_defaults=False,
    )
    got = classify("GET", b"/v3/things/special/list", routes=routes)
    assert isinstance(got, RequestFacts) and got.api == "maps"
    got = classify("GET", b"/v3/things/dw/list", routes=routes)
    assert isinstance(got, RequestFacts) and (got.api, got.connection) == ("lds", "dw")


def test_custom_prefix() -> None:
    routes = RouteMap(
        prefix="/api/v1/",
        routes=[Route(api="maps", path="/api/v1/{connection}/layer", source_param="name")],
        include_defaults=False,
    )
    assert classify("GET", b"/api/v1/dw/layer?name=a.b.c", routes=routes) == facts(
        "maps", "dw", ("table", "a.b.c")
    )
    assert routes.match("GET", b"/v3/maps/dw/table") is None
    got = routes.match("GET", b"/api/v1/../v1/dw/layer")
    assert isinstance(got, Denial) and got.code == codes.MALFORMED_REQUEST


def test_default_routes_are_exported_for_reuse() -> None:
    without_jobs = [r for r in DEFAULT_ROUTES if "/job" not in r.path]
    routes = RouteMap(routes=without_jobs, include_defaults=False)
    got = routes.match("POST", b"/v3/sql/dw/job")
    assert isinstance(got, Denial) and got.code == codes.UNKNOWN_ROUTE


BAD_CONFIG = [
    pytest.param({}, [Route(api="bogus", path="/v3/x")], "bogus", id="unknown-api"),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/maps/{connection}/table")],
        "table",
        id="duplicate-of-default",
    ),
    pytest.param(
        {"include_defaults": False},
        [Route(api="maps", path="/v3/a/{x}"), Route(api="sql", path="/v3/a/{y}")],
        "/v3/a/{y}",
        id="duplicate-shape",
    ),
    pytest.param({}, [Route(api="maps", path="/other/x")], "/other/x", id="outside-prefix"),
    pytest.param({}, [Route(api="maps", path="/v3/a/../b")], "..", id="dot-segment"),
    pytest.param({}, [Route(api="maps", path="/v3/a//b")], "empty", id="empty-segment"),
    pytest.param({}, [Route(api="maps", path="/v3/a/")], "empty", id="trailing-slash"),
    pytest.param({}, [Route(api="maps", path="/v3/a/{x")], "{x", id="unclosed-brace"),
    pytest.param({}, [Route(api="maps", path="/v3/a/b{x}")], "b{x}", id="partial-placeholder"),
    pytest.param({}, [Route(api="maps", path="/v3/a/{1x}")], "1x", id="bad-placeholder"),
    pytest.param({}, [Route(api="maps", path="/v3/a/{x}/{x}")], "twice", id="repeated-name"),
    pytest.param({}, [Route(api="maps", path="/v3/a%2f")], "%", id="escape-in-literal"),
    pytest.param({}, [Route(api="maps", path="/v3/a;b")], ";", id="semicolon-literal"),
    pytest.param(
        {}, [Route(api="maps", path="/v3/a", methods=frozenset())], "methods", id="no-methods"
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", methods=frozenset({"get"}))],
        "get",
        id="lowercase-method",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", source_kind="view")],  # type: ignore[arg-type]
        "view",
        id="bad-kind",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a/{source}", source_param="name")],
        "{source}",
        id="two-sources",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a/{connection}", connection_param="c")],
        "{connection}",
        id="two-connections",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", kind_param="type")],
        "kind_param",
        id="kind-without-source",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", source_param="access_token")],
        "access_token",
        id="token-param",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", source_param="x", kind_param="x")],
        "x",
        id="same-param-twice",
    ),
    pytest.param({"prefix": "v3/"}, [], "prefix", id="prefix-without-slash"),
    pytest.param({"prefix": "/v3"}, [], "prefix", id="prefix-without-trailing-slash"),
    pytest.param({"prefix": "/v3/../"}, [], "prefix", id="prefix-dot-segment"),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", sql_params=(SqlParam("x", "sql"),))],  # type: ignore[arg-type]
        "check 'sql'",
        id="sql-param-unknown-check",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", sql_params=(SqlParam("dir", "keyword"),))],
        "lower-case choices",
        id="keyword-without-choices",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", sql_params=(SqlParam("a.b.c", "identifier"),))],
        "'object.key'",
        id="sql-param-nested-too-deep",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", sql_params=(SqlParam("{col}", "identifier"),))],
        "placeholder",
        id="sql-param-path-placeholder-missing",
    ),
    pytest.param(
        {},
        [
            Route(
                api="maps",
                path="/v3/a",
                expression_params=frozenset({"e"}),
                sql_params=(SqlParam("e", "expression"),),
            )
        ],
        "twice",
        id="sql-param-declared-twice",
    ),
    pytest.param(
        {},
        [
            Route(
                api="maps",
                path="/v3/a",
                sql_params=(SqlParam("p", "identifier"), SqlParam("p.k", "identifier")),
            )
        ],
        "one role",
        id="sql-param-value-and-object",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", source_param="q", sql_params=(SqlParam("q", "data"),))],
        "one role",
        id="sql-param-is-the-source",
    ),
    pytest.param(
        {},
        [Route(api="maps", path="/v3/a", sql_params=("aggregationExp",))],  # type: ignore[arg-type]
        "tuple of SqlParam",
        id="sql-params-not-sql-param",
    ),
]


@pytest.mark.parametrize(("kwargs", "routes", "fragment"), BAD_CONFIG)
def test_bad_configuration_is_refused_at_start(
    kwargs: dict[str, Any], routes: list[Route], fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        RouteMap(routes=routes, **kwargs)
    assert fragment in str(err.value)


def test_same_shape_with_disjoint_methods_is_allowed() -> None:
    routes = RouteMap(
        routes=[
            Route(api="maps", path="/v3/a/{x}", methods=frozenset({"GET"})),
            Route(api="sql", path="/v3/a/{y}", methods=frozenset({"POST"})),
        ],
        include_defaults=False,
    )
    got = classify("POST", b"/v3/a/1", routes=routes)
    assert isinstance(got, RequestFacts) and got.api == "sql"


# -- properties ------------------------------------------------------------------------

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            "%2f",
            "%2F",
            "%5c",
            "%00",
            "%",
            "%zz",
            "%ff",
            ";x=1",
            "\\",
            "maps",
            "sql",
            "stats",
            "table",
            "query",
            "job",
            "model",
            "c",
            "dw",
            "v3",
            "V3",
            "%252e",
            "..%2f",
            "a%2fb",
        ]
    ),
    st.text(alphabet="abc./%2eEfF5c0;\\", min_size=0, max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PUT"]),
    segments=st.lists(SEGMENT, min_size=0, max_size=8),
    query=st.sampled_from([b"", b"name=a.b.c", b"q=SELECT+1&type=table&source=a.b.c"]),
)
def test_random_paths_never_raise_nor_yield_unsafe_connections(
    method: str, segments: list[str], query: bytes
) -> None:
    raw = ("/" + "/".join(segments)).encode("utf-8", "surrogatepass")
    got = classify(method, raw + b"?" + query, {"destination": "a.b.c", "connection": "dw"})
    if isinstance(got, RequestFacts):
        assert got.connection is None or (
            "/" not in got.connection
            and ".." not in got.connection
            and "\\" not in got.connection
            and "%" not in got.connection
        )
        assert raw.startswith(b"/v3/") and b"//" not in raw
        assert b"/./" not in raw + b"/" and b"/../" not in raw + b"/"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    for path in (raw, b"/v3/" + raw, b"/v3/maps/" + raw + b"/table"):
        got = ROUTES.match("GET", path)
        assert got is None or isinstance(got, (Denial, RouteMatch))
        if isinstance(got, RouteMatch):
            assert isinstance(ROUTES.facts(got, raw, None, None, None), (Denial, RequestFacts))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_query_strings_never_raise(query: bytes) -> None:
    found = ROUTES.match("GET", b"/v3/sql/dw/model/category")
    assert isinstance(found, RouteMatch)
    got = ROUTES.facts(found, query, None, None, None)
    assert isinstance(got, (Denial, RequestFacts))


def test_a_hand_built_match_is_read_like_a_matched_one() -> None:
    route = Route(api="maps", path="/v3/x/{connection}", source_param="name")
    found = RouteMatch(route, {"connection": "dw"}, needs_body=False)
    assert ROUTES.facts(found, b"name=a.b.c", None, None, None) == facts(
        "maps", "dw", ("table", "a.b.c")
    )


def test_a_declared_head_route_wins_over_get() -> None:
    routes = RouteMap(
        routes=[
            Route(api="maps", path="/v3/a/{connection}", methods=frozenset({"GET"})),
            Route(api="lds", path="/v3/a/{connection}", methods=frozenset({"HEAD"})),
        ],
        include_defaults=False,
    )
    got = classify("HEAD", b"/v3/a/dw", routes=routes)
    assert isinstance(got, RequestFacts) and got.api == "lds"


# -- parameters the backend puts into SQL ---------------------------------------------


def model(widget: str, params: object, **extra: str) -> bytes:
    """A SQL model (widget) URL as @carto/api-client builds it: ``params`` as JSON text."""
    query = {"type": "table", "source": "proj.ds.t", "params": json.dumps(params), **extra}
    return f"/v3/sql/dw/model/{widget}?{urlencode(query)}".encode()


SECRET = "(SELECT MAX(s) FROM proj.ds.secret)"
MODEL_SOURCE = ("table", "proj.ds.t")

SQL_PARAM_CASES = [
    pytest.param(
        "GET",
        model("formula", {"column": "*", "operation": "custom", "operationExp": SECRET}),
        None,
        facts("sql", "dw", MODEL_SOURCE, ("query", f"SELECT {SECRET}")),
        id="formula-operation-exp-get",
    ),
    pytest.param(
        "POST",
        b"/v3/sql/dw/model/formula",
        {
            "type": "table",
            "source": "proj.ds.t",
            "params": {"column": "*", "operation": "custom", "operationExp": SECRET},
        },
        facts("sql", "dw", MODEL_SOURCE, ("query", f"SELECT {SECRET}")),
        id="formula-operation-exp-post-object",
    ),
    pytest.param(
        "POST",
        b"/v3/sql/dw/model/formula",
        {
            "type": "table",
            "source": "proj.ds.t",
            "params": json.dumps({"operation": "custom", "operationExp": SECRET}),
        },
        facts("sql", "dw", MODEL_SOURCE, ("query", f"SELECT {SECRET}")),
        id="formula-operation-exp-post-json-text",
    ),
    pytest.param(
        "GET",
        model("aggregations", {"aggregations": "sum(x) AS a, (SELECT 1 FROM proj.ds.secret)"}),
        None,
        facts(
            "sql",
            "dw",
            MODEL_SOURCE,
            ("query", "SELECT sum(x) AS a, (SELECT 1 FROM proj.ds.secret)"),
        ),
        id="aggregations-sql-string",
    ),
    pytest.param(
        "GET",
        model(
            "timeseries",
            {
                "column": "date",
                "stepSize": "month",
                "operation": "custom",
                "operationExp": "sum(a)/sum(b)",
                "operationColumn": "date",
                "joinOperation": "sum",
                "splitByCategory": "kind",
                "splitByCategoryLimit": 5,
                "splitByCategoryValues": ["x') OR 1=1 --"],
            },
        ),
        None,
        facts("sql", "dw", MODEL_SOURCE, ("query", "SELECT sum(a)/sum(b)")),
        id="timeseries-custom-values-are-data",
    ),
    pytest.param(
        "GET",
        model(
            "aggregations",
            {"aggregations": [{"column": "pop", "operation": "sum", "alias": "total"}]},
        ),
        None,
        facts("sql", "dw", MODEL_SOURCE),
        id="aggregations-array",
    ),
    pytest.param(
        "GET",
        model(
            "category",
            {
                "column": "city",
                "operation": "sum",
                "operationColumn": "revenue",
                "othersThreshold": None,
                "orderBy": "frequency_desc",
                "featureIds": ["a1"],
                "geometryType": "points",
            },
            filters=json.dumps({"kind": {"in": {"values": ["a'b"], "owner": "w1"}}}),
            filtersLogicalOperator="and",
            spatialDataType="geo",
            spatialDataColumn="geom",
            spatialFilters=json.dumps({"geom": {"type": "Polygon", "coordinates": []}}),
            queryParameters="",
        ),
        None,
        facts("sql", "dw", MODEL_SOURCE),
        id="category-widget-as-the-client-sends-it",
    ),
    pytest.param(
        "GET",
        model(
            "table",
            {
                "column": ["a", "b"],
                "sortBy": "a",
                "sortDirection": "desc",
                "limit": 10,
                "offset": 0,
            },
        ),
        None,
        facts("sql", "dw", MODEL_SOURCE),
        id="table-widget-column-list",
    ),
    pytest.param(
        "GET",
        model("histogram", {"column": "x", "operation": "count", "ticks": [1, 2.5, -3]}),
        None,
        facts("sql", "dw", MODEL_SOURCE),
        id="histogram-ticks",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&columns=a,b,_c1&spatialDataColumn=geom"
        b"&spatialDataType=geo&tileResolution=0.5&filters=%7B%22a%22%3A%7B%22in%22%3A"
        b"%7B%22values%22%3A%5B1%5D%7D%7D%7D",
        None,
        facts("maps", "dw", T),
        id="maps-table-columns-and-filters",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/query?q=SELECT%201&columns=",
        None,
        facts("maps", "dw", Q),
        id="maps-columns-empty-list",
    ),
    pytest.param(
        "GET",
        b"/v3/stats/dw/proj.ds.t/population",
        None,
        facts("maps", "dw", T),
        id="stats-attribute",
    ),
]


@pytest.mark.parametrize(("method", "target", "body", "expected"), SQL_PARAM_CASES)
def test_sql_params_become_sources_or_pass_as_data(
    method: str, target: bytes, body: Any, expected: RequestFacts
) -> None:
    assert classify(method, target, body) == expected


PARAM_ATTACKS = [
    # the params parameter itself
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}) + b"&params=%7B%7D",
        None,
        codes.AMBIGUOUS_REQUEST,
        id="params-twice",
    ),
    pytest.param(
        "GET",
        b"/v3/sql/dw/model/formula?type=table&source=proj.ds.t&params=%7Boperation",
        None,
        codes.MALFORMED_REQUEST,
        id="params-not-json",
    ),
    pytest.param(
        "GET",
        b"/v3/sql/dw/model/formula?type=table&source=proj.ds.t&params="
        + quote('{"operationExp":"1","operationExp":"(SELECT 1 FROM p.d.secret)"}').encode(),
        None,
        codes.MALFORMED_REQUEST,
        id="params-duplicate-keys",
    ),
    pytest.param(
        "GET",
        model("formula", ["operationExp"]),
        None,
        codes.MALFORMED_REQUEST,
        id="params-not-an-object",
    ),
    pytest.param(
        "GET",
        b"/v3/sql/dw/model/formula?type=table&source=proj.ds.t&params=%7B%22z%22%3ANaN%7D",
        None,
        codes.MALFORMED_REQUEST,
        id="params-nan",
    ),
    pytest.param(
        "GET",
        model("formula", {"newSqlKnob": "x"}),
        None,
        codes.MALFORMED_REQUEST,
        id="params-unknown-key",
    ),
    pytest.param(
        "POST",
        model("formula", {"operation": "count"}),
        {"params": {"operation": "custom", "operationExp": SECRET}},
        codes.AMBIGUOUS_REQUEST,
        id="params-query-and-body-differ",
    ),
    pytest.param(
        "POST",
        b"/v3/sql/dw/model/formula",
        {"type": "table", "source": "proj.ds.t", "params": 7},
        codes.MALFORMED_REQUEST,
        id="params-body-number",
    ),
    pytest.param(
        "POST",
        b"/v3/sql/dw/model/formula",
        {"type": "table", "source": "proj.ds.t", "params": "{not json"},
        codes.MALFORMED_REQUEST,
        id="params-body-text-not-json",
    ),
    # expressions
    pytest.param(
        "GET",
        model("formula", {"operation": "custom", "operationExp": ["1"]}),
        None,
        codes.MALFORMED_REQUEST,
        id="operation-exp-not-a-string",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "custom", "operationExp": " "}),
        None,
        codes.MALFORMED_REQUEST,
        id="operation-exp-empty",
    ),
    # identifiers
    pytest.param(
        "GET",
        model("formula", {"column": "x) FROM proj.ds.secret --", "operation": "sum"}),
        None,
        codes.MALFORMED_REQUEST,
        id="column-with-sql",
    ),
    pytest.param(
        "GET",
        model("category", {"column": "c", "operation": "sum", "operationColumn": "(SELECT 1)"}),
        None,
        codes.MALFORMED_REQUEST,
        id="operation-column-with-sql",
    ),
    pytest.param(
        "GET",
        model("table", {"column": ["a", "b FROM proj.ds.secret"]}),
        None,
        codes.MALFORMED_REQUEST,
        id="table-column-list-item-with-sql",
    ),
    pytest.param(
        "GET",
        model("pick", {"columns": ["a", 1]}),
        None,
        codes.MALFORMED_REQUEST,
        id="pick-column-not-a-string",
    ),
    pytest.param(
        "GET",
        model("table", {"column": ["a"], "sortBy": "a; DROP TABLE x"}),
        None,
        codes.MALFORMED_REQUEST,
        id="sort-by-with-sql",
    ),
    pytest.param(
        "GET",
        model("scatterplot", {"xAxisColumn": "a", "yAxisColumn": "`b`"}),
        None,
        codes.MALFORMED_REQUEST,
        id="quoted-identifier",
    ),
    pytest.param(
        "GET",
        model("timeseries", {"column": "d", "stepSize": "month", "splitByCategory": "k UNION ALL"}),
        None,
        codes.MALFORMED_REQUEST,
        id="split-by-category-with-sql",
    ),
    # keywords and numbers
    pytest.param(
        "GET",
        model("formula", {"column": "x", "operation": "max(x) FROM proj.ds.secret --"}),
        None,
        codes.MALFORMED_REQUEST,
        id="operation-not-a-known-aggregate",
    ),
    pytest.param(
        "GET",
        model("table", {"column": ["a"], "sortDirection": "desc, (SELECT 1)"}),
        None,
        codes.MALFORMED_REQUEST,
        id="sort-direction-with-sql",
    ),
    pytest.param(
        "GET",
        model("table", {"column": ["a"], "limit": "1 UNION SELECT 1"}),
        None,
        codes.MALFORMED_REQUEST,
        id="limit-with-sql",
    ),
    pytest.param(
        "GET",
        model("table", {"column": ["a"], "limit": True}),
        None,
        codes.MALFORMED_REQUEST,
        id="limit-boolean",
    ),
    pytest.param(
        "GET",
        model("histogram", {"column": "x", "ticks": [1, "2) OR (1"]}),
        None,
        codes.MALFORMED_REQUEST,
        id="ticks-with-sql",
    ),
    # aggregations given as an array
    pytest.param(
        "GET",
        model(
            "aggregations",
            {
                "aggregations": [
                    {"column": "x) FROM proj.ds.secret --", "operation": "sum", "alias": "a"}
                ]
            },
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="aggregations-column-with-sql",
    ),
    pytest.param(
        "GET",
        model(
            "aggregations",
            {
                "aggregations": [
                    {"column": "x", "operation": "sum", "alias": "a FROM proj.ds.secret --"}
                ]
            },
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="aggregations-alias-with-sql",
    ),
    pytest.param(
        "GET",
        model(
            "aggregations", {"aggregations": [{"column": "x", "operation": "custom", "alias": "a"}]}
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="aggregations-custom-operation",
    ),
    pytest.param(
        "GET",
        model(
            "aggregations",
            {
                "aggregations": [
                    {"column": "x", "operation": "sum", "alias": "a", "expression": "1"}
                ]
            },
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="aggregations-unknown-item-key",
    ),
    # source-level parameters of the model route
    pytest.param(
        "GET",
        model(
            "formula",
            {"operation": "count"},
            filters=json.dumps({"a = a OR 1": {"in": {"values": [1]}}}),
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="filter-column-with-sql",
    ),
    pytest.param(
        "GET",
        model(
            "formula", {"operation": "count"}, filters=json.dumps({"a": {"sql": {"values": [1]}}})
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="filter-unknown-type",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}, filters=json.dumps({"a": [1]})),
        None,
        codes.MALFORMED_REQUEST,
        id="filter-not-an-object",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}, filtersLogicalOperator="or 1=1 or"),
        None,
        codes.MALFORMED_REQUEST,
        id="filters-logical-operator-with-sql",
    ),
    pytest.param(
        "GET",
        model(
            "formula",
            {"operation": "count"},
            spatialFilters=json.dumps({"geom) OR (1": {"type": "Polygon"}}),
        ),
        None,
        codes.MALFORMED_REQUEST,
        id="spatial-filter-column-with-sql",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}, spatialDataColumn="geom, secret"),
        None,
        codes.MALFORMED_REQUEST,
        id="model-spatial-data-column-with-sql",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}, spatialFiltersMode="intersects OR 1"),
        None,
        codes.MALFORMED_REQUEST,
        id="spatial-filters-mode-with-sql",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}, filters="{"),
        None,
        codes.MALFORMED_REQUEST,
        id="filters-not-json",
    ),
    pytest.param(
        "GET",
        model("formula", {"operation": "count"}) + b"&filters=%7B%7D&filters=%7B%7D",
        None,
        codes.AMBIGUOUS_REQUEST,
        id="filters-twice",
    ),
    # Maps instantiation and tiles
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&columns=a,(SELECT%201)",
        None,
        codes.MALFORMED_REQUEST,
        id="maps-columns-with-sql",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&columns=a,,b",
        None,
        codes.MALFORMED_REQUEST,
        id="maps-columns-empty-item",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/query/1/2/3?q=SELECT%201&spatialDataColumn=geom%20FROM%20x",
        None,
        codes.MALFORMED_REQUEST,
        id="tile-spatial-data-column-with-sql",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&tileResolution=1%29%20x",
        None,
        codes.MALFORMED_REQUEST,
        id="maps-tile-resolution-with-sql",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&spatialDataType=geo%27",
        None,
        codes.MALFORMED_REQUEST,
        id="maps-spatial-data-type-unknown",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&trajectoryIdColumn=id%2C(SELECT%201)",
        None,
        codes.MALFORMED_REQUEST,
        id="maps-trajectory-column-with-sql",
    ),
    pytest.param(
        "GET",
        b"/v3/maps/dw/table?name=proj.ds.t&filters="
        + quote('{"x) OR (1": {"in": {"values": [1]}}}').encode(),
        None,
        codes.MALFORMED_REQUEST,
        id="maps-filter-column-with-sql",
    ),
    pytest.param(
        "POST",
        b"/v3/maps/dw/table",
        {"name": "proj.ds.t", "columns": ["a", "b c"]},
        codes.MALFORMED_REQUEST,
        id="maps-body-columns-array-with-sql",
    ),
    pytest.param(
        "GET",
        b"/v3/stats/dw/proj.ds.t/pop%29%20FROM%20proj.ds.secret",
        None,
        codes.MALFORMED_REQUEST,
        id="stats-attribute-with-sql",
    ),
]


@pytest.mark.parametrize(("method", "target", "body", "code"), PARAM_ATTACKS)
def test_sql_param_attacks_are_refused(method: str, target: bytes, body: Any, code: str) -> None:
    found = classify(method, target, body)
    assert isinstance(found, Denial), found
    assert (found.status, found.code) == (400, code)


def test_custom_route_declares_its_sql_params() -> None:
    routes = RouteMap(
        routes=[
            Route(
                api="sql",
                path="/v3/custom/{connection}/widget",
                source_param="name",
                sql_params=(
                    SqlParam("options.expr", "expression"),
                    SqlParam("options.col", "identifier"),
                    SqlParam("options.note", "data"),
                    SqlParam("dir", "keyword", frozenset({"asc", "desc"})),
                ),
            )
        ]
    )
    base = b"/v3/custom/dw/widget?name=proj.ds.t&dir=DESC&options="
    options = quote(json.dumps({"expr": "max(x)", "col": "x", "note": "anything ' --"}))
    assert classify("GET", base + options.encode(), routes=routes) == facts(
        "sql", "dw", T, ("query", "SELECT max(x)")
    )
    unknown = classify("GET", base + quote('{"other": 1}').encode(), routes=routes)
    assert isinstance(unknown, Denial) and unknown.code == codes.MALFORMED_REQUEST
    assert "'options'" in unknown.message
    assert "col, expr, note" in unknown.hint


def test_sql_param_denials_name_the_parameter_not_the_value() -> None:
    hostile = TOKEN + ") FROM proj.ds.secret"
    for params in (
        {"column": hostile},
        {hostile: 1},
        {"operation": hostile},
        {"limit": hostile},
        {"aggregations": [{"column": hostile, "operation": "sum"}]},
    ):
        found = classify("GET", model("formula", params))
        assert isinstance(found, Denial) and found.code == codes.MALFORMED_REQUEST, params
        assert TOKEN not in found.message + found.hint
        assert "params" in found.message


def test_routes_without_sql_params_read_no_extra_parameters() -> None:
    route = next(r for r in DEFAULT_ROUTES if r.path == "/v3/sql/{connection}/query")
    # a "filters" the SQL API does not read is not parsed, even when it is not JSON
    target = b"/v3/sql/dw/query?q=SELECT%201&filters=%7B&columns=a%20b"
    assert classify("GET", target) == facts("sql", "dw", Q)
    assert route.sql_params == ()


def test_deep_json_in_query_and_body_is_refused_not_crashed() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    target = model("formula", {"operation": "count"})
    found = classify("POST", target, {"params": {"ticks": deep}})
    # params in the query string and the body: refused as ambiguous before the depth matters
    assert isinstance(found, Denial) and (found.status, found.code) == (400,
                                                                        codes.AMBIGUOUS_REQUEST)
    text = b"/v3/sql/dw/model/formula?type=table&source=proj.ds.t&params=" + b"%5B" * 100_000
    found = classify("GET", text)
    assert isinstance(found, Denial) and found.code == codes.MALFORMED_REQUEST


# -- the route memo: tile coordinates masked, never a different answer ---------------------
def test_tile_coordinates_share_one_remembered_answer() -> None:
    routes = RouteMap()
    first = routes.match("GET", b"/v3/maps/dw/table/1/2/3")
    again = routes.match("GET", b"/v3/maps/dw/table/12/4095/77")
    assert isinstance(first, RouteMatch) and again is first
    assert first.params == {"connection": "dw"}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        pytest.param(b"/v3/maps/dw/table/1/2/3/4", "unknown_route", id="one-more-segment"),
        pytest.param(b"/v3/maps/dw/table/1/2", "unknown_route", id="one-fewer-segment"),
        pytest.param(b"/v3/maps/dw/table/1/2/" + b"9" * 11, "shared", id="long-digits-shared"),
        pytest.param(b"/v3/maps/dw/table2/1/2/3", "unknown_route", id="digits-end-a-literal"),
        pytest.param(b"/v3/maps/dw/table/1//2/3", "malformed_request", id="empty-digit-segment"),
        pytest.param(b"/v3/maps/dw/table/1/2/3" + b"/1" * 3000, "malformed_request",
                     id="path-over-the-limit"),
        pytest.param(b"/v3/maps/dw/table/1/2/3/", "malformed_request", id="trailing-slash"),
        pytest.param(b"/v3/maps/dw/query/1/2/3", "match", id="other-endpoint"),
    ],
)
def test_masked_memo_answers_exactly_as_a_fresh_classification(path: bytes, kind: str) -> None:
    routes = RouteMap()
    warm = routes.match("GET", b"/v3/maps/dw/table/1/2/3")
    assert isinstance(warm, RouteMatch)
    answer = routes.match("GET", path)
    assert answer == RouteMap().match("GET", path)
    if kind == "match":
        assert isinstance(answer, RouteMatch) and answer is not warm
    elif kind == "shared":  # the same route, the free z/x/y aside: the remembered answer
        assert answer is warm
    else:
        assert isinstance(answer, Denial) and answer.code == kind


def test_digit_literal_routes_turn_masking_off() -> None:
    routes = RouteMap(routes=[
        Route("maps", "/v3/t/{connection}/{z}"),
        Route("lds", "/v3/t/{connection}/5"),
    ])
    assert routes._digit_literals
    general = routes.match("GET", b"/v3/t/dw/7")
    special = routes.match("GET", b"/v3/t/dw/5")
    assert isinstance(general, RouteMatch) and general.route.api == "maps"
    assert isinstance(special, RouteMatch) and special.route.api == "lds"


def test_a_digit_placeholder_the_decision_reads_is_never_masked() -> None:
    routes = RouteMap()
    one = routes.match("GET", b"/v3/stats/dw/proj.ds.t/123")
    two = routes.match("GET", b"/v3/stats/dw/proj.ds.u/123")
    assert isinstance(one, RouteMatch) and isinstance(two, RouteMatch)
    assert one.params["source"] == "proj.ds.t" and two.params["source"] == "proj.ds.u"


def test_route_memo_stays_bounded_under_a_flood() -> None:
    from token_guard.core.routes import ROUTE_MEMO_SIZE

    routes = RouteMap()
    for i in range(ROUTE_MEMO_SIZE + 500):
        routes.match("GET", f"/v3/sql/c{i}/query".encode())
    assert len(routes._matched) <= ROUTE_MEMO_SIZE


_TILE_SEGMENTS = st.lists(
    st.sampled_from(["v3", "maps", "sql", "carto_dw", "table", "query", "tileset", "5", "12",
                     "0", "", "a1", "%31", ".", "..", "table5", "007"]),
    min_size=1, max_size=9,
)


@given(st.lists(_TILE_SEGMENTS, min_size=1, max_size=6))
@settings(max_examples=1500)
def test_the_route_memo_answers_as_the_router_does(paths: list[list[str]]) -> None:
    """``match`` (remembered per path, and per path without a tile's z/x/y) answers every
    path as the router does unremembered, whatever was asked before it."""
    routes = RouteMap()
    for segments in paths:
        raw = ("/" + "/".join(segments)).encode("ascii")
        expected, _ = RouteMap()._match("GET", raw)
        assert routes.match("GET", raw) == expected, raw


_HEADS = st.sampled_from(["/v3/maps/carto_dw/table", "/v3/maps/carto_dw/query",
                          "/v3/maps/carto_dw/tileset", "/v3/maps/c1/table", "/v3/maps/c/table5",
                          "/v3/sql/carto_dw/query", "/v3/maps/carto_dw", "/v3/maps/carto_dw/7",
                          "/v3//maps/c/table", "/v3/maps/c/table/1"])
_TAILS = st.lists(st.sampled_from(["0", "12", "345", "", "x", "007"]), min_size=0, max_size=5)


@given(st.lists(st.tuples(_HEADS, _TAILS), min_size=1, max_size=8))
@settings(max_examples=1500)
def test_the_tile_memo_answers_as_the_router_does(paths: list[tuple[str, list[str]]]) -> None:
    routes = RouteMap()
    for head, tail in paths:
        raw = "/".join([head, *tail]).encode("ascii")
        expected, _ = RouteMap()._match("GET", raw)
        assert routes.match("GET", raw) == expected, raw
