"""Realistic traffic for the benchmarks: seeded, deterministic streams of requests.

A benchmark that repeats one request measures the guard's memo of whole answers, not the
guard. Real map traffic does not repeat: every view asks for dozens of tile URLs with
distinct ``z/x/y``, apps rotate through many tokens, and dynamic filters send the same
granted query with different ``queryParameters``. Each workload here is an endless stream
of such requests (same seed, same stream), with the status TokenGuard must answer:

- ``repeated``: one table request, again and again (the old headline; a row, not a target).
- ``tiles``: views of 20 adjacent tiles (table, wildcard-table and query tiles), every URL
  distinct, over 100 tokens each holding a table, a wildcard and a query grant and referers;
  most requests carry ``Origin`` and ``Referer``, some only ``Referer``.
- ``query_params``: ``/v3/sql/{conn}/query`` with the granted query and distinct
  ``queryParameters`` JSON, over 100 tokens.
- ``mixed``: maps tiles, SQL queries and LDS geocoding over 1,000 tokens of three kinds
  (browser map apps, server-side apps, geocoding apps), skewed towards a few busy tokens,
  a few origins, and about 5 % refusals of five kinds.
- ``flood_urls``: distinct tile URLs with known tokens, after a warm-up of 5,000 of them,
  so the memos are full and must stay bounded.
- ``flood_tokens``: every request a fresh well-formed unknown token (401), after 5,000.

Tokens are created through the public API (``await store.create_token(body)``) and each is
used once before measurement (``warmup``), so what is measured is the cached path (except
the floods, whose point is the miss).
"""

from __future__ import annotations

import io
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from token_guard.core.secret import secret_from_body

CONNECTIONS = {"carto_dw": "bigquery"}
CONNECTION = "carto_dw"
ORIGINS = ("https://maps.example.com", "https://app.example.com",
           "https://dashboards.example.com", "http://localhost:3000")
EVIL_ORIGIN = "https://evil.example.org"
BROWSER_REFERERS = ["https://*.example.com", "http://localhost:*"]
CLIENT = "v=3.4&client=deckgl-carto"
USER_AGENT = (b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              b"Chrome/131.0.0.0 Safari/537.36")
SHARED_TABLES = 20  # tables under the shared wildcard grant
QUERY_TEXTS = 10  # distinct granted query texts; token i holds QUERIES[i % 10]
FLOOD_WARMUP = 5000
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def query_text(i: int) -> str:
    """The ``i``-th granted query (a dynamic filter with two placeholders)."""
    return (f"SELECT name, geom, revenue FROM proj.ds{i}.stores "
            f"WHERE city = @city AND revenue > @min_revenue")


@dataclass(frozen=True, slots=True)
class TokenPlan:
    """One token to create: its body and what it may read (for building its requests)."""

    kind: str  # "map", "server" or "geocoding"
    table: str
    query: str
    body: dict[str, Any]


def token_plan(i: int, kind: str = "map") -> TokenPlan:
    """Token ``i``: a table, the shared wildcard and a query grant; APIs by ``kind``."""
    table = f"proj.ds{i % 10}.table_{i}"
    query = query_text(i % QUERY_TEXTS)
    apis, referers = {
        "map": (["maps", "sql"], BROWSER_REFERERS),
        "server": (["sql", "lds"], []),
        "geocoding": (["maps", "lds"], BROWSER_REFERERS),
    }[kind]
    body = {
        "name": f"{kind} app {i}",
        "grants": [
            {"connection_name": CONNECTION, "source": table},
            {"connection_name": CONNECTION, "source": "proj.shared.*"},
            {"connection_name": CONNECTION, "source": query},
        ],
        "referers": referers,
        "allowed_apis": apis,
    }
    return TokenPlan(kind, table, query, body)


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a client sends it, and the status TokenGuard must answer."""

    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    status: int

    def scope(self) -> dict[str, Any]:
        """The ASGI HTTP scope uvicorn would build."""
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode("ascii"),
            "query_string": self.query,
            "root_path": "",
            "headers": list(self.headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

    def environ(self) -> dict[str, Any]:
        """The WSGI environ waitress would build (with REQUEST_URI, the raw target)."""
        query = self.query.decode("ascii")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": query,
            "REQUEST_URI": f"{self.path}?{query}" if query else self.path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers:
            environ["HTTP_" + name.decode("ascii").upper().replace("-", "_")] = value.decode(
                "latin-1")
        return environ

    def target(self) -> str:
        """``path?query``, as on the request line."""
        return f"{self.path}?{self.query.decode('ascii')}" if self.query else self.path

    def header(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lower case), if sent."""
        return next((v for k, v in self.headers if k == name), None)


