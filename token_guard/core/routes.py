"""Route classification: which API, connection and data sources a request names.

``RouteMap.match(method, raw_path)`` classifies the *raw* request path (ASGI
``scope["raw_path"]``: the bytes as received, before any decoding); ``RouteMap.facts``
then reads the source parameters from the query string and, for POST/PUT/PATCH, the JSON
body, and returns ``RequestFacts`` or a ``Denial``. Both are pure and precompiled.

Security choices (fail closed):

- Inside the protected prefix (``/v3/`` by default) classification is deny-by-default: a
  path no ``Route`` declares is refused (403 ``unknown_route``), and so is a declared path
  with an undeclared method. ``HEAD`` is treated as ``GET`` unless a route declares it.
- "Inside" is decided generously: a path counts as inside when its raw form, its
  percent-decoded form (decoded repeatedly) or a normalised form (backslashes as slashes,
  matrix parameters, control characters, empty and dot segments removed) starts with the
  prefix, compared case-insensitively, or equals the prefix without its trailing slash. So
  ``/x/../v3/...``, ``//v3/...``, ``/v3;a/...``, ``/V3/...`` and ``/v3%2F...`` are all
  judged here, not passed through. Only a path that no such reading places inside returns
  ``None`` (pass through untouched), e.g. ``/v3x/...``, ``/static/..``.
- Inside the prefix the path must be clean, else 400 ``malformed_request``: it starts with
  ``/``; no empty segment (``//``, trailing ``/``); no ``.``/``..`` segment, plain or
  encoded; no ``;`` (matrix parameters), ``\\``, ``?``, ``#``, space or control character,
  raw or encoded; no encoded ``/``, ``%`` (double encoding) or invalid ``%``-escape;
  valid UTF-8; at most ``MAX_PATH_BYTES`` bytes.
- Segments are compared after percent-decoding (``/v3/maps/c/%74able`` is ``.../table``,
  as the application's router sees it), case-sensitively: CARTO paths are lowercase, so
  ``/v3/Maps/...`` is an unknown route. Where two routes could match, the one with a
  literal segment further left wins (``/v3/x/special`` over ``/v3/x/{connection}``).
- A connection name (path segment or parameter) must look like one: letters, digits,
  ``_``, ``-``, ``.``, at most 128 characters, not starting with ``.`` or ``-``.
- Source parameters: given twice in the query string (even with equal values, even with
  an encoded key), or in both query string and body with different values, is 400
  ``ambiguous_request``; missing, empty, not a JSON string in the body, or the body not
  a JSON object, is 400 ``malformed_request`` naming the parameter. The query string is
  parsed strictly: ``+`` is a space; an invalid ``%``-escape anywhere is 400, and so is a
  raw ``;`` (a separator to some servers: ``x=1;name=b`` could smuggle a second
  ``name``) and a wanted key or value that is not UTF-8.
- Every parameter the backend puts into SQL is declared on its route (``SqlParam``) and
  checked; a present one that fails is 400 ``malformed_request`` naming it:
  SQL expressions (Maps ``aggregationExp``, the model API's ``params.operationExp`` and
  ``params.aggregations`` when a string) are checked as the query ``SELECT <expression>``
  against the grants, so a subquery may read only granted tables; column names
  (``columns``, ``spatialDataColumn``, ``params.column``, filter keys, the stats
  ``{attribute}``, ...) must be plain identifiers ``[A-Za-z_][A-Za-z0-9_]*``, so a
  backend that splices one in cannot have its SQL reshaped; enum-like values
  (``params.operation``, ``sortDirection``, ``filtersLogicalOperator``, ...) must be one
  of the values the client sends; sizes and ticks must be numbers. ``params`` is a
  closed JSON object: JSON text in the query string, an object or JSON text in the body;
  invalid JSON, a repeated key, NaN/Infinity, or a key the route does not declare is
  refused, so a key a newer backend evaluates cannot pass unseen. These parameters are
  parsed only when present. Values (``queryParameters``, filter values,
  ``featureIds``, ...) are data: the backend must bind them. ``v``, ``client``,
  ``format`` and other parameters take no part in authorisation.
- Denial messages name routes and parameters, never request values: a token sent as
  ``access_token=`` (or pasted into a path) is never echoed.

Contract with the transports: pass the path without its query string (a ``?`` in the
path is refused); pass the body only when ``RouteMatch.needs_body``, parsed as JSON with
duplicate keys refused (Python's ``json`` keeps the last one silently).

Default routes (``DEFAULT_ROUTES``; ``{connection}`` is the connection segment):

=========  ==================================================  ===============================
api        method and path                                     source
=========  ==================================================  ===============================
maps       GET/POST ``/v3/maps/{connection}/table``            ``name`` (table)
maps       GET/POST ``/v3/maps/{connection}/tileset``          ``name`` (tileset)
maps       GET/POST ``/v3/maps/{connection}/query``            ``q`` (query)
maps       GET/POST ``/v3/maps/{connection}/raster``           ``name`` (table) *ours*
maps       GET/POST ``/v3/maps/{connection}/boundary``         ``tilesetTableName`` (tileset),
                                                               and each of
                                                               ``propertiesTableName`` (table),
                                                               ``propertiesSqlQuery`` (query)
maps       GET ``/v3/maps/{connection}/{type}/{z}/{x}/{y}``    as the instantiation above
maps       GET/POST ``/v3/stats/{connection}/{source}/{attr}`` path ``{source}`` (table)
maps       GET/POST ``/v3/stats/{connection}/{attribute}``     ``q`` (query)
sql        GET/POST ``/v3/sql/{connection}/query``             ``q`` (query)
sql        POST ``/v3/sql/{connection}/job``                   ``query`` (query)
sql        GET/DELETE ``/v3/sql/{connection}/job/{job}``       none (connection only)
sql        GET/POST ``/v3/sql/{connection}/model/{model}``     ``source``; ``type`` = table|query
lds        GET/POST ``/v3/lds/geocoding/{geocode,reverse,batch}``, ``/v3/lds/isolines``,
           ``/v3/lds/routing``, ``/v3/lds/quotas``          none (API check only)
imports    POST ``/v3/imports``                                ``destination`` (table) on the
                                                               connection ``connection``
imports    GET ``/v3/imports/{id}``                            none (API check only)
=========  ==================================================  ===============================

The data URL a map instantiation returns is the same path with ``format=tilejson`` (and
``cache=``) in the query string, so it classifies as the instantiation; its TileJSON
``tiles`` templates are ``.../{table,tileset,query,raster}/{z}/{x}/{y}`` with the same
parameters. ``/v3/maps/public/{id}`` (public maps) and ``/v3/tokens`` are
not data routes here: declare a ``Route`` if your application serves them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal, NamedTuple, get_args
from urllib.parse import unquote_to_bytes

from token_guard.core import decision as codes
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.facts import API_NAMES, RequestFacts, Source, SourceKind
from token_guard.core.querystrings import parse_wanted, wanted_pattern, wanted_pieces

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_ROUTES",
    "MAX_PATH_BYTES",
    "Route",
    "RouteMap",
    "RouteMatch",
    "SqlParam",
]

DEFAULT_PREFIX = "/v3/"
MAX_PATH_BYTES = 4096
ROUTE_MEMO_SIZE = 8192
"""Remembered route answers (see ``RouteMap.match``), for all requests; cleared when full."""
READ_MEMO_SIZE = 8192
"""Remembered facts per (route answer, the parameters its route reads) (see
``RouteMap.query_facts``), for all requests; cleared when full."""
_MEMO_MAX_PATH = 512  # longer paths are classified afresh every time
_MEMO_MAX_WANTED = 2048  # longer read parameters (big queries) are read afresh every time
MAX_CONNECTION_LENGTH = 128

_KINDS: frozenset[str] = frozenset(get_args(SourceKind))
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ANY_METHODS = frozenset({"GET", "POST"})
# RFC 3986 pchar minus ";" (matrix parameters) and "%" (escapes go the slow way).
_FAST_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@/"
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Characters no path segment may carry, raw or decoded: separators other servers honour
# (``\``, ``;``), URL delimiters, a second escape level, and control characters.
_FORBIDDEN_DECODED = frozenset("/\\;?#%" + "".join(map(chr, range(32))) + "\x7f")
_FORBIDDEN_RAW_BYTES = bytes(range(33)) + b"\\;?#\x7f"
_CONTROL_AND_SPACE = bytes(range(33)) + b"\x7f"
_CONNECTION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LITERAL_CHARS = frozenset(_FAST_SAFE.decode("ascii")) - {"/", "{", "}"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_IDENTIFIER_LENGTH = 300  # BigQuery's column-name limit; others allow fewer
# A column name the backend may splice into SQL unquoted without changing its shape.
_IDENTIFIER_RE = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_IDENTIFIER_LENGTH - 1}}}")
_NUMBER_RE = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?")

SqlCheck = Literal[
    "expression",
    "identifier",
    "identifier_list",
    "keyword",
    "number",
    "filters",
    "identifier_keys",
    "aggregations",
    "data",
]
_CHECKS: frozenset[str] = frozenset(get_args(SqlCheck))
# Checks whose query-string value is JSON text (in a body: a JSON value, or JSON text).
_JSON_CHECKS = frozenset({"filters", "identifier_keys", "aggregations"})
# @carto/api-client's FilterType values: the backend turns each into a SQL predicate.
_FILTER_TYPES = frozenset({"in", "between", "closed_open", "time", "stringsearch"})
_AGGREGATES = frozenset({"count", "avg", "min", "max", "sum"})
_AGGREGATION_KEYS = frozenset({"column", "operation", "alias"})


@dataclass(frozen=True, slots=True)
class SqlParam:
    """A request parameter the backend puts into SQL, and how the guard checks it.

    ``name`` is a query-string / JSON-body parameter (``aggregationExp``), a key inside a
    JSON-object parameter (``params.operationExp``: key ``operationExp`` of ``params``,
    which is JSON text in the query string, a JSON object or JSON text in the body), or a
    path placeholder (``{attribute}``). Declaring any key of a JSON-object parameter makes
    that object closed: a key not declared is refused, so a new SQL-bearing key the
    backend learns cannot pass unchecked. ``check`` is one of:

    - ``expression``: SQL the backend evaluates; checked as the query ``SELECT <value>``
      against the token's grants (a subquery must read only granted tables).
    - ``identifier``: a column name (or one of ``choices``, e.g. ``*``), or a JSON array of
      them: ``[A-Za-z_][A-Za-z0-9_]*``, nothing else.
    - ``identifier_list``: comma-separated column names (Maps ``columns``), or an array.
    - ``keyword``: one of ``choices`` (lower-case; compared case-insensitively).
    - ``number``: a JSON number or decimal text, or an array of them.
    - ``filters``: a JSON object ``{column: {filter type: {...values}}}``; columns are
      identifiers, filter types CARTO's (``in``, ``between``, ...), values are data.
    - ``identifier_keys``: a JSON object whose keys are column names; values are data.
    - ``aggregations``: an ``expression`` when text; else an array of
      ``{column, operation, alias}`` with identifiers and an aggregate ``operation``.
    - ``data``: bound by the backend; declared so a closed JSON object accepts the key.

    A ``null`` value counts as absent.
    """

    name: str
    check: SqlCheck
    choices: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: its API, path template, methods and where its data source is named.

    ``path`` is a template under the prefix: ``{connection}`` is the connection segment,
    ``{source}`` a path-borne source (of ``source_kind``), any other ``{name}`` matches one
    segment. ``source_param`` names the query-string / JSON-body parameter holding the
    source; ``kind_param`` (with ``source_param``) names a parameter whose value, one of
    ``kind_choices``, is the source's kind (the SQL model API's ``type``);
    ``connection_param`` names the parameter holding the connection when the path has
    none (the Imports API). ``source_in_body`` lets POST/PUT/PATCH carry these parameters
    in a JSON object body. ``expression_params`` name optional parameters holding a SQL
    expression the backend evaluates (CARTO's ``aggregationExp``): each present one is
    checked as the query ``SELECT <expression>``, so a subquery inside it must read only
    granted tables and a statement break or escape is refused; a name may be dotted, for
    a key in a JSON-object parameter (see ``SqlParam``). ``sql_params`` declares every
    other parameter the backend puts into SQL (identifiers, keywords, numbers, filters)
    and how the guard checks it. ``more_sources`` names further optional parameters that
    each hold a source, with its kind (a boundary request's ``propertiesTableName`` and
    ``propertiesSqlQuery`` beside ``tilesetTableName``): every one present is checked.
    """

    api: str
    path: str
    methods: frozenset[str] = _ANY_METHODS
    source_param: str | None = None
    source_kind: SourceKind = "table"
    kind_param: str | None = None
    kind_choices: frozenset[str] = frozenset({"table", "query"})
    connection_param: str | None = None
    source_in_body: bool = True
    expression_params: frozenset[str] = frozenset()
    sql_params: tuple[SqlParam, ...] = ()
    more_sources: tuple[tuple[str, SourceKind], ...] = ()


