"""A small CARTO-v3-shaped data API over the demo's SQLite file, for real CARTO clients.

It answers what ``@carto/api-client`` calls, in the shapes it reads:

- ``GET|POST /v3/sql/{conn}/query`` (``q``, ``queryParameters``) → ``{"rows", "schema", "meta"}``.
- ``GET|POST /v3/maps/{conn}/{table|query}`` (``name`` or ``q``) → map instantiation
  ``{"nrows", "schema", "tilejson": {"url": [dataUrl]}}``. ``dataUrl`` is the same endpoint with
  the same source parameters plus ``format=tilejson``; it answers TileJSON whose ``tiles``
  template is ``/v3/maps/{conn}/{table|query}/{z}/{x}/{y}?<same source params>&formatTiles=mvt``.
  Source parameters always travel in the query string, so a guard in front classifies the
  instantiation, the TileJSON and every tile by the same ``name`` / ``q``.
- ``GET /v3/maps/{conn}/{table|query}/{z}/{x}/{y}`` → a Mapbox Vector Tile (layer ``default``,
  points only), or 204 when the tile is empty, as CARTO does. MVT is the format the client
  accepts besides CARTO's own binary tiles (it picks MVT when ``formatTiles=mvt``), and the one
  with a public spec, so it is what the demo produces.
- ``GET /v3/lds/geocoding/geocode?address=&country=&limit=`` → ``[{"value": [...]}]`` from the
  bundled gazetteer.

Security choices, deliberately redundant with the guard that wraps this app:

- The database is opened read-only (``mode=ro``) on every request, with a sqlite3 authorizer
  that refuses every action except SELECT, READ and FUNCTION (and refuses file-touching
  functions), a progress handler that stops a query after ``QUERY_TIME_LIMIT_S`` and a cap on
  string/blob length, so a bad query cannot write, attach, or exhaust the process.
- Errors are JSON ``{"error": ...}`` with 400/403/404/405/413 statuses; unexpected failures are
  a 500 without internals.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from token_guard.demo.data import GAZETTEER, ensure_database, normalize_place_text
from token_guard.demo.mvt import MVT_EXTENT, TilePoint, encode_mvt, lonlat_to_world

CONNECTION_NAME = "demo"
#: What the guard needs to know about this app: connection name → sqlglot dialect.
CONNECTIONS: Mapping[str, str] = {CONNECTION_NAME: "sqlite"}

MAX_ROWS = 50_000
QUERY_TIME_LIMIT_S = 5.0
MAX_VALUE_BYTES = 10_000_000
MAX_BODY_BYTES = 1_000_000
MVT_LAYER = "default"
MAX_ZOOM = 22
DEFAULT_GEO_COLUMN = "geom"

SourceKind = Literal["table", "query"]
Scalar = str | int | float | bool | None
QueryParameters = dict[str, Scalar] | list[Scalar]

_POINT = re.compile(
    r"\s*POINT\s*\(\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s+([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*\)\s*",
    re.IGNORECASE,
)
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION})
# Not compiled into Python's sqlite3 by default, but refusing them costs nothing if one ever is.
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
# Parameters that shape the source; they are echoed into the TileJSON and tile URLs.
_SOURCE_PARAMS = ("name", "q", "queryParameters", "spatialDataColumn", "spatialDataType",
                  "tileResolution", "columns")


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a message for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names and rows of one read-only query."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """A map source as the client described it: a table name or a query, and how to read it."""

    kind: SourceKind
    text: str
    query_parameters: QueryParameters | None
    geo_column: str
    columns: tuple[str, ...] | None
    echo: tuple[tuple[str, str], ...]

    def sql(self) -> str:
        """The SELECT that produces this source's rows (column subset applied)."""
        inner = f"SELECT * FROM {quote_identifier(self.text)}" if self.kind == "table" else (
            self.text.strip().rstrip(";")
        )
        if self.columns is None:
            return inner
        wanted = dict.fromkeys((*self.columns, self.geo_column))
        picked = ", ".join(quote_identifier(c) for c in wanted)
        # The newline keeps a trailing "-- comment" in the user's query from eating the ")".
        return f"SELECT {picked} FROM (\n{inner}\n)"