def headers(token: str | None, origin: str | None, referer: str | None
            ) -> tuple[tuple[bytes, bytes], ...]:
    """What a browser running the CARTO JS client sends (``token`` None: no Authorization)."""
    out = [(b"host", b"127.0.0.1:8000"), (b"accept", b"application/json")]
    if token is not None:
        out.append((b"authorization", f"Bearer {token}".encode("ascii")))
    if origin is not None:
        out.append((b"origin", origin.encode("ascii")))
    if referer is not None:
        out.append((b"referer", referer.encode("ascii")))
    out += [(b"user-agent", USER_AGENT), (b"accept-encoding", b"gzip, deflate, br")]
    return tuple(out)


def browser(rng: random.Random, token: str | None, origin: str | None = None
            ) -> tuple[tuple[bytes, bytes], ...]:
    """Headers from a page on one of ``ORIGINS``: 70 % Origin and Referer, 30 % Referer only."""
    site = origin or rng.choice(ORIGINS)
    referer = f"{site}/dashboards/{rng.randrange(50)}"
    return headers(token, site if rng.random() < 0.7 else None, referer)


def table_request(table: str, token: str | None, hdrs: tuple[tuple[bytes, bytes], ...],
                  status: int = 200) -> Request:
    """A map instantiation of a table source."""
    return Request("GET", f"/v3/maps/{CONNECTION}/table",
                   f"name={table}&{CLIENT}".encode(), hdrs, status)


def tile_request(endpoint: str, source: str, zxy: tuple[int, int, int], token: str | None,
                 hdrs: tuple[tuple[bytes, bytes], ...], params: str = "",
                 status: int = 200) -> Request:
    """A tile of a table (``name=``) or query (``q=`` + ``queryParameters``) source."""
    z, x, y = zxy
    param = "name" if endpoint == "table" else "q"
    query = f"{param}={quote(source, safe='.*')}"
    if params:
        query += f"&queryParameters={quote(params, safe='')}"
    return Request("GET", f"/v3/maps/{CONNECTION}/{endpoint}/{z}/{x}/{y}",
                   f"{query}&{CLIENT}".encode(), hdrs, status)


def sql_request(query: str, params: str, hdrs: tuple[tuple[bytes, bytes], ...],
                status: int = 200) -> Request:
    """A SQL API query with bound parameters."""
    return Request("GET", f"/v3/sql/{CONNECTION}/query",
                   f"q={quote(query, safe='')}&queryParameters={quote(params, safe='')}&v=3.4"
                   .encode(), hdrs, status)


def geocode_request(address: str, hdrs: tuple[tuple[bytes, bytes], ...],
                    status: int = 200) -> Request:
    """An LDS geocoding request (API check only: no source)."""
    return Request("GET", "/v3/lds/geocoding/geocode",
                   f"address={quote(address)}&country=US&v=3.4".encode(), hdrs, status)


def filter_params(k: int) -> str:
    """The ``k``-th distinct value of the dynamic filter's parameters."""
    return json.dumps({"city": f"City {k % 997}", "min_revenue": 1000 + k})