class RouteMatch(NamedTuple):
    """A classified path: the route, the decoded path parameters the decision reads
    (connection, source, checked placeholders; not a tile's ``z/x/y``), whether to read the
    body. A named tuple: built at C speed, and shared by every request with the same answer."""

    route: Route
    params: Mapping[str, str]
    needs_body: bool


def _keyword(name: str, *choices: str) -> SqlParam:
    return SqlParam(name, "keyword", frozenset(choices))


# What @carto/api-client sends that CARTO's backends put into SQL (the README's table).
_SPATIAL_TYPES = ("geo", "h3", "quadbin", "trajectory")
_MAPS_PARAMS: tuple[SqlParam, ...] = (
    SqlParam("aggregationExp", "expression"),
    SqlParam("columns", "identifier_list"),
    SqlParam("spatialDataColumn", "identifier"),
    _keyword("spatialDataType", *_SPATIAL_TYPES),
    SqlParam("filters", "filters"),
    SqlParam("tileResolution", "number"),
    SqlParam("aggregationResLevel", "number"),
    SqlParam("trajectoryIdColumn", "identifier"),
    SqlParam("timestampColumn", "identifier"),
)
_STATS_PARAMS: tuple[SqlParam, ...] = (
    SqlParam("{attribute}", "identifier"),
    _keyword("spatialDataType", *_SPATIAL_TYPES),
    SqlParam("filters", "filters"),
)
_JOINS = tuple(sorted(_AGGREGATES))
_MODEL_PARAMS: tuple[SqlParam, ...] = (
    SqlParam("spatialDataColumn", "identifier"),
    _keyword("spatialDataType", *_SPATIAL_TYPES),
    SqlParam("filters", "filters"),
    _keyword("filtersLogicalOperator", "and", "or"),
    SqlParam("spatialFilters", "identifier_keys"),
    _keyword("spatialFiltersMode", "center", "intersects", "contains"),
    # params: the widget's own parameters, a closed JSON object
    SqlParam("params.column", "identifier", frozenset({"*"})),
    _keyword("params.operation", *_JOINS, "custom"),
    SqlParam("params.operationExp", "expression"),
    SqlParam("params.operationColumn", "identifier", frozenset({"*"})),
    _keyword("params.joinOperation", *_JOINS),
    SqlParam("params.othersThreshold", "number"),
    _keyword(
        "params.orderBy", "frequency_asc", "frequency_desc", "alphabetical_asc", "alphabetical_desc"
    ),
    SqlParam("params.ticks", "number"),
    SqlParam("params.columns", "identifier"),
    _keyword("params.dataType", "points", "lines", "polygons"),
    SqlParam("params.featureIds", "data"),
    _keyword("params.geometryType", "points", "lines", "polygons"),
    SqlParam("params.z", "number"),
    SqlParam("params.limit", "number"),
    SqlParam("params.offset", "number"),
    SqlParam("params.tileResolution", "number"),
    SqlParam("params.xAxisColumn", "identifier"),
    _keyword("params.xAxisJoinOperation", *_JOINS),
    SqlParam("params.yAxisColumn", "identifier"),
    _keyword("params.yAxisJoinOperation", *_JOINS),
    SqlParam("params.sortBy", "identifier"),
    _keyword("params.sortDirection", "asc", "desc"),
    _keyword("params.sortByColumnType", "number", "string", "date"),
    SqlParam("params.searchFilterColumn", "identifier"),
    SqlParam("params.searchFilterText", "data"),
    _keyword("params.stepSize", "year", "month", "week", "day", "hour", "minute", "second"),
    SqlParam("params.stepMultiplier", "number"),
    SqlParam("params.splitByCategory", "identifier"),
    SqlParam("params.splitByCategoryLimit", "number"),
    SqlParam("params.splitByCategoryValues", "data"),
    SqlParam("params.aggregations", "aggregations"),
)