def quote_identifier(name: str) -> str:
    """SQLite identifier quoting: double quotes, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


# --- SQL execution -----------------------------------------------------------------------


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None,
               trigger: str | None) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        denied = (arg2 or "").lower() in _DENIED_FUNCTIONS
        return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def open_read_only(db_path: Path, time_limit_s: float = QUERY_TIME_LIMIT_S) -> sqlite3.Connection:
    """A read-only connection to ``db_path`` that refuses anything but reads, for a while."""
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True,
                         check_same_thread=False)
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    db.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    db.set_authorizer(_authorize)
    deadline = time.monotonic() + time_limit_s
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    return db


def _bind(params: QueryParameters | None) -> dict[str, Scalar] | list[Scalar]:
    if params is None:
        return []
    if isinstance(params, list):
        # CARTO numbers positional parameters from 1 ($1, ?1, @1 alike); SQLite names them "1".
        return {str(i): v for i, v in enumerate(params, start=1)}
    return params


def run_query(db_path: Path, sql: str, params: QueryParameters | None,
              max_rows: int = MAX_ROWS, time_limit_s: float = QUERY_TIME_LIMIT_S) -> QueryResult:
    """Run one read-only statement; raise ApiError (400/403) for what the database refused."""
    try:
        with contextlib.closing(open_read_only(db_path, time_limit_s)) as db:
            try:
                cursor = db.execute(sql, _bind(params))
            except sqlite3.ProgrammingError:
                if not isinstance(params, list):
                    raise
                # Bare "?" placeholders have no name; bind the list by position instead.
                cursor = db.execute(sql, params)
            columns = tuple(d[0] for d in cursor.description or ())
            rows = cursor.fetchmany(max_rows + 1)
    except sqlite3.DatabaseError as exc:
        raise _database_error(exc, time_limit_s) from exc
    if len(rows) > max_rows:
        raise ApiError(400, f"the query returned more than {max_rows} rows; add a LIMIT "
                            "or a WHERE clause")
    return QueryResult(columns, rows)


def _database_error(exc: sqlite3.Error, time_limit_s: float) -> ApiError:
    text = str(exc)
    if "not authorized" in text or "authorization denied" in text or "readonly" in text:
        return ApiError(403, "the demo database is read-only: only a single SELECT statement "
                             f"is allowed ({text})")
    if "interrupted" in text:
        return ApiError(400, f"the query ran longer than {time_limit_s:g} s and was "
                             "stopped; make it cheaper or add a LIMIT")
    return ApiError(400, f"the query failed: {text}")


def table_exists(db_path: Path, name: str) -> bool:
    """Whether ``name`` is a table (or view) in the demo database."""
    sql = "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?"
    with contextlib.closing(open_read_only(db_path)) as db:
        return db.execute(sql, (name,)).fetchone() is not None


def json_value(value: Any) -> Any:
    """A SQLite value as JSON can carry it (blobs as hex, non-finite floats as null)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def schema_of(result: QueryResult, geo_column: str = DEFAULT_GEO_COLUMN) -> list[dict[str, str]]:
    """CARTO schema fields (name, type) inferred from the first non-null value of each column."""
    fields = []
    for index, name in enumerate(result.columns):
        sample = next((row[index] for row in result.rows if row[index] is not None), None)
        if name == geo_column:
            kind = "geometry"
        elif isinstance(sample, int | float):
            kind = "number"
        elif isinstance(sample, str | bytes):
            kind = "string"
        else:
            kind = "unknown"
        fields.append({"name": name, "type": kind})
    return fields


# --- request parsing ---------------------------------------------------------------------


async def request_params(request: Request) -> dict[str, Any]:
    """Query-string parameters merged with a POSTed JSON object; a repeated name is refused."""
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            raise ApiError(400, f"parameter '{key}' appears more than once; send it once")
        params[key] = value
    if request.method != "POST":
        return params
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return params
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object of parameters")
    for key, value in data.items():
        if key in params:
            raise ApiError(400, f"parameter '{key}' is both in the URL and in the body; "
                                "send it once")
        params[key] = value
    return params