class Views:
    """Distinct tile coordinates, grouped as a map view asks for them: 5 x 4 adjacent tiles."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[tuple[int, int, int]] = set()
        self.pending: list[tuple[int, int, int]] = []

    def next(self) -> tuple[int, int, int]:
        """The next tile never asked for before."""
        while not self.pending:
            z = self.rng.randrange(4, 17)
            side = 1 << z
            x0, y0 = self.rng.randrange(side - 5), self.rng.randrange(side - 4)
            view = [(z, x0 + dx, y0 + dy) for dy in range(4) for dx in range(5)]
            self.pending = [t for t in reversed(view) if t not in self.seen]
        tile = self.pending.pop()
        self.seen.add(tile)
        return tile


def unknown_secret(rng: random.Random) -> str:
    """A well-formed token (prefix, alphabet, checksum) no store holds."""
    return secret_from_body("".join(rng.choice(_ALPHABET) for _ in range(32)))


Stream = Callable[[Sequence[TokenPlan], Sequence[str], random.Random], Iterator[Request]]


@dataclass(frozen=True, slots=True)
class Workload:
    """A named traffic pattern: the tokens it needs and the endless stream of its requests."""

    name: str
    description: str
    plans: tuple[TokenPlan, ...]
    stream: Stream
    realistic: bool = True  # a target row (the repeated request and the floods are not)
    prefill: int = 0  # requests of the stream sent before measuring (floods: fill the memos)

    def requests(self, secrets: Sequence[str], seed: int = 1) -> Iterator[Request]:
        """The stream for tokens whose secrets are ``secrets`` (in ``plans`` order)."""
        return self.stream(self.plans, secrets, random.Random(f"{self.name}/{seed}"))

    def warmup(self, secrets: Sequence[str]) -> list[Request]:
        """One allowed request per token, then each shared table and each query text once
        (their first sight parses them with sqlglot: a one-off, not the cached path); none
        of them part of the stream."""
        out = []
        for plan, secret in zip(self.plans, secrets, strict=True):
            origin = None if plan.kind == "server" else ORIGINS[0]
            hdrs = headers(secret, origin, None)
            if plan.kind == "server":
                out.append(sql_request(plan.query, filter_params(-1), hdrs))
            else:
                out.append(table_request(plan.table, secret, hdrs))
        first = next((i for i, p in enumerate(self.plans) if p.kind != "server"), None)
        if first is not None:
            hdrs = headers(secrets[first], ORIGINS[0], None)
            out += [table_request(f"proj.shared.layer_{k}", secrets[first], hdrs)
                    for k in range(SHARED_TABLES)]
        for plan, secret in list(zip(self.plans, secrets, strict=True))[:QUERY_TEXTS]:
            origin = None if plan.kind == "server" else ORIGINS[0]
            hdrs = headers(secret, origin, None)
            if "sql" in plan.body["allowed_apis"]:
                out.append(sql_request(plan.query, filter_params(-2), hdrs))
            else:
                out.append(tile_request("query", plan.query, (0, 0, 0), secret, hdrs,
                                        filter_params(-2)))
        return out


def _repeated(plans: Sequence[TokenPlan], secrets: Sequence[str], rng: random.Random
              ) -> Iterator[Request]:
    one = table_request(plans[0].table, secrets[0], headers(secrets[0], ORIGINS[0], None))
    while True:
        yield one


def _map_tile(plan: TokenPlan, secret: str, tile: tuple[int, int, int], rng: random.Random,
              k: int) -> Request:
    """A tile of one of the token's three grants: 70 % its table, 15 % shared, 15 % query."""
    hdrs = browser(rng, secret)
    roll = rng.random()
    if roll < 0.70:
        return tile_request("table", plan.table, tile, secret, hdrs)
    if roll < 0.85:
        shared = f"proj.shared.layer_{rng.randrange(SHARED_TABLES)}"
        return tile_request("table", shared, tile, secret, hdrs)
    return tile_request("query", plan.query, tile, secret, hdrs, filter_params(k))


def _tiles(plans: Sequence[TokenPlan], secrets: Sequence[str], rng: random.Random
           ) -> Iterator[Request]:
    views = Views(rng)
    k = 0
    while True:
        i = rng.randrange(len(plans))  # one view (20 tiles) per token at a time
        for _ in range(20):
            k += 1
            yield _map_tile(plans[i], secrets[i], views.next(), rng, k)


def _query_params(plans: Sequence[TokenPlan], secrets: Sequence[str], rng: random.Random
                  ) -> Iterator[Request]:
    k = 0
    while True:
        k += 1
        i = rng.randrange(len(plans))
        yield sql_request(plans[i].query, filter_params(k), browser(rng, secrets[i]))


def _mixed(plans: Sequence[TokenPlan], secrets: Sequence[str], rng: random.Random
           ) -> Iterator[Request]:
    views = Views(rng)
    unknown = [unknown_secret(rng) for _ in range(50)]  # stale apps retrying a dead token
    k = 0
    while True:
        k += 1
        # Skewed: a few busy apps send most of the traffic (the square pulls towards 0).
        i = int(len(plans) * rng.random() ** 2)
        plan, secret = plans[i], secrets[i]
        roll = rng.random()
        if roll < 0.05:
            yield _refusal(plan, secret, rng, views, unknown, k)
        elif plan.kind == "map":
            if rng.random() < 0.9:
                yield _map_tile(plan, secret, views.next(), rng, k)
            else:
                yield sql_request(plan.query, filter_params(k), browser(rng, secret))
        elif plan.kind == "server":
            hdrs = headers(secret, None, None)
            if rng.random() < 0.6:
                yield sql_request(plan.query, filter_params(k), hdrs)
            else:
                yield geocode_request(f"{k} Main St, Springfield", hdrs)
        elif rng.random() < 0.5:
            yield geocode_request(f"{k} Main St, Springfield", browser(rng, secret))
        else:
            yield tile_request("table", plan.table, views.next(), secret, browser(rng, secret))