def _maps_routes() -> list[Route]:
    out: list[Route] = []
    endpoints: tuple[tuple[str, str, SourceKind], ...] = (
        ("table", "name", "table"),
        ("tileset", "name", "tileset"),
        ("query", "q", "query"),
        ("raster", "name", "table"),
    )
    for endpoint, param, kind in endpoints:
        out.append(
            Route(
                "maps",
                f"/v3/maps/{{connection}}/{endpoint}",
                _ANY_METHODS,
                param,
                kind,
                sql_params=_MAPS_PARAMS,
            )
        )
        out.append(
            Route(
                "maps",
                f"/v3/maps/{{connection}}/{endpoint}/{{z}}/{{x}}/{{y}}",
                frozenset({"GET"}),
                param,
                kind,
                sql_params=_MAPS_PARAMS,
            )
        )
    # Boundary sources (@carto/api-client boundaryTableSource / boundaryQuerySource): a
    # tileset of boundaries joined with properties from a table or a query; each is checked.
    boundary: tuple[tuple[str, SourceKind], ...] = (
        ("propertiesTableName", "table"), ("propertiesSqlQuery", "query"),
    )
    for path, methods in (("boundary", _ANY_METHODS),
                          ("boundary/{z}/{x}/{y}", frozenset({"GET"}))):
        out.append(
            Route(
                "maps",
                f"/v3/maps/{{connection}}/{path}",
                methods,
                "tilesetTableName",
                "tileset",
                sql_params=_MAPS_PARAMS,
                more_sources=boundary,
            )
        )
    return out


DEFAULT_ROUTES: tuple[Route, ...] = (
    *_maps_routes(),
    Route("maps", "/v3/stats/{connection}/{source}/{attribute}", sql_params=_STATS_PARAMS),
    Route(
        "maps",
        "/v3/stats/{connection}/{attribute}",
        source_param="q",
        source_kind="query",
        sql_params=_STATS_PARAMS,
    ),
    Route("sql", "/v3/sql/{connection}/query", source_param="q", source_kind="query"),
    Route(
        "sql",
        "/v3/sql/{connection}/job",
        frozenset({"POST"}),
        source_param="query",
        source_kind="query",
    ),
    Route("sql", "/v3/sql/{connection}/job/{job}", frozenset({"GET", "DELETE"})),
    Route(
        "sql",
        "/v3/sql/{connection}/model/{model}",
        source_param="source",
        kind_param="type",
        sql_params=_MODEL_PARAMS,
    ),
    Route("lds", "/v3/lds/geocoding/geocode"),
    Route("lds", "/v3/lds/geocoding/reverse"),
    Route("lds", "/v3/lds/geocoding/batch"),
    Route("lds", "/v3/lds/isolines"),
    Route("lds", "/v3/lds/routing"),
    Route("lds", "/v3/lds/quotas", frozenset({"GET"})),
    Route(
        "imports",
        "/v3/imports",
        frozenset({"POST"}),
        source_param="destination",
        connection_param="connection",
    ),
    Route("imports", "/v3/imports/{id}", frozenset({"GET"})),
)


