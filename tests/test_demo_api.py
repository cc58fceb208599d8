"""The demo's CARTO-shaped data API, over real HTTP (uvicorn on a free loopback port)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.servers import interruptible, serve
from token_guard.demo import DemoOptions, parse_args
from token_guard.demo.app import (
    ApiError,
    QueryResult,
    build_app,
    points_in_tile,
    run_query,
)
from token_guard.demo.data import DATABASE_FILE, STORE_COUNT, ensure_database
from token_guard.demo.mvt import encode_mvt

# --- helpers: an independent MVT reader ---------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 1:
            yield number, buf[i:i + 8]
            i += 8
        elif wire == 2:
            size, i = _varint(buf, i)
            yield number, buf[i:i + size]
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _packed(buf: bytes) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        value, i = _varint(buf, i)
        out.append(value)
    return out


def decode_mvt(tile: bytes) -> dict[str, dict[str, Any]]:
    """Layers of a vector tile: name → {extent, version, features: [{id, x, y, props}]}."""
    layers = {}
    for number, layer_bytes in _fields(tile):
        assert number == 3
        layer: dict[str, Any] = {"features": [], "keys": [], "values": []}
        raw_features = []
        for n, v in _fields(layer_bytes):
            if n == 1:
                layer["name"] = v.decode()
            elif n == 2:
                raw_features.append(v)
            elif n == 3:
                layer["keys"].append(v.decode())
            elif n == 4:
                (kind, raw), = list(_fields(v))
                layer["values"].append(
                    raw.decode() if kind == 1 else struct.unpack("<d", raw)[0] if kind == 3
                    else _unzigzag(raw) if kind == 6 else bool(raw) if kind == 7 else raw)
            elif n == 5:
                layer["extent"] = v
            elif n == 15:
                layer["version"] = v
        for raw_feature in raw_features:
            feature: dict[str, Any] = {"id": None}
            for n, v in _fields(raw_feature):
                if n == 1:
                    feature["id"] = v
                elif n == 2:
                    tags = _packed(v)
                    feature["props"] = {layer["keys"][k]: layer["values"][val]
                                        for k, val in zip(tags[::2], tags[1::2], strict=True)}
                elif n == 3:
                    assert v == 1, "only POINT features are expected"
                elif n == 4:
                    command, dx, dy = _packed(v)
                    assert command == 9, "one MoveTo"
                    feature["x"], feature["y"] = _unzigzag(dx), _unzigzag(dy)
            layer["features"].append(feature)
        layers[layer["name"]] = layer
    return layers


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated demo database for the module (generation is the slow part)."""
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    """The unguarded demo API, served on a free loopback port."""
    with serve(build_app(data_dir)) as server:
        yield server.url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client for the demo server."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        yield http


def _store_count(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / DATABASE_FILE)) as db:
        return int(db.execute("SELECT count(*) FROM stores").fetchone()[0])


# --- data --------------------------------------------------------------------------------------