def _refusal(plan: TokenPlan, secret: str, rng: random.Random, views: Views,
             unknown: list[str], k: int) -> Request:
    """One of five refusals, equally often."""
    kind = rng.randrange(5)
    tile = views.next()
    if kind == 0:  # an unknown (revoked, mistyped) but well-formed token
        bad = rng.choice(unknown)
        return tile_request("table", plan.table, tile, bad, browser(rng, bad), status=401)
    if kind == 1:  # no token at all
        return tile_request("table", plan.table, tile, None, browser(rng, None), status=401)
    if kind == 2:  # a table the token was not granted
        return tile_request("table", "proj.private.payroll", tile, secret,
                            browser(rng, secret), status=403)
    if kind == 3:  # a page on a site the token does not allow (or, server tokens, any API no)
        if plan.kind == "server":
            return tile_request("table", plan.table, tile, secret, headers(secret, None, None),
                                status=403)
        return tile_request("table", plan.table, tile, secret,
                            browser(rng, secret, EVIL_ORIGIN), status=403)
    # an API the token does not allow
    if plan.kind == "geocoding":
        return sql_request(plan.query, filter_params(k), browser(rng, secret), status=403)
    if plan.kind == "server":
        return tile_request("query", plan.query, tile, secret, headers(secret, None, None),
                            filter_params(k), status=403)
    return geocode_request(f"{k} Main St", browser(rng, secret), status=403)


def _flood_urls(plans: Sequence[TokenPlan], secrets: Sequence[str], rng: random.Random
                ) -> Iterator[Request]:
    views = Views(rng)
    while True:
        i = rng.randrange(len(plans))
        yield tile_request("table", plans[i].table, views.next(), secrets[i],
                           browser(rng, secrets[i]))


def _flood_tokens(plans: Sequence[TokenPlan], secrets: Sequence[str], rng: random.Random
                  ) -> Iterator[Request]:
    views = Views(rng)
    while True:
        bad = unknown_secret(rng)
        yield tile_request("table", plans[0].table, views.next(), bad, browser(rng, bad),
                           status=401)


def _mixed_plans(count: int) -> tuple[TokenPlan, ...]:
    kinds = ("map",) * 7 + ("server",) * 2 + ("geocoding",)
    return tuple(token_plan(i, kinds[i % 10]) for i in range(count))


def workloads(tokens: int = 100, mixed_tokens: int = 1000) -> dict[str, Workload]:
    """Every workload by name (smaller token counts for tests)."""
    maps = tuple(token_plan(i) for i in range(tokens))
    return {w.name: w for w in (
        Workload("repeated", "one table request repeated", maps[:1], _repeated,
                 realistic=False),
        Workload("tiles", f"tiles, distinct z/x/y, {tokens} tokens", maps, _tiles),
        Workload("query_params", f"SQL query grant, distinct queryParameters, {tokens} tokens",
                 maps, _query_params),
        Workload("mixed", f"maps/sql/lds, {mixed_tokens:,} tokens, ~5 % refusals",
                 _mixed_plans(mixed_tokens), _mixed),
        Workload("flood_urls", "every tile URL new, memos full", maps, _flood_urls,
                 realistic=False, prefill=FLOOD_WARMUP),
        Workload("flood_tokens", "every token new and unknown (401), memos full", maps[:1],
                 _flood_tokens, realistic=False, prefill=FLOOD_WARMUP),
    )}


def take(stream: Iterator[Request], n: int) -> list[Request]:
    """The next ``n`` requests of ``stream``."""
    return [next(stream) for _ in range(n)]


async def _ok(request: StarletteRequest) -> Response:
    return PlainTextResponse("ok")


def inner_app() -> Starlette:
    """The app every variant wraps: the routes the workloads call, each answering ``ok``."""
    return Starlette(routes=[
        Route("/v3/maps/{conn}/table", _ok),
        Route("/v3/maps/{conn}/{endpoint}/{z}/{x}/{y}", _ok),
        Route("/v3/sql/{conn}/query", _ok),
        Route("/v3/lds/geocoding/geocode", _ok),
    ])


async def create_tokens(store: Any, plans: Sequence[TokenPlan]) -> list[str]:
    """Create every planned token through the public API; their secrets, in order."""
    return [(await store.create_token(plan.body)).token for plan in plans]


_BODY = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _BODY


async def status_of(app: Any, request: Request) -> int:
    """The status ``app`` (ASGI) answers ``request`` with."""
    status = 0

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(request.scope(), _receive, send)
    return status