@dataclass(frozen=True, slots=True)
class _Target:
    """What one (path shape, method) resolves to, precomputed."""

    route: Route
    names: tuple[tuple[str, int], ...]
    needs_body: bool
    # how many trailing segments are placeholders the decision never reads (a tile's z/x/y)
    free_tail: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """How ``facts`` reads one route's parameters, precomputed."""

    route: Route
    # the parameters this route reads from the query string or body
    names: frozenset[str]
    # checked parameters: path placeholders, top-level parameters, JSON objects' keys
    path: tuple[SqlParam, ...]
    top: tuple[SqlParam, ...]
    objects: tuple[tuple[str, Mapping[str, SqlParam]], ...]
    checks: bool
    # the top-level names the checks read: absent from a request, only path checks run
    checked_names: frozenset[str]
    # finds the pieces of ``names`` in a query string (querystrings.wanted_pieces)
    pieces: re.Pattern[bytes]

    @classmethod
    def of(cls, route: Route) -> _Plan:
        """The plan for ``route``."""
        names = {p for p in (route.source_param, route.kind_param, route.connection_param) if p}
        names.update(param for param, _ in route.more_sources)
        path: list[SqlParam] = []
        top: list[SqlParam] = []
        objects: dict[str, dict[str, SqlParam]] = {}
        for param in _declared(route):
            if param.name.startswith("{"):
                path.append(param)
            elif "." in param.name:
                container, _, key = param.name.partition(".")
                objects.setdefault(container, {})[key] = param
            elif param.check != "data":
                top.append(param)
        names |= {p.name for p in top} | set(objects)
        return cls(
            route,
            frozenset(names),
            tuple(path),
            tuple(top),
            tuple(objects.items()),
            bool(path or top or objects),
            frozenset({p.name for p in top} | set(objects)),
            wanted_pattern(frozenset(names)),
        )


def _declared(route: Route) -> tuple[SqlParam, ...]:
    """A route's SQL-bearing parameters: ``expression_params`` and ``sql_params``."""
    expressions = tuple(SqlParam(n, "expression") for n in sorted(route.expression_params))
    return expressions + tuple(route.sql_params)


# One group per "mask" (which positions are literal) of a segment count:
# (key getter over the request's segments, {literal key: {method: target}}).
_Group = tuple[Callable[[list[str]], object], dict[object, dict[str, _Target]]]


def _denial(status: int, code: str, message: str, hint: str) -> Denial:
    return Denial(status, code, message, hint)


def _malformed(message: str, hint: str) -> Denial:
    return Denial(400, codes.MALFORMED_REQUEST, message, hint)


_BAD_PATH_HINT = (
    "Send the path as a client library builds it: no empty, '.' or '..' segments, no "
    "encoded '/', '\\' or control characters, no ';' parameters, valid %-escapes of UTF-8."
)
_PATH_DENIALS = {
    "start": _malformed("The request path does not start with '/'.", _BAD_PATH_HINT),
    "long": _malformed(
        f"The request path is longer than {MAX_PATH_BYTES} bytes.",
        "Send long parameters in the query string or a JSON body, not in the path.",
    ),
    "empty": _malformed(
        "The request path has an empty segment ('//' or a trailing '/').", _BAD_PATH_HINT
    ),
    "dot": _malformed("The request path has a '.' or '..' segment.", _BAD_PATH_HINT),
    "char": _malformed(
        "The request path has a character token_guard refuses in a path (';', '\\', '?', "
        "'#', a space, a control character, or a second level of %-encoding).",
        _BAD_PATH_HINT,
    ),
    "escape": _malformed("The request path has an invalid %-escape.", _BAD_PATH_HINT),
    "utf8": _malformed("The request path is not valid UTF-8.", _BAD_PATH_HINT),
}
_BAD_CONNECTION = _malformed(
    "The connection name is not a valid connection name.",
    f"Use the connection's name: letters, digits, '_', '-' and '.', at most "
    f"{MAX_CONNECTION_LENGTH} characters.",
)
_BODY_NOT_OBJECT = _malformed(
    "The request body is not a JSON object.",
    'Send the parameters as a JSON object, e.g. {"name": "project.dataset.table"}.',
)


def _unknown_route(prefix: str) -> Denial:
    return _denial(
        403,
        codes.UNKNOWN_ROUTE,
        f"The request path under {prefix} matches no route token_guard knows, so it is refused.",
        "If your application serves this endpoint, declare it: TokenGuard(..., routes=["
        "tg.Route(api='maps', path='/v3/custom/{connection}/things', source_param='name')]). "
        "The Tokens API and OAuth go beside the guard, not behind it: "
        "tg.one_port(guarded=..., management=...).",
    )


