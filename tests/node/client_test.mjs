// Drives the real @carto/api-client against a token_guard demo server and prints one JSON
// object with what each step saw. The pytest in tests/test_carto_client.py runs it and asserts.
//
// Usage: node client_test.mjs <apiBaseUrl> <accessToken>
//
// Every step catches its own error and reports {ok: false, status, error, serverError}, so a
// denied token is a result to assert on, not a crash. Tiles are fetched the way deck.gl's CARTO
// layers fetch them (GET the TileJSON template with Authorization: Bearer) and decoded with the
// MVT loader deck.gl uses, so "the tile loads" means a real client could draw it.

import {query, vectorQuerySource, vectorTableSource} from '@carto/api-client';
import {parse} from '@loaders.gl/core';
import {MVTLoader} from '@loaders.gl/mvt';

const [apiBaseUrl, accessToken] = process.argv.slice(2);
if (!apiBaseUrl || !accessToken) {
  console.error('usage: node client_test.mjs <apiBaseUrl> <accessToken>');
  process.exit(2);
}
const connectionName = 'demo';
const MADRID = {lon: -3.7038, lat: 40.4168};

function tileOf(lon, lat, z) {
  const n = 2 ** z;
  const x = Math.floor(((lon + 180) / 360) * n);
  const s = Math.sin((lat * Math.PI) / 180);
  const y = Math.floor((0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * n);
  return {z, x, y};
}

function failure(error) {
  return {
    ok: false,
    name: error?.name ?? null,
    message: String(error?.message ?? error),
    status: error?.response?.status ?? null,
    serverError: error?.responseJson?.error ?? null,
    serverCode: error?.responseJson?.code ?? null,
  };
}

async function loadTile(tilejson, {z, x, y}) {
  const url = tilejson.tiles[0].replace('{z}', z).replace('{x}', x).replace('{y}', y);
  const response = await fetch(url, {headers: {Authorization: `Bearer ${tilejson.accessToken}`}});
  const body = await response.arrayBuffer();
  const result = {url, status: response.status, bytes: body.byteLength, features: 0};
  if (response.status !== 200 || body.byteLength === 0) {
    result.text = new TextDecoder().decode(body).slice(0, 500);
    return result;
  }
  const features = await parse(body, MVTLoader, {
    mvt: {coordinates: 'wgs84', tileIndex: {x, y, z}, shape: 'geojson-table'},
  });
  const list = Array.isArray(features) ? features : features.features;
  result.features = list.length;
  result.first = list[0] ?? null;
  return result;
}

async function source(make, options) {
  try {
    const tilejson = await make({apiBaseUrl, accessToken, connectionName, ...options});
    const world = await loadTile(tilejson, {z: 0, x: 0, y: 0});
    const madrid = await loadTile(tilejson, tileOf(MADRID.lon, MADRID.lat, 7));
    return {
      ok: true,
      tiles: tilejson.tiles,
      schema: tilejson.schema,
      bounds: tilejson.bounds,
      accessTokenSet: tilejson.accessToken === accessToken,
      world,
      madrid,
    };
  } catch (error) {
    return failure(error);
  }
}

async function sql(options) {
  try {
    const result = await query({apiBaseUrl, accessToken, connectionName, ...options});
    return {ok: true, rows: result.rows, schema: result.schema, meta: result.meta};
  } catch (error) {
    return failure(error);
  }
}

const results = {
  query: await sql({
    sqlQuery: 'SELECT storetype, COUNT(*) AS n FROM stores GROUP BY storetype ORDER BY storetype',
  }),
  // maxLengthURL: 10 forces the client's POST fallback (JSON body instead of query string).
  queryPost: await sql({
    sqlQuery: 'SELECT name, revenue FROM stores WHERE city = @city ORDER BY revenue DESC LIMIT 3',
    queryParameters: {city: 'Madrid'},
    maxLengthURL: 10,
  }),
  vectorTableSource: await source(vectorTableSource, {tableName: 'stores'}),
  vectorQuerySource: await source(vectorQuerySource, {
    sqlQuery: 'SELECT cartodb_id, name, storetype, revenue, geom FROM stores WHERE storetype = @t',
    queryParameters: {t: 'Hypermarket'},
  }),
};
console.log(JSON.stringify(results));