def _text_param(params: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = params.get(key, default)
    if value is None:
        raise ApiError(400, f"missing parameter '{key}'")
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"parameter '{key}' must be a non-empty string")
    return value


def parse_query_parameters(raw: Any) -> QueryParameters | None:
    """``queryParameters`` as sent (JSON text in a URL, JSON value in a body), checked."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"queryParameters is not valid JSON: {exc}") from exc
    values = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else None
    if values is None:
        raise ApiError(400, "queryParameters must be a JSON object (named) or array (positional)")
    if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
        raise ApiError(400, "queryParameters values must be strings, numbers, booleans or null")
    if isinstance(raw, dict) and not all(isinstance(k, str) and k for k in raw):
        raise ApiError(400, "queryParameters names must be non-empty strings")
    return raw  # type: ignore[no-any-return]


def _connection(request: Request) -> str:
    conn = str(request.path_params["conn"])
    if conn != CONNECTION_NAME:
        raise ApiError(404, f"connection '{conn}' not found; this demo has one connection, "
                            f"'{CONNECTION_NAME}'")
    return conn


def _source_kind(request: Request) -> SourceKind:
    kind = str(request.path_params["kind"])
    if kind == "table":
        return "table"
    if kind == "query":
        return "query"
    raise ApiError(404, f"map source type '{kind}' is not served by the demo; use 'table' "
                        "or 'query'")


def parse_source(kind: SourceKind, params: Mapping[str, Any]) -> SourceRequest:
    """The map source a request names, validated; unsupported options are refused, not ignored."""
    spatial_type = _text_param(params, "spatialDataType", "geo")
    if spatial_type != "geo":
        raise ApiError(400, f"spatialDataType '{spatial_type}' is not supported by the demo; "
                            "use 'geo'")
    filters = params.get("filters")
    if filters not in (None, "", "{}", {}):
        raise ApiError(400, "filters are not supported by the demo API; filter in the query")
    if params.get("aggregationExp"):
        raise ApiError(400, "aggregationExp is not supported by the demo API")
    geo_column = _text_param(params, "spatialDataColumn", DEFAULT_GEO_COLUMN)
    raw_columns = params.get("columns")
    columns: tuple[str, ...] | None = None
    if raw_columns is not None:
        if not isinstance(raw_columns, str):
            raise ApiError(400, "columns must be a comma-separated string")
        columns = tuple(c.strip() for c in raw_columns.split(",") if c.strip())
    tile_resolution = params.get("tileResolution", "0.5")
    query_parameters: QueryParameters | None = None
    if kind == "table":
        if "q" in params:
            raise ApiError(400, "a table source takes 'name', not 'q'")
        text = _text_param(params, "name")
    else:
        if "name" in params:
            raise ApiError(400, "a query source takes 'q', not 'name'")
        text = _text_param(params, "q")
        query_parameters = parse_query_parameters(params.get("queryParameters"))
    echo: list[tuple[str, str]] = []
    for key in _SOURCE_PARAMS:
        value = params.get(key)
        if key in ("spatialDataColumn", "spatialDataType", "tileResolution"):
            value = {"spatialDataColumn": geo_column, "spatialDataType": spatial_type,
                     "tileResolution": tile_resolution}[key]
        if value is None:
            continue
        echo.append((key, value if isinstance(value, str) else json.dumps(value)))
    return SourceRequest(kind, text, query_parameters, geo_column, columns, tuple(echo))


# --- tiles -------------------------------------------------------------------------------


def parse_point(value: Any) -> tuple[float, float] | None:
    """(lon, lat) of a WKT ``POINT``; None for anything else (other geometries are skipped)."""
    if not isinstance(value, str):
        return None
    match = _POINT.fullmatch(value)
    if match is None:
        return None
    try:
        lon, lat = float(match.group(1)), float(match.group(2))
    except ValueError:
        return None
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        return None
    return lon, lat


def points_in_tile(result: QueryResult, geo_column: str, z: int, x: int, y: int,
                   extent: int = MVT_EXTENT) -> list[TilePoint]:
    """The rows of ``result`` whose point falls in tile z/x/y, in tile coordinates."""
    geo_index = result.columns.index(geo_column)
    id_index = result.columns.index("cartodb_id") if "cartodb_id" in result.columns else None
    scale = 2**z
    points = []
    for row in result.rows:
        lonlat = parse_point(row[geo_index])
        if lonlat is None:
            continue
        wx, wy = lonlat_to_world(*lonlat)
        tx, ty = wx * scale - x, wy * scale - y
        if not (0.0 <= tx < 1.0 and 0.0 <= ty < 1.0):
            continue
        properties = tuple(
            (name, value)
            for i, (name, value) in enumerate(zip(result.columns, row, strict=True))
            if i != geo_index and isinstance(value, str | int | float)
            and not (isinstance(value, float) and not math.isfinite(value))
        )
        raw_id = row[id_index] if id_index is not None else None
        feature_id = raw_id if isinstance(raw_id, int) else None
        points.append(TilePoint(feature_id, min(int(tx * extent), extent - 1),
                                min(int(ty * extent), extent - 1), properties))
    return points


# --- the app -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoApi:
    """The request handlers, bound to one database file."""

    db_path: Path

    async def sql_query(self, request: Request) -> Response:
        """SQL API: run ``q`` read-only and answer rows, schema and meta as CARTO does."""
        _connection(request)
        params = await request_params(request)
        sql = _text_param(params, "q")
        query_parameters = parse_query_parameters(params.get("queryParameters"))
        result = await run_in_threadpool(run_query, self.db_path, sql, query_parameters)
        rows = [{c: json_value(v) for c, v in zip(result.columns, row, strict=True)}
                for row in result.rows]
        return JSONResponse({
            "rows": rows,
            "schema": schema_of(result),
            "meta": {"cacheHit": False, "location": "sqlite", "totalBytesProcessed": "0"},
        })

    async def map_source(self, request: Request) -> Response:
        """Maps API: instantiate a source, or (``format=tilejson``) answer its TileJSON."""
        conn = _connection(request)
        kind = _source_kind(request)
        params = await request_params(request)
        source = parse_source(kind, params)
        result = await self._load(source)
        base = f"{str(request.base_url).rstrip('/')}/v3/maps/{conn}/{kind}"
        fmt = params.get("format")
        if fmt == "tilejson":
            return JSONResponse(self._tilejson(source, result, base))
        if fmt not in (None, ""):
            raise ApiError(400, f"format '{fmt}' is not supported; use 'tilejson' or omit it")
        data_url = f"{base}?{urlencode((*source.echo, ('format', 'tilejson')))}"
        return JSONResponse({
            "nrows": len(result.rows),
            "schema": schema_of(result, source.geo_column),
            "tilejson": {"url": [data_url]},
        })

    async def tile(self, request: Request) -> Response:
        """Maps API: one MVT tile of a source (204 when it holds no feature)."""
        _connection(request)
        kind = _source_kind(request)
        z, x, y = (int(request.path_params[k]) for k in ("z", "x", "y"))
        if not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
            raise ApiError(400, f"tile {z}/{x}/{y} does not exist; zoom is 0..{MAX_ZOOM} and "
                                "x, y are 0..2^zoom-1")
        params = await request_params(request)
        tile_format = params.get("formatTiles", "mvt")
        if tile_format != "mvt":
            raise ApiError(400, f"formatTiles '{tile_format}' is not supported; the demo "
                                "serves 'mvt'")
        source = parse_source(kind, params)
        result = await self._load(source)
        points = points_in_tile(result, source.geo_column, z, x, y)
        if not points:
            return Response(status_code=204)
        return Response(encode_mvt(MVT_LAYER, points),
                        media_type="application/vnd.mapbox-vector-tile")

    async def geocode(self, request: Request) -> Response:
        """LDS API: places from the bundled gazetteer whose name the address mentions."""
        params = await request_params(request)
        address = normalize_place_text(_text_param(params, "address"))
        country = str(params.get("country") or "").upper()
        try:
            limit = int(params.get("limit", 1))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "limit must be a whole number") from exc
        if not 1 <= limit <= 50:
            raise ApiError(400, "limit must be between 1 and 50")
        padded = f" {address} "
        found = []
        for place in GAZETTEER:
            name = normalize_place_text(place.name)
            if f" {name} " not in padded or (country and place.country != country):
                continue
            relevance = 1.0 if address in (name, f"{name} {place.country.lower()}") else 0.8
            found.append((relevance, place))
        found.sort(key=lambda item: (-item[0], -item[1].population))
        value = [
            {"longitude": p.longitude, "latitude": p.latitude, "name": p.name,
             "country": p.country, "relevance": r}
            for r, p in found[:limit]
        ]
        return JSONResponse([{"value": value}])

    async def _load(self, source: SourceRequest) -> QueryResult:
        if source.kind == "table" and not await run_in_threadpool(
            table_exists, self.db_path, source.text
        ):
            raise ApiError(404, f"table '{source.text}' not found on connection "
                                f"'{CONNECTION_NAME}'")
        result = await run_in_threadpool(run_query, self.db_path, source.sql(),
                                         source.query_parameters)
        if source.geo_column not in result.columns:
            raise ApiError(400, f"the source has no column '{source.geo_column}'; select a "
                                "WKT point column under that name or set spatialDataColumn")
        return result

    def _tilejson(self, source: SourceRequest, result: QueryResult,
                  base: str) -> dict[str, Any]:
        template = f"{base}/{{z}}/{{x}}/{{y}}?{urlencode((*source.echo, ('formatTiles', 'mvt')))}"
        points = [p for p in (parse_point(r[result.columns.index(source.geo_column)])
                              for r in result.rows) if p is not None]
        if points:
            lons, lats = [p[0] for p in points], [p[1] for p in points]
            bounds = [min(lons), min(lats), max(lons), max(lats)]
        else:
            bounds = [-180.0, -85.0511, 180.0, 85.0511]
        schema = schema_of(result, source.geo_column)
        fields = {f["name"]: "Number" if f["type"] == "number" else "String"
                  for f in schema if f["name"] != source.geo_column}
        return {
            "tilejson": "3.0.0",
            "name": source.text if source.kind == "table" else "query",
            "description": "",
            "version": "1.0.0",
            "attribution": "token_guard demo data (generated)",
            "scheme": "xyz",
            "tiles": [template],
            "minzoom": 0,
            "maxzoom": MAX_ZOOM,
            "bounds": bounds,
            "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, 2],
            "vector_layers": [{"id": MVT_LAYER, "fields": fields, "minzoom": 0,
                               "maxzoom": MAX_ZOOM}],
            "tilestats": {"layerCount": 1, "layers": [{
                "layer": MVT_LAYER, "count": len(points), "geometry": "Point",
                "attributeCount": len(fields),
                "attributes": [{"attribute": k, "type": v} for k, v in fields.items()],
            }]},
            "schema": schema,
        }


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no demo API endpoint at {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}.get(
        exc.status_code, str(exc.detail))
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "internal error in the demo API"}, status_code=500)


def create_app(db_path: Path) -> Starlette:
    """The demo API over an existing database file (see ``build_app`` to generate one)."""
    api = DemoApi(db_path)
    routes = [
        Route("/v3/sql/{conn}/query", api.sql_query, methods=["GET", "POST"]),
        Route("/v3/maps/{conn}/{kind}", api.map_source, methods=["GET", "POST"]),
        Route("/v3/maps/{conn}/{kind}/{z:int}/{x:int}/{y:int}", api.tile, methods=["GET"]),
        Route("/v3/lds/geocoding/geocode", api.geocode, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error,
    })


def build_app(data_dir: Path | str) -> Starlette:
    """The demo API with its sample database under ``data_dir`` (generated on first start)."""
    return create_app(ensure_database(data_dir))