class RouteMap:
    """Classifies requests under a prefix into ``RequestFacts``; precompiled at start-up.

    Its configuration is not mutated after ``__init__``; its one memo (decoded parameter
    values) is a plain dict whose single operations are atomic, so one instance may serve
    any number of threads and event loops.
    """

    __slots__ = (
        "_decoded",
        "_digit_literals",
        "_groups",
        "_head",
        "_matched",
        "_plans",
        "_prefix",
        "_prefix_bytes",
        "_prefix_lower",
        "_prefix_segments",
        "_read",
        "_root_lower",
        "_unknown",
        "routes",
    )

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        routes: Sequence[Route] = (),
        include_defaults: bool = True,
    ) -> None:
        self._prefix = _check_prefix(prefix)
        self._prefix_bytes = prefix.encode("ascii")
        self._prefix_lower = self._prefix_bytes.lower()
        self._root_lower = self._prefix_lower[:-1]
        self._prefix_segments = len(prefix.strip("/").split("/")) if prefix != "/" else 0
        self._unknown = _unknown_route(prefix)
        all_routes = (*DEFAULT_ROUTES, *routes) if include_defaults else tuple(routes)
        self.routes: tuple[Route, ...] = all_routes
        self._digit_literals = False  # set by _compile: a route with an all-digit literal
        self._groups = self._compile(all_routes)
        # Keyed by id(): hashing a Route per request costs more than the whole lookup.
        self._plans = {id(route): _Plan.of(route) for route in all_routes}
        # Long escaped parameter values, decoded (querystrings.DECODED_MEMO_SIZE, bounded).
        self._decoded: dict[str, str] = {}
        # See match(): (method, raw path) or (method, head, digit segments) -> (answer,)
        self._matched: dict[tuple[Any, ...], tuple[RouteMatch | Denial | None]] = {}
        # See query_facts(): (id of a RouteMatch, wanted text) -> (that match, answer)
        self._read: dict[tuple[int, bytes], tuple[RouteMatch, RequestFacts | Denial]] = {}
        self._head = prefix.strip("/").split("/") if self._prefix_segments else []

    # -- start-up ---------------------------------------------------------------------
    def _compile(self, routes: Iterable[Route]) -> dict[int, tuple[_Group, ...]]:
        shapes: dict[tuple[int, tuple[int, ...]], dict[object, dict[str, _Target]]] = {}
        getters: dict[tuple[int, tuple[int, ...]], Callable[[list[str]], object]] = {}
        owners: dict[tuple[int, tuple[int, ...], object, str], Route] = {}
        for route in routes:
            segments = _check_route(route, self._prefix)
            literal_at = tuple(i for i, s in enumerate(segments) if not s.startswith("{"))
            # Only the placeholders the decision reads become RouteMatch.params.
            read = {"connection", "source"} | {
                p.name[1:-1] for p in _declared(route) if p.name.startswith("{")
            }
            names = tuple(
                (s[1:-1], i) for i, s in enumerate(segments)
                if s.startswith("{") and s[1:-1] in read
            )
            free_tail = 0
            for s in reversed(segments):
                if not s.startswith("{") or s[1:-1] in read:
                    break
                free_tail += 1
            if any(s.isdigit() for s in segments):
                self._digit_literals = True
            shape = (len(segments), literal_at)
            if shape not in getters:
                getters[shape] = _key_getter(literal_at)
                shapes[shape] = {}
            key = getters[shape](segments)
            by_method = shapes[shape].setdefault(key, {})
            param_borne = (
                route.source_param is not None
                or route.connection_param is not None
                or bool(route.more_sources)
                or any(not p.name.startswith("{") for p in _declared(route))
            )
            for method in route.methods:
                other = owners.get((*shape, key, method))
                if other is not None:
                    raise ConfigurationError(
                        f"routes: {_describe(route)} duplicates {_describe(other)} for "
                        f"{method}; remove one, or pass include_defaults=False and a "
                        "filtered DEFAULT_ROUTES"
                    )
                owners[(*shape, key, method)] = route
                by_method[method] = _Target(
                    route, names, route.source_in_body and param_borne and method in _BODY_METHODS,
                    free_tail,
                )
        groups: dict[int, list[tuple[tuple[int, ...], _Group]]] = {}
        for (count, literal_at), table in shapes.items():
            # Sort so a literal further left is tried first: most specific wins.
            order = tuple(0 if i in literal_at else 1 for i in range(count))
            groups.setdefault(count, []).append((order, (getters[(count, literal_at)], table)))
        return {n: tuple(g for _, g in sorted(gs, key=lambda x: x[0])) for n, gs in groups.items()}

    # -- per request ------------------------------------------------------------------
    def match(self, method: str, raw_path: bytes) -> RouteMatch | Denial | None:
        """Classify a raw path; ``None``: outside the prefix (pass through untouched).

        Remembered per (method, raw path), and a path ending in tile coordinates per
        (method, path without them): no route has an all-digit literal segment (else this
        is off), so trailing digit segments can only fill placeholders, and where the
        matched route never reads them (a tile's ``z/x/y``) every such path gets the same
        answer. ``ROUTE_MEMO_SIZE`` entries for all requests; cleared when full.
        """
        memo = self._matched
        head = b""
        tail = 0
        if raw_path[-1:].isdigit() and not self._digit_literals and (
                len(raw_path) <= MAX_PATH_BYTES):
            # A tile's z/x/y: the last three segments, each non-empty ASCII digits.
            parts = raw_path.rsplit(b"/", 3)
            if (len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit()
                    and parts[3].isdigit()):
                head = parts[0]
                tail = 3
            else:
                # The trailing run of non-empty digit segments (str methods, not a regex
                # search that tries every position): head ends where its first "/" is.
                rest = raw_path[len(raw_path.rstrip(b"0123456789/")):]
                # (find, not ``in``: ``bytes in bytes`` raises and clears a TypeError first.)
                start = rest.find(b"/")
                run = rest[start:] if start != -1 else b""
                if run and run.find(b"//") == -1:
                    head = raw_path[: len(raw_path) - len(run)]
                    tail = run.count(b"/")
            if tail:
                hit = memo.get((method, head, tail))
                if hit is not None:
                    return hit[0]
        hit = memo.get((method, raw_path))
        if hit is not None:
            return hit[0]
        result, free_tail = self._match(method, raw_path)
        if len(memo) >= ROUTE_MEMO_SIZE:
            memo.clear()
        if tail and tail <= free_tail:
            memo[(method, head, tail)] = (result,)
        elif len(raw_path) <= _MEMO_MAX_PATH:
            memo[(method, raw_path)] = (result,)
        return result

    def _match(self, method: str, raw_path: bytes) -> tuple[RouteMatch | Denial | None, int]:
        """``match`` without its memo; with the matched target's ``free_tail``."""
        # Fast path: an ordinary ASCII path with no escapes, dots or doubled slashes.
        # (Substring tests run on str: ``bytes in bytes`` costs several times more.)
        path = ""
        if len(raw_path) <= MAX_PATH_BYTES and not raw_path.translate(None, _FAST_SAFE):
            path = raw_path.decode("ascii")
            if "//" in path or "/." in path or path[:1] != "/":
                path = ""
            elif not path.startswith(self._prefix):
                # Clean, so no decoding or normalising can move it: only case can.
                return (self._unknown if self._under(raw_path.lower()) else None), 0
        if path:
            rest = path[len(self._prefix) :]
            if not rest:
                return self._unknown, 0
            if rest[-1] == "/":  # a trailing "/" is an empty last segment
                return _PATH_DENIALS["empty"], 0
            segments = rest.split("/")
        else:
            found = self._slow_segments(raw_path)
            if not isinstance(found, list):
                return found, 0
            segments = found
        groups = self._groups.get(len(segments))
        if groups is None:
            return self._unknown, 0
        declared: dict[str, _Target] | None = None
        for getter, table in groups:
            by_method = table.get(getter(segments))
            if by_method is None:
                continue
            target = by_method.get(method)
            if target is None and method == "HEAD":
                target = by_method.get("GET")
            if target is not None:
                params = {name: segments[at] for name, at in target.names}
                return RouteMatch(target.route, params, target.needs_body), target.free_tail
            if declared is None:
                declared = by_method
        return self._wrong_method(method, declared), 0

    def _wrong_method(self, method: str, declared: dict[str, _Target] | None) -> Denial:
        if declared is None:
            return self._unknown
        route = next(iter(declared.values())).route
        shown = method if len(method) <= 16 and _METHOD_CHARS.issuperset(method) else "this method"
        return _denial(
            403,
            codes.UNKNOWN_ROUTE,
            f"{shown} is not declared for {route.path}; declared methods: "
            f"{', '.join(sorted(declared))}.",
            "Use a declared method, or declare a Route with this method if your application "
            "serves it.",
        )

    def _slow_segments(self, raw_path: bytes) -> list[str] | Denial | None:
        if not raw_path.startswith(b"/"):
            # Not origin-form (absolute-form, "*", empty): cannot be proven outside.
            return _PATH_DENIALS["start"]
        if not self._inside(raw_path):
            return None
        if len(raw_path) > MAX_PATH_BYTES:
            return _PATH_DENIALS["long"]
        if raw_path.find(b"%") != -1 and _BAD_ESCAPE.search(raw_path):
            return _PATH_DENIALS["escape"]
        decoded: list[str] = []
        for raw in raw_path[1:].split(b"/"):
            if not raw:
                return _PATH_DENIALS["empty"]
            if raw != raw.translate(None, _FORBIDDEN_RAW_BYTES):
                return _PATH_DENIALS["char"]
            try:
                text = (unquote_to_bytes(raw).decode("utf-8") if raw.find(b"%") != -1
                        else raw.decode())
            except UnicodeDecodeError:
                return _PATH_DENIALS["utf8"]
            if text in (".", ".."):
                return _PATH_DENIALS["dot"]
            if not _FORBIDDEN_DECODED.isdisjoint(text):
                return _PATH_DENIALS["char"]
            decoded.append(text)
        if decoded[: self._prefix_segments] != self._head:
            return self._unknown
        return decoded[self._prefix_segments :]

    def _inside(self, raw_path: bytes) -> bool:
        """Could any reading of this path (decoded, normalised, any case) be under the prefix?"""
        if self._under(raw_path.lower()):
            return True
        text = raw_path
        for _ in range(4):  # undo several levels of %-encoding
            if text.find(b"%") == -1:
                break
            text = unquote_to_bytes(text)
            if self._under(text.lower()):
                return True
        parts: list[bytes] = []
        for segment in text.replace(b"\\", b"/").split(b"/"):
            segment = segment.split(b";", 1)[0].translate(None, _CONTROL_AND_SPACE)
            if segment in (b"", b"."):
                continue
            if segment == b"..":
                if parts:
                    parts.pop()
                continue
            parts.append(segment)
        return self._under(b"/" + b"/".join(parts).lower())

    def _under(self, lower_path: bytes) -> bool:
        return lower_path.startswith(self._prefix_lower) or lower_path == self._root_lower

    def facts(
        self,
        match: RouteMatch,
        query_string: bytes,
        body: Mapping[str, Any] | None,
        origin: str | None,
        referer: str | None,
    ) -> RequestFacts | Denial:
        """The request's facts from a match, its query string and (if read) its JSON body."""
        route = match.route
        params = match.params
        if body is not None and not isinstance(body, Mapping):
            return _BODY_NOT_OBJECT
        plan = self._plans.get(id(route))
        if plan is None or plan.route is not route:
            plan = _Plan.of(route)  # a RouteMatch built by hand, not by match()
        found = parse_wanted(query_string, plan.names, self._decoded)
        if isinstance(found, Denial):
            return found

        connection = params.get("connection")
        if route.connection_param is not None:
            named = _param(route.connection_param, found, body)
            if isinstance(named, Denial):
                return named
            connection = named
        if connection is not None and not _is_connection_name(connection):
            return _BAD_CONNECTION

        sources: tuple[Source, ...] = ()
        if route.source_param is not None:
            value = _param(route.source_param, found, body)
            if isinstance(value, Denial):
                return value
            kind: Any = route.source_kind
            if route.kind_param is not None:
                kind = _param(route.kind_param, found, body)
                if isinstance(kind, Denial):
                    return kind
                if kind not in route.kind_choices:
                    return _malformed(
                        f"Parameter '{route.kind_param}' must be one of "
                        f"{', '.join(repr(k) for k in sorted(route.kind_choices))}.",
                        f"Set '{route.kind_param}' to the kind of '{route.source_param}'.",
                    )
            sources = (Source(kind, value),)
        elif "source" in params:
            sources = (Source(route.source_kind, params["source"]),)
        for name, more_kind in route.more_sources:
            if name in found or (body is not None and name in body):
                more = _param(name, found, body)
                if isinstance(more, Denial):
                    return more
                sources = (*sources, Source(more_kind, more))
        if plan.checks and (
            plan.path
            or not plan.checked_names.isdisjoint(found)
            or (body is not None and not plan.checked_names.isdisjoint(body))
        ):
            checked = _check_params(plan, params, found, body)
            if isinstance(checked, Denial):
                return checked
            sources = (*sources, *checked)
        return RequestFacts(route.api, connection, sources, origin, referer)


    def query_facts(
        self, match: RouteMatch, query_string: bytes, names_plain: bool = False
    ) -> RequestFacts | Denial:
        """``facts`` without a body or headers, remembered per (match, the raw text of the
        parameters its route reads): a tile's or a query's other parameters (bound
        values, client versions) do not make it new. ``READ_MEMO_SIZE``, all requests.
        ``names_plain``: ``querystrings.plain_names(query_string)`` is known to be True."""
        plan = self._plans.get(id(match.route))
        if plan is None or plan.route is not match.route:
            return self.facts(match, query_string, None, None, None)
        wanted = wanted_pieces(query_string, plan.pieces, names_plain)
        if wanted is None:
            return self.facts(match, query_string, None, None, None)
        key = (id(match), wanted)
        memo = self._read
        hit = memo.get(key)
        if hit is not None and hit[0] is match:
            return hit[1]
        answer = self.facts(match, query_string, None, None, None)
        if len(wanted) <= _MEMO_MAX_WANTED:
            if len(memo) >= READ_MEMO_SIZE:
                memo.clear()
            memo[key] = (match, answer)
        return answer