def _dump_digest(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()


def test_generated_data_is_the_same_on_every_machine(tmp_path: Path) -> None:
    first = ensure_database(tmp_path / "a")
    second = ensure_database(tmp_path / "b")
    assert _dump_digest(first) == _dump_digest(second)


def test_existing_database_is_reused_not_regenerated(tmp_path: Path) -> None:
    path = ensure_database(tmp_path)
    before = path.stat().st_mtime_ns
    assert ensure_database(tmp_path) == path
    assert path.stat().st_mtime_ns == before


def test_outdated_database_is_regenerated(tmp_path: Path) -> None:
    path = ensure_database(tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 0")
        db.execute("DELETE FROM stores")
        db.commit()
    ensure_database(tmp_path)
    assert _store_count(tmp_path) == STORE_COUNT


# --- SQL API -----------------------------------------------------------------------------------


def test_sql_query_returns_rows_schema_and_meta(client: httpx.Client) -> None:
    response = client.get("/v3/sql/demo/query",
                          params={"q": "SELECT cartodb_id, name, revenue, geom FROM stores "
                                       "ORDER BY cartodb_id LIMIT 3"})
    assert response.status_code == 200
    body = response.json()
    assert [row["cartodb_id"] for row in body["rows"]] == [1, 2, 3]
    assert body["rows"][0]["geom"].startswith("POINT(")
    assert body["schema"] == [{"name": "cartodb_id", "type": "number"},
                              {"name": "name", "type": "string"},
                              {"name": "revenue", "type": "number"},
                              {"name": "geom", "type": "geometry"}]
    assert set(body["meta"]) == {"cacheHit", "location", "totalBytesProcessed"}


@pytest.mark.parametrize(
    ("q", "query_parameters"),
    [
        pytest.param("SELECT name FROM cities WHERE country = @c AND population > @p",
                     '{"c": "ES", "p": 700000}', id="named-at"),
        pytest.param("SELECT name FROM cities WHERE country = :c AND population > :p",
                     '{"c": "ES", "p": 700000}', id="named-colon"),
        pytest.param("SELECT name FROM cities WHERE population > $2 AND country = $1",
                     '["ES", 700000]', id="positional-dollar-out-of-order"),
        pytest.param("SELECT name FROM cities WHERE country = ? AND population > ?",
                     '["ES", 700000]', id="positional-bare"),
    ],
)
def test_sql_query_binds_query_parameters(client: httpx.Client, q: str,
                                          query_parameters: str) -> None:
    response = client.get("/v3/sql/demo/query", params={"q": q,
                                                        "queryParameters": query_parameters})
    assert response.status_code == 200, response.text
    assert sorted(r["name"] for r in response.json()["rows"]) == ["Barcelona", "Madrid",
                                                                  "Valencia"]


def test_sql_query_by_post_json_body(client: httpx.Client) -> None:
    response = client.post("/v3/sql/demo/query", json={
        "q": "SELECT count(*) AS n FROM stores WHERE city = @city",
        "queryParameters": {"city": "Madrid"}, "client": "test", "v": "3.4"})
    assert response.status_code == 200
    assert response.json()["rows"][0]["n"] > 0


@pytest.mark.parametrize(
    "q",
    [
        pytest.param("INSERT INTO stores (cartodb_id) VALUES (999999)", id="insert"),
        pytest.param("UPDATE stores SET revenue = 0", id="update"),
        pytest.param("DELETE FROM stores", id="delete"),
        pytest.param("DROP TABLE stores", id="drop"),
        pytest.param("CREATE TABLE evil (x)", id="create"),
        pytest.param("CREATE TEMP TABLE evil AS SELECT * FROM stores", id="create-temp"),
        pytest.param("ATTACH DATABASE '/tmp/evil.db' AS evil", id="attach"),
        pytest.param("PRAGMA writable_schema = ON", id="pragma"),
        pytest.param("PRAGMA table_info(stores)", id="pragma-read"),
        pytest.param("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                     "SELECT i FROM n", id="recursive-cte"),
        pytest.param("REPLACE INTO cities (cartodb_id, name) VALUES (1, 'x')", id="replace"),
        pytest.param("VACUUM INTO '/tmp/copy.db'", id="vacuum-into"),
    ],
)
def test_writes_and_non_reads_are_refused_by_the_authorizer(client: httpx.Client,
                                                            data_dir: Path, q: str) -> None:
    response = client.get("/v3/sql/demo/query", params={"q": q})
    assert response.status_code == 403, response.text
    # "not authorized" comes from the sqlite3 authorizer, before mode=ro would refuse it too.
    error = response.json()["error"]
    assert "not authorized" in error or "authorization denied" in error
    assert _store_count(data_dir) == STORE_COUNT


def test_a_second_statement_is_refused(client: httpx.Client, data_dir: Path) -> None:
    response = client.get("/v3/sql/demo/query", params={"q": "SELECT 1; DELETE FROM stores"})
    assert response.status_code == 400
    assert "one statement" in response.json()["error"]
    assert _store_count(data_dir) == STORE_COUNT


def test_a_long_query_is_stopped(data_dir: Path) -> None:
    path = data_dir / DATABASE_FILE
    with pytest.raises(ApiError) as caught:
        run_query(path, "SELECT count(*) FROM stores a, stores b, stores c", None,
                  time_limit_s=0.2)
    assert caught.value.status == 400
    assert "longer than 0.2 s" in caught.value.message


def test_too_many_rows_are_refused_not_truncated(data_dir: Path) -> None:
    with pytest.raises(ApiError) as caught:
        run_query(data_dir / DATABASE_FILE, "SELECT * FROM stores", None, max_rows=10)
    assert caught.value.status == 400
    assert "more than 10 rows" in caught.value.message


# --- Maps API: instantiation → TileJSON → tiles --------------------------------------------


def _query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.mark.parametrize(
    ("kind", "params", "expected_rows"),
    [
        pytest.param("table", {"name": "stores"}, STORE_COUNT, id="table"),
        pytest.param("query", {"q": "SELECT * FROM stores WHERE storetype = @t",
                               "queryParameters": '{"t": "Hypermarket"}'}, None, id="query"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_instantiation_tilejson_and_tile_chain(client: httpx.Client, kind: str,
                                               params: dict[str, str],
                                               expected_rows: int | None, method: str) -> None:
    source = {**params, "spatialDataColumn": "geom", "spatialDataType": "geo",
              "tileResolution": "0.5"}
    if method == "GET":
        response = client.get(f"/v3/maps/demo/{kind}", params={**source, "v": "3.4",
                                                                "client": "t"})
    else:
        response = client.post(f"/v3/maps/demo/{kind}", json={**source, "client": "t"})
    assert response.status_code == 200, response.text
    instantiation = response.json()
    if expected_rows is not None:
        assert instantiation["nrows"] == expected_rows
    assert {"name": "geom", "type": "geometry"} in instantiation["schema"]

    (data_url,) = instantiation["tilejson"]["url"]
    assert urlsplit(data_url).path == f"/v3/maps/demo/{kind}"
    assert _query_of(data_url) == {**source, "format": "tilejson"}
    # As the client does: its own v and client added to the data URL's query string.
    tilejson = client.get(f"{data_url}&v=3.4&client=t").json()

    (template,) = tilejson["tiles"]
    assert urlsplit(template).path == f"/v3/maps/demo/{kind}/{{z}}/{{x}}/{{y}}"
    assert _query_of(template) == {**source, "formatTiles": "mvt"}
    assert tilejson["vector_layers"][0]["id"] == "default"

    tile = client.get(template.format(z=0, x=0, y=0))
    assert tile.status_code == 200
    assert tile.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    layer = decode_mvt(tile.content)["default"]
    assert layer["version"] == 2 and layer["extent"] == 4096
    assert len(layer["features"]) == instantiation["nrows"] == tilejson["tilestats"][
        "layers"][0]["count"]


def test_tile_features_carry_the_row_attributes(client: httpx.Client) -> None:
    expected = client.get("/v3/sql/demo/query", params={
        "q": "SELECT * FROM stores WHERE cartodb_id = 7"}).json()["rows"][0]
    tile = client.get("/v3/maps/demo/table/0/0/0", params={"name": "stores"})
    (feature,) = [f for f in decode_mvt(tile.content)["default"]["features"] if f["id"] == 7]
    assert feature["props"] == {k: v for k, v in expected.items() if k != "geom"}


def test_tiles_partition_the_points(client: httpx.Client) -> None:
    total = 0
    for x in range(4):
        for y in range(4):
            tile = client.get(f"/v3/maps/demo/table/2/{x}/{y}", params={"name": "stores"})
            assert tile.status_code in (200, 204)
            if tile.status_code == 200:
                total += len(decode_mvt(tile.content)["default"]["features"])
    assert total == STORE_COUNT


def test_an_empty_tile_is_204(client: httpx.Client) -> None:
    # z10 tile in the middle of the Pacific: no store there.
    response = client.get("/v3/maps/demo/table/10/20/500", params={"name": "stores"})
    assert response.status_code == 204
    assert response.content == b""


def test_columns_limit_the_tile_properties(client: httpx.Client) -> None:
    tile = client.get("/v3/maps/demo/table/0/0/0", params={"name": "stores",
                                                           "columns": "name,revenue"})
    feature = decode_mvt(tile.content)["default"]["features"][0]
    assert set(feature["props"]) == {"name", "revenue"}


@given(
    st.lists(st.tuples(st.floats(-180, 180), st.floats(-85, 85),
                       st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
                                 st.floats(allow_nan=False, allow_infinity=False),
                                 st.booleans())),
             min_size=1, max_size=20),
    st.integers(0, 3),
)
@settings(max_examples=60, deadline=None)
def test_mvt_round_trips_properties_and_partitions_points(
    rows: list[tuple[float, float, Any]], z: int
) -> None:
    result = QueryResult(("cartodb_id", "value", "geom"), [
        (i, value, f"POINT({lon:.6f} {lat:.6f})") for i, (lon, lat, value) in enumerate(rows)])
    seen: dict[int, Any] = {}
    for x in range(2**z):
        for y in range(2**z):
            points = points_in_tile(result, "geom", z, x, y)
            if not points:
                continue
            for feature in decode_mvt(encode_mvt("default", points))["default"]["features"]:
                assert feature["id"] not in seen, "a point landed in two tiles"
                assert 0 <= feature["x"] < 4096 and 0 <= feature["y"] < 4096
                seen[feature["id"]] = feature["props"]["value"]
    assert seen == {i: value for i, (_, _, value) in enumerate(rows)}
    for i, (_, _, value) in enumerate(rows):
        assert type(seen[i]) is type(value)


def test_points_outside_web_mercator_latitudes_still_land_in_a_tile() -> None:
    result = QueryResult(("geom",), [("POINT(10 89.9)",), ("POINT(10 -89.9)",)])
    assert len(points_in_tile(result, "geom", 0, 0, 0)) == 2


def test_instantiation_of_a_query_without_geom_is_refused(client: httpx.Client) -> None:
    response = client.get("/v3/maps/demo/query", params={"q": "SELECT name FROM cities"})
    assert response.status_code == 400
    assert "no column 'geom'" in response.json()["error"]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "fragment"),
    [
        pytest.param("GET", "/v3/sql/other/query", {"q": "SELECT 1"}, 404, "connection 'other'",
                     id="unknown-connection"),
        pytest.param("GET", "/v3/sql/demo/query", {}, 400, "missing parameter 'q'",
                     id="missing-q"),
        pytest.param("GET", "/v3/sql/demo/query", {"q": "SELEC 1"}, 400, "syntax error",
                     id="syntax-error"),
        pytest.param("GET", "/v3/sql/demo/query", {"q": "SELECT * FROM nope"}, 400,
                     "no such table", id="no-such-table"),
        pytest.param("GET", "/v3/sql/demo/query", {"q": "SELECT @a", "queryParameters": "{"},
                     400, "not valid JSON", id="bad-query-parameters"),
        pytest.param("GET", "/v3/sql/demo/query", {"q": "SELECT @a",
                                                   "queryParameters": '{"a": [1]}'},
                     400, "queryParameters values", id="nested-query-parameters"),
        pytest.param("GET", "/v3/maps/demo/table", {"name": "nope"}, 404, "table 'nope'",
                     id="unknown-table"),
        pytest.param("GET", "/v3/maps/demo/table", {}, 400, "missing parameter 'name'",
                     id="missing-name"),
        pytest.param("GET", "/v3/maps/demo/table", {"name": "stores", "q": "SELECT 1"}, 400,
                     "takes 'name', not 'q'", id="table-with-q"),
        pytest.param("GET", "/v3/maps/demo/tileset", {"name": "stores"}, 404, "'tileset'",
                     id="tileset"),
        pytest.param("GET", "/v3/maps/demo/table", {"name": "stores", "spatialDataType": "h3"},
                     400, "spatialDataType 'h3'", id="h3"),
        pytest.param("GET", "/v3/maps/demo/table", {"name": "stores",
                                                    "filters": '{"revenue": {"in": [1]}}'},
                     400, "filters", id="filters"),
        pytest.param("GET", "/v3/maps/demo/table", {"name": "stores", "format": "geojson"}, 400,
                     "format 'geojson'", id="format"),
        pytest.param("GET", "/v3/maps/demo/table/3/8/0", {"name": "stores"}, 400,
                     "tile 3/8/0 does not exist", id="tile-out-of-range"),
        pytest.param("GET", "/v3/maps/demo/table/0/0/0", {"name": "stores",
                                                          "formatTiles": "binary"}, 400,
                     "formatTiles 'binary'", id="binary-tiles"),
        pytest.param("GET", "/v3/nothing/here", {}, 404, "no demo API endpoint",
                     id="unknown-path"),
        pytest.param("DELETE", "/v3/sql/demo/query", {}, 405, "method DELETE", id="method"),
        pytest.param("GET", "/v3/lds/geocoding/geocode", {}, 400, "missing parameter 'address'",
                     id="geocode-without-address"),
        pytest.param("GET", "/v3/lds/geocoding/geocode", {"address": "Rome", "limit": "x"},
                     400, "limit", id="geocode-bad-limit"),
    ],
)
def test_errors_are_json_with_a_status(client: httpx.Client, method: str, path: str,
                                       params: dict[str, str], status: int,
                                       fragment: str) -> None:
    response = client.request(method, path, params=params)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_a_repeated_parameter_is_refused(client: httpx.Client) -> None:
    response = client.get("/v3/maps/demo/table?name=stores&name=customers")
    assert response.status_code == 400
    assert "'name' appears more than once" in response.json()["error"]


def test_a_parameter_in_url_and_body_is_refused(client: httpx.Client) -> None:
    response = client.post("/v3/maps/demo/table?name=stores", json={"name": "customers"})
    assert response.status_code == 400
    assert "both in the URL and in the body" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"{not json", "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "JSON object", id="not-object"),
    ],
)
def test_a_bad_body_is_refused(client: httpx.Client, body: bytes, fragment: str) -> None:
    response = client.post("/v3/sql/demo/query", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_an_oversized_body_is_refused(client: httpx.Client) -> None:
    response = client.post("/v3/sql/demo/query", content=b" " * 1_100_000)
    assert response.status_code == 413


# --- LDS geocoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"address": "Madrid"}, [("Madrid", "ES")], id="exact"),
        pytest.param({"address": "Calle Mayor 1, Madrid, Spain"}, [("Madrid", "ES")],
                     id="inside-an-address"),
        pytest.param({"address": "bogota"}, [("Bogotá", "CO")], id="accents-and-case"),
        pytest.param({"address": "Sao Paulo"}, [("São Paulo", "BR")], id="two-words"),
        pytest.param({"address": "Boston", "country": "GB"}, [], id="country-filter"),
        pytest.param({"address": "Atlantis"}, [], id="unknown"),
        pytest.param({"address": "Paris or Lyon", "limit": "5"}, [("Paris", "FR"),
                                                                  ("Lyon", "FR")],
                     id="limit-by-population"),
        pytest.param({"address": "Yorkshire"}, [], id="no-partial-word-match"),
    ],
)
def test_geocode_from_the_gazetteer(client: httpx.Client, params: dict[str, str],
                                    expected: list[tuple[str, str]]) -> None:
    response = client.get("/v3/lds/geocoding/geocode", params=params)
    assert response.status_code == 200
    (entry,) = response.json()
    assert [(v["name"], v["country"]) for v in entry["value"]] == expected


def test_geocode_returns_coordinates(client: httpx.Client) -> None:
    (entry,) = client.get("/v3/lds/geocoding/geocode", params={"address": "Madrid"}).json()
    (place,) = entry["value"]
    assert place["longitude"] == pytest.approx(-3.70, abs=0.01)
    assert place["latitude"] == pytest.approx(40.42, abs=0.01)
    assert place["relevance"] == 1.0


# --- the command -----------------------------------------------------------------------------


def test_parse_args_defaults() -> None:
    assert parse_args([]) == DemoOptions(port=8000, data_dir=Path("./token_guard_demo"))


def test_parse_args_refuses_a_bad_port() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--port", "70000"])


def test_main_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path, free_port: int) -> None:
    script = ("import sys; from token_guard.demo import main; "
              f"sys.exit(main(['--port', '{free_port}', '--data-dir', sys.argv[1]]))")
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=interruptible)
    try:
        url = f"http://127.0.0.1:{free_port}/v3/lds/geocoding/geocode?address=Rome"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.1)
        assert response.status_code == 401  # the demo's API is guarded: no token, no data
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "data" / DATABASE_FILE).exists()