def _param(name: str, found: Mapping[str, str], body: Mapping[str, Any] | None) -> str | Denial:
    """One required parameter from the query string or the body, which must agree."""
    value = found.get(name)
    if body is not None and name in body:
        in_body = body[name]
        if not isinstance(in_body, str):
            return _malformed(
                f"Parameter '{name}' in the JSON body is not a string.",
                f"Send '{name}' as a JSON string.",
            )
        if value is None:
            value = in_body
        elif value != in_body:
            return _denial(
                400,
                codes.AMBIGUOUS_REQUEST,
                f"Parameter '{name}' has different values in the query string and the body.",
                f"Send '{name}' in one place only.",
            )
    if value is None:
        return _malformed(
            f"This endpoint needs parameter '{name}' and the request has none.",
            f"Send '{name}' in the query string (or, on POST, in a JSON object body).",
        )
    if not value.strip():
        return _malformed(f"Parameter '{name}' is empty.", f"Give '{name}' a value.")
    return value


def _check_params(
    plan: _Plan,
    path_params: Mapping[str, str],
    found: Mapping[str, str],
    body: Mapping[str, Any] | None,
) -> tuple[Source, ...] | Denial:
    """Check a route's SQL-bearing parameters; the expressions among them as query sources."""
    out: list[Source] = []
    for param in plan.path:
        value = path_params.get(param.name[1:-1])
        denial = None if value is None else _check_value(param.name, param, value, out)
        if denial is not None:
            return denial
    for param in plan.top:
        name = param.name
        if name not in found and (body is None or name not in body):
            continue
        value = _json_param(name, param.check in _JSON_CHECKS, found, body)
        if isinstance(value, Denial):
            return value
        denial = _check_value(name, param, value, out)
        if denial is not None:
            return denial
    for name, keys in plan.objects:
        if name not in found and (body is None or name not in body):
            continue
        value = _json_param(name, True, found, body)
        if isinstance(value, Denial):
            return value
        if value is None:
            continue
        if not isinstance(value, dict):
            return _malformed(
                f"Parameter '{name}' is not a JSON object.",
                f'Send \'{name}\' as a JSON object, e.g. {name}={{"column":"revenue"}}.',
            )
        for key, item in value.items():
            declared = keys.get(key)
            if declared is None:
                return _malformed(
                    f"Parameter '{name}' has a key token_guard does not know, so it cannot "
                    "tell whether the backend reads it as SQL.",
                    f"Use only the keys {', '.join(sorted(keys))}; declare a new one with "
                    f"SqlParam('{name}.<key>', ...) in your Route.",
                )
            denial = _check_value(declared.name, declared, item, out)
            if denial is not None:
                return denial
    return tuple(out)


def _json_param(
    name: str, json_text: bool, found: Mapping[str, str], body: Mapping[str, Any] | None
) -> Any:
    """One optional parameter's value (JSON text parsed if ``json_text``), or a denial."""
    value: Any = None
    given = False
    if name in found:
        value = _parse_json(name, found[name]) if json_text else found[name]
        if isinstance(value, Denial):
            return value
        given = True
    if body is not None and name in body:
        in_body = body[name]
        if json_text and isinstance(in_body, str):
            in_body = _parse_json(name, in_body)
            if isinstance(in_body, Denial):
                return in_body
        if given and (_canonical(value) is None or _canonical(value) != _canonical(in_body)):
            return _denial(
                400,
                codes.AMBIGUOUS_REQUEST,
                f"Parameter '{name}' has different values in the query string and the body.",
                f"Send '{name}' in one place only.",
            )
        value = in_body
    return value


def _parse_json(name: str, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return _malformed(
            f"Parameter '{name}' is not valid JSON (or repeats a key, or has NaN/Infinity).",
            f"Send '{name}' as JSON.stringify does, each key once.",
        )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constant(_text: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _canonical(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None


def _check_value(name: str, param: SqlParam, value: Any, out: list[Source]) -> Denial | None:
    """Check one present value against ``param``; append an expression's query to ``out``."""
    if value is None:
        return None
    check = param.check
    if check == "expression" or (check == "aggregations" and isinstance(value, str)):
        if not isinstance(value, str):
            return _malformed(
                f"Parameter '{name}' is not a string.",
                f"Send '{name}' as a SQL expression in a string.",
            )
        if not value.strip():
            return _malformed(f"Parameter '{name}' is empty.", f"Give '{name}' a value.")
        out.append(Source("query", f"SELECT {value}"))
        return None
    if check == "identifier":
        items = value if isinstance(value, list) else [value]
        if all(_is_identifier(v, param.choices) for v in items):
            return None
        return _bad_identifier(name)
    if check == "identifier_list":
        # The client sends columns=[] as "": no column list.
        items = (value.split(",") if value else []) if isinstance(value, str) else value
        if isinstance(items, list) and all(_is_identifier(v, param.choices) for v in items):
            return None
        return _bad_identifier(name)
    if check == "keyword":
        if isinstance(value, str) and value.lower() in param.choices:
            return None
        return _malformed(
            f"Parameter '{name}' is not one of the values token_guard knows.",
            f"Set '{name}' to one of {', '.join(sorted(param.choices))}.",
        )
    if check == "number":
        items = value if isinstance(value, list) else [value]
        if all(_is_number(v) for v in items):
            return None
        return _malformed(
            f"Parameter '{name}' is not a number.",
            f"Send '{name}' as a number, e.g. 10 or 0.5.",
        )
    if check == "filters":
        return _check_filters(name, value)
    if check == "identifier_keys":
        if isinstance(value, dict) and all(_is_identifier(k, param.choices) for k in value):
            return None
        return _bad_identifier(name, keys=True)
    if check == "aggregations":
        return _check_aggregations(name, value)
    return None  # "data": bound by the backend


def _check_filters(name: str, value: Any) -> Denial | None:
    if not isinstance(value, dict) or not all(_is_identifier(k, frozenset()) for k in value):
        return _bad_identifier(name, keys=True)
    for by_type in value.values():
        if by_type is None:
            continue
        if not isinstance(by_type, dict) or not all(
            isinstance(t, str) and t.lower() in _FILTER_TYPES for t in by_type
        ):
            return _malformed(
                f"Parameter '{name}' has a filter that is not an object of CARTO filter types.",
                'Write each filter as {"column": {"in": {"values": [...]}}}; types are in, '
                "between, closed_open, time, stringSearch.",
            )
    return None


def _check_aggregations(name: str, value: Any) -> Denial | None:
    hint = (
        'Send a list of {"column": ..., "operation": "sum", "alias": ...} with column names '
        "and aliases of letters, digits and '_', or one SQL expression as a string."
    )
    if not isinstance(value, list):
        return _malformed(f"Parameter '{name}' is not a list or a string.", hint)
    for item in value:
        if (
            not isinstance(item, dict)
            or not _AGGREGATION_KEYS.issuperset(item)
            or not _is_identifier(item.get("column"), frozenset({"*"}))
            or not isinstance(item.get("operation"), str)
            or item["operation"].lower() not in _AGGREGATES
            or ("alias" in item and not _is_identifier(item["alias"], frozenset()))
        ):
            return _malformed(f"Parameter '{name}' has an aggregation token_guard refuses.", hint)
    return None


def _is_identifier(value: object, choices: frozenset[str]) -> bool:
    return isinstance(value, str) and (value in choices or bool(_IDENTIFIER_RE.fullmatch(value)))


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and bool(_NUMBER_RE.fullmatch(value))


def _bad_identifier(name: str, *, keys: bool = False) -> Denial:
    what = "has a key that is not" if keys else "is not"
    return _malformed(
        f"Parameter '{name}' {what} a plain column name, so token_guard cannot be sure the "
        "backend reads it as one.",
        "Use column names of letters, digits and '_' (not starting with a digit); to use "
        "another column, rename it with an alias in a query source.",
    )


def _is_connection_name(name: str) -> bool:
    return (
        0 < len(name) <= MAX_CONNECTION_LENGTH
        and name[0] not in ".-"
        and _CONNECTION_CHARS.issuperset(name)
    )


def _key_getter(literal_at: tuple[int, ...]) -> Callable[[list[str]], object]:
    if not literal_at:
        return lambda _segments: ()
    getter: Callable[[list[str]], object] = itemgetter(*literal_at)
    return getter


def _describe(route: Route) -> str:
    return f"Route(api={route.api!r}, path={route.path!r})"


def _check_prefix(prefix: object) -> str:
    if (
        not isinstance(prefix, str)
        or not prefix.startswith("/")
        or not prefix.endswith("/")
        or not prefix.isascii()
    ):
        raise ConfigurationError(
            f"prefix {prefix!r} must be an ASCII path that starts and ends with '/', e.g. '/v3/'"
        )
    if prefix != "/":
        for segment in prefix[1:-1].split("/"):
            if not _is_literal(segment):
                raise ConfigurationError(
                    f"prefix {prefix!r} has segment {segment!r}; use plain, non-empty "
                    "segments without '.', '..', '%', ';' or braces, e.g. '/v3/'"
                )
    return prefix


def _is_literal(segment: str) -> bool:
    return bool(segment) and segment not in (".", "..") and _LITERAL_CHARS.issuperset(segment)


def _check_route(route: Route, prefix: str) -> list[str]:
    """Validate one route; return its template segments after the prefix."""
    where = f"routes: {_describe(route)}"
    if not isinstance(route, Route):
        raise ConfigurationError(f"routes: {route!r} is not a token_guard Route")
    if route.api not in API_NAMES:
        raise ConfigurationError(
            f"{where}: api {route.api!r} is unknown; use one of {', '.join(sorted(API_NAMES))}"
        )
    if not isinstance(route.path, str) or not route.path.startswith(prefix):
        raise ConfigurationError(f"{where}: the path must start with the prefix {prefix!r}")
    if not isinstance(route.methods, frozenset) or not route.methods:
        raise ConfigurationError(
            f"{where}: methods must be a non-empty frozenset, e.g. frozenset({{'GET', 'POST'}})"
        )
    for method in route.methods:
        if not isinstance(method, str) or not method or not _METHOD_CHARS.issuperset(method):
            raise ConfigurationError(
                f"{where}: method {method!r} must be an upper-case HTTP method, e.g. 'GET'"
            )
    if route.source_kind not in _KINDS:
        raise ConfigurationError(
            f"{where}: source_kind {route.source_kind!r} must be one of {', '.join(sorted(_KINDS))}"
        )
    if not route.kind_choices or not _KINDS.issuperset(route.kind_choices):
        raise ConfigurationError(
            f"{where}: kind_choices must be a non-empty subset of {', '.join(sorted(_KINDS))}"
        )
    rest = route.path[len(prefix) :]
    segments = rest.split("/")
    names: set[str] = set()
    for segment in segments:
        if not segment:
            raise ConfigurationError(
                f"{where}: the path has an empty segment; remove doubled or trailing '/'"
            )
        if segment.startswith("{") or segment.endswith("}") or "{" in segment or "}" in segment:
            name = segment[1:-1]
            if not (segment.startswith("{") and segment.endswith("}")) or not _NAME_RE.fullmatch(
                name
            ):
                raise ConfigurationError(
                    f"{where}: segment {segment!r} must be a whole placeholder like "
                    "'{connection}' or '{name}' (a Python identifier)"
                )
            if name in names:
                raise ConfigurationError(f"{where}: placeholder {name!r} appears twice")
            names.add(name)
        elif not _is_literal(segment):
            raise ConfigurationError(
                f"{where}: segment {segment!r} is not a plain literal; use letters, digits and "
                "'-._~' (no '.', '..', '%', ';')"
            )
    if not isinstance(route.more_sources, tuple) or not all(
        isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and m[0] and m[1] in _KINDS
        for m in route.more_sources
    ):
        raise ConfigurationError(
            f"{where}: more_sources must be a tuple of (parameter, kind) pairs, kind one of "
            f"{', '.join(sorted(_KINDS))}, e.g. (('propertiesSqlQuery', 'query'),)"
        )
    params = [p for p in (route.source_param, route.kind_param, route.connection_param) if p]
    params += [name for name, _ in route.more_sources]
    for param in (route.source_param, route.kind_param, route.connection_param):
        if param is not None and (not isinstance(param, str) or not param):
            raise ConfigurationError(f"{where}: parameter names must be non-empty strings")
    if "access_token" in params:
        raise ConfigurationError(
            f"{where}: 'access_token' carries the token, not a source; name another parameter"
        )
    if len(set(params)) != len(params):
        raise ConfigurationError(
            f"{where}: source_param, kind_param, connection_param and more_sources must "
            f"differ; got {params!r}"
        )
    if "source" in names and route.source_param is not None:
        raise ConfigurationError(
            f"{where}: has both a '{{source}}' segment and source_param; keep one"
        )
    if "connection" in names and route.connection_param is not None:
        raise ConfigurationError(
            f"{where}: has both a '{{connection}}' segment and connection_param; keep one"
        )
    if route.kind_param is not None and route.source_param is None:
        raise ConfigurationError(f"{where}: kind_param needs a source_param to give a kind to")
    _check_sql_params(route, where, names, set(params))
    return segments


def _check_sql_params(route: Route, where: str, placeholders: set[str], taken: set[str]) -> None:
    """Validate ``expression_params`` and ``sql_params``: names, checks and choices."""
    if not isinstance(route.expression_params, frozenset) or not all(
        isinstance(n, str) for n in route.expression_params
    ):
        raise ConfigurationError(
            f"{where}: expression_params must be a frozenset of parameter names, e.g. "
            "frozenset({'aggregationExp'})"
        )
    if not isinstance(route.sql_params, tuple) or not all(
        isinstance(p, SqlParam) for p in route.sql_params
    ):
        raise ConfigurationError(
            f"{where}: sql_params must be a tuple of SqlParam, e.g. "
            "(SqlParam('columns', 'identifier_list'),)"
        )
    seen: set[str] = set()
    tops: set[str] = set()
    containers: set[str] = set()
    for param in _declared(route):
        name = param.name
        if not isinstance(name, str) or name in seen:
            raise ConfigurationError(f"{where}: SQL parameter {name!r} is declared twice")
        seen.add(name)
        if param.check not in _CHECKS:
            raise ConfigurationError(
                f"{where}: SqlParam {name!r} has check {param.check!r}; use one of "
                f"{', '.join(sorted(_CHECKS))}"
            )
        if not isinstance(param.choices, frozenset) or not all(
            isinstance(c, str) for c in param.choices
        ):
            raise ConfigurationError(f"{where}: SqlParam {name!r}: choices must be a frozenset")
        if param.check == "keyword" and (
            not param.choices or any(c != c.lower() for c in param.choices)
        ):
            raise ConfigurationError(
                f"{where}: keyword SqlParam {name!r} needs lower-case choices, e.g. "
                "frozenset({'asc', 'desc'})"
            )
        if name.startswith("{"):
            if name[-1:] != "}" or name[1:-1] not in placeholders:
                raise ConfigurationError(
                    f"{where}: SqlParam {name!r} must name a placeholder of the path, e.g. "
                    "'{attribute}'"
                )
            if param.check not in ("identifier", "keyword", "number"):
                raise ConfigurationError(
                    f"{where}: path SqlParam {name!r} can only be an identifier, keyword or number"
                )
            continue
        parts = name.split(".")
        if len(parts) > 2 or not all(_NAME_RE.fullmatch(part) for part in parts):
            raise ConfigurationError(
                f"{where}: SQL parameter {name!r} must be a name or 'object.key', e.g. "
                "'aggregationExp' or 'params.operationExp'"
            )
        (containers if len(parts) == 2 else tops).add(parts[0])
    clash = (tops & containers) | ((tops | containers) & (taken | {"access_token"}))
    if clash:
        raise ConfigurationError(
            f"{where}: SQL parameter {sorted(clash)[0]!r} is also a source, kind, connection or "
            "token parameter, or both a value and a JSON object; keep one role per parameter"
        )
