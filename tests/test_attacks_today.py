"""Adversarial tests of the features that landed together: ``tg.one_port``'s split, report-only
per API, built-in table sources in the SQL analyser, and the secret-scanning endpoint behind
one port. Each row is an attack; it passes when the attack is refused (or, for a path, lands
only where a full check was made)."""

from __future__ import annotations

import base64
import json
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import token_guard as tg
from tests.servers import ServerThread, bearer, send, serve
from tests.store_contract import EVENT_WAIT, wait_for
from tests.tcp_proxy import TcpProxy
from tests.test_limiters import limited_guard
from tests.test_postgres_faults import proxied_store, proxy, schema  # noqa: F401 (fixtures)
from tests.tokens import CONNECTIONS, FULL
from token_guard.core import decision as codes
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.records import ChangeEvent
from token_guard.core.sql import SqlAnalyzer, SqlRefusal
from token_guard.guard import Guard
from token_guard.report_only import ReportOnlyWarning, parse_report_only
from token_guard.stores import MemoryStore, SQLiteStore
from token_guard.stores.postgres import PostgresStore

ISSUER = "https://tokens.test"
AUDIENCE = "token-guard-api"
ANALYZER = SqlAnalyzer()


# -- one_port: which app a path lands in --------------------------------------------------
def _data_app(hits: list[str]) -> Starlette:
    """The data API: each handler records that it ran (it must only run after the guard)."""

    def handler(name: str) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            hits.append(name)
            token = tg.get_token(request.scope)
            return JSONResponse({"handler": name, "token": token.id if token else None})
        return endpoint

    return Starlette(routes=[
        Route("/v3/maps/{connection}/table", handler("maps")),
        Route("/v3/sql/{connection}/query", handler("sql"), methods=["GET", "POST"]),
        Route("/v3/sql/{connection}/job/{job}", handler("sql-job")),
        Route("/v3/tokens", handler("data-tokens")),  # a data route shadowing a management one
    ])


@contextmanager
def one_port_site(**guard: Any) -> Iterator[tuple[ServerThread, MemoryStore, list[str], str]]:
    """The documented one-port app over real uvicorn, with a maps-only token."""
    store = MemoryStore()
    hits: list[str] = []
    app = tg.one_port(
        guarded=tg.TokenGuard(_data_app(hits), store=store, connections=CONNECTIONS, **guard),
        management=tg.create_management_app(store, issuer=ISSUER, audience=AUDIENCE),
    )
    with serve(app) as server:
        issued = server.call(lambda: store.create_token({**FULL, "allowed_apis": ["maps"]}))
        yield server, store, hits, issued.token


# Paths sent verbatim to uvicorn with a maps-only token: none may run an SQL handler, and
# the management app (which answers with its own JSON errors) never runs a data handler.
PATH_ATTACKS = [
    pytest.param("/v3/tokens/../sql/carto_dw/query?q=SELECT+1", id="dotdot-from-tokens"),
    pytest.param("/v3/tokens/%2e%2e/sql/carto_dw/query?q=SELECT+1", id="encoded-dotdot"),
    pytest.param("/v3/tokens%2F..%2Fsql/carto_dw/query?q=SELECT+1", id="encoded-slash"),
    pytest.param("/v3//tokens", id="double-slash"),
    pytest.param("//v3/tokens", id="leading-double-slash"),
    pytest.param("/v3/tokens;x", id="semicolon"),
    pytest.param("/v3/%74okens", id="encoded-letter"),
    pytest.param("/V3/TOKENS", id="upper-case"),
    pytest.param("/v3/tokens.", id="trailing-dot"),
    pytest.param("/v3/tokens/.", id="dot-segment"),
    pytest.param("/v3/tokens%00", id="nul"),
    pytest.param("/v3/tokens\\..\\sql/carto_dw/query?q=SELECT+1", id="backslash"),
    pytest.param("/developers/../v3/sql/carto_dw/query?q=SELECT+1", id="developers-dotdot"),
    pytest.param("/oauth/%2E%2E/v3/sql/carto_dw/query?q=SELECT+1", id="oauth-encoded-dotdot"),
    pytest.param("/v3/%73ql/carto_dw/query?q=SELECT+1", id="encoded-sql-letter"),
    pytest.param("/v3/maps/carto_dw/../../sql/carto_dw/query?q=SELECT+1", id="maps-dotdot-sql"),
    pytest.param("/v3/maps%2F..%2F..%2Fsql/carto_dw/query?q=SELECT+1", id="maps-encoded-sql"),
]


@pytest.mark.parametrize("path", PATH_ATTACKS)
def test_one_port_path_tricks_reach_no_unchecked_handler(path: str) -> None:
    with one_port_site() as (server, _, hits, secret):
        reply = send(server.port, "GET", path, bearer(secret))
        assert reply.status >= 400, (reply.status, reply.body)
        assert hits == [], f"{path!r} ran {hits} with a maps-only token"


@pytest.mark.parametrize("path", PATH_ATTACKS)
def test_one_port_path_tricks_report_only_maps_never_serve_sql(path: str) -> None:
    with pytest.warns(ReportOnlyWarning), one_port_site(report_only={"maps"}) as (
        server, _, hits, secret
    ):
        send(server.port, "GET", path, bearer(secret))
        send(server.port, "GET", path)  # no token: a maps refusal would be let through
        assert not {"sql", "sql-job", "data-tokens"} & set(hits), (path, hits)


async def _call(app: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    """One ASGI request with a hand-built scope (raw_path and path as given)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "query_string": b"", "root_path": "",
            "headers": [], "server": ("tg", 80), "client": ("127.0.0.1", 1)}
    await app({**base, **scope}, receive, record)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


# (raw_path, path): a server or an outer middleware whose two disagree.
DISAGREEING_SCOPES = [
    pytest.param(b"/v3/tokens", "/v3/sql/carto_dw/query", id="raw-management-path-sql"),
    pytest.param(b"/v3/maps/carto_dw/table", "/v3/sql/carto_dw/query", id="raw-maps-path-sql"),
    pytest.param(b"/v3/maps/carto_dw/table", "/v3/tokens", id="raw-maps-path-tokens"),
    pytest.param(b"/developers", "/v3/sql/carto_dw/query", id="raw-developers-path-sql"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("report_only", [False, {"maps"}], ids=["enforced", "report-only-maps"])
@pytest.mark.parametrize(("raw_path", "path"), DISAGREEING_SCOPES)
async def test_one_port_raw_path_and_path_disagreeing_reach_no_other_handler(
    raw_path: bytes, path: str, report_only: Any
) -> None:
    store = MemoryStore()
    hits: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportOnlyWarning)
        guarded = tg.TokenGuard(_data_app(hits), store=store, connections=CONNECTIONS,
                                report_only=report_only)
    app = tg.one_port(
        guarded=guarded,
        management=tg.create_management_app(store, issuer=ISSUER, audience=AUDIENCE),
    )
    issued = await store.create_token({**FULL, "allowed_apis": ["maps"]})
    auth = [(b"authorization", f"Bearer {issued.token}".encode())]
    status, body = await _call(app, {"raw_path": raw_path, "path": path, "headers": auth,
                                     "query_string": b"name=proj.ds.stores&q=SELECT+1"})
    assert hits == [], f"{raw_path!r} checked, {path!r} served: {hits}"
    assert status >= 400, body


def test_one_port_routes_the_secret_scanning_endpoint_to_management() -> None:
    """GitHub posts to /v3/secret-scanning/github on the one port: it must reach the verified
    endpoint (and an unsigned report revokes nothing), not the guard's unknown route."""
    store = MemoryStore()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    hits: list[str] = []
    app = tg.one_port(
        guarded=tg.TokenGuard(_data_app(hits), store=store, connections=CONNECTIONS),
        management=tg.create_management_app(store, issuer=ISSUER, audience=AUDIENCE,
                                            secret_scanning_keys={"k1": pem}),
    )
    with serve(app) as server:
        issued = server.call(lambda: store.create_token(FULL))
        raw = json.dumps([{"token": issued.token, "type": "t", "url": "u", "source": "s"}])
        unsigned = send(server.port, "POST", "/v3/secret-scanning/github",
                        [("Content-Type", "application/json")], raw.encode())
        assert unsigned.status == 401 and unsigned.json()["code"] == "invalid_signature"
        forged = send(server.port, "POST", "/v3/secret-scanning/github", [
            ("Content-Type", "application/json"), ("Github-Public-Key-Identifier", "k1"),
            ("Github-Public-Key-Signature", base64.b64encode(
                key.sign(b"[]", ec.ECDSA(hashes.SHA256()))).decode()),
        ], raw.encode())
        assert forged.status == 401 and forged.json()["code"] == "invalid_signature"
        record = server.call(lambda: store.get_token(issued.id))
        assert record is not None and record.state(datetime.now(UTC)) == "active"
        signature = base64.b64encode(key.sign(raw.encode(), ec.ECDSA(hashes.SHA256())))
        signed = send(server.port, "POST", "/v3/secret-scanning/github", [
            ("Content-Type", "application/json"), ("Github-Public-Key-Identifier", "k1"),
            ("Github-Public-Key-Signature", signature.decode()),
        ], raw.encode())
        assert signed.status == 200, signed.body
        assert signed.json()[0]["label"] == "true_positive"
        assert hits == []


# -- report-only: off unless asked for, and only for the named APIs -------------------------
@pytest.mark.parametrize("value", [
    pytest.param("false", id="string-false"),
    pytest.param("maps", id="bare-string"),
    pytest.param(1, id="one"),
    pytest.param(0, id="zero"),
    pytest.param({"Maps"}, id="case-typo"),
    pytest.param(set(), id="empty-set"),
    pytest.param({"maps", "sqll"}, id="one-typo"),
])
def test_report_only_odd_values_fail_at_start_up(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="report_only"):
        parse_report_only(value)


def test_report_only_is_off_by_default_in_every_adapter() -> None:
    store = MemoryStore()
    asgi = tg.TokenGuard(_data_app([]), store=store, connections=CONNECTIONS)
    wsgi = tg.TokenGuardWSGI(lambda e, s: [], store=store, connections=CONNECTIONS)
    assert asgi.guard.report_only is None and wsgi.guard.report_only is None


@pytest.mark.parametrize("line", [
    pytest.param("report_only = true", id="top-level"),
    pytest.param('report_only = "false"', id="string-false"),
    pytest.param("report-only = true", id="dash-typo"),
    pytest.param("reportonly = true", id="joined-typo"),
])
def test_config_file_cannot_turn_report_only_on(tmp_path: Path, line: str) -> None:
    file = tmp_path / "token_guard.toml"
    file.write_text(textwrap.dedent(f"""\
        store = "memory://"
        {line}
        [connections]
        carto_dw = "bigquery"
        """))
    with pytest.raises(ConfigurationError, match="report"):
        tg.load_config(file, environ={})


@pytest.mark.parametrize(("method", "path"), [
    pytest.param("GET", b"/v3/sql/carto_dw/query", id="sql"),
    pytest.param("GET", b"/v3/unknown/x", id="unknown-route"),
    pytest.param("GET", b"/v3/maps/carto_dw/../sql", id="dot-segment"),
    pytest.param("GET", b"/V3/MAPS/carto_dw/table", id="upper-case-maps"),
    pytest.param("DELETE", b"/v3/maps/carto_dw/table", id="undeclared-method"),
    pytest.param("GET", b"/v3/maps/carto_dw/table/", id="trailing-slash"),
    pytest.param("GET", b"/v3/maps//carto_dw/table", id="empty-segment"),
])
def test_report_only_maps_enforces_what_is_not_surely_maps(method: str, path: bytes) -> None:
    with pytest.warns(ReportOnlyWarning):
        guard = tg.TokenGuard(_data_app([]), store=MemoryStore(), connections=CONNECTIONS,
                             report_only={"maps"}).guard
    assert guard.lets_through("GET", b"/v3/maps/carto_dw/table")
    # An escaped letter decodes to maps for the guard as for Starlette: the same route.
    assert guard.lets_through("GET", b"/v3/%6daps/carto_dw/table")
    assert not guard.lets_through(method, path)


# -- SQL: built-ins as sources, named types ---------------------------------------------------
# Each query would read (or reveal the columns or existence of) an ungranted table.
SQL_ATTACKS = [
    pytest.param("postgres", "SELECT * FROM json_populate_recordset(null::db.sch.secret, '[{}]')",
                 id="pg-populate-recordset-row-type"),
    pytest.param("postgres", "SELECT json_populate_record(null::db.sch.secret, '{}') FROM db.sch.t",
                 id="pg-populate-record-row-type"),
    pytest.param("postgres", "SELECT null::db.sch.secret FROM db.sch.t", id="pg-cast-row-type"),
    pytest.param("postgres", "SELECT CAST(null AS db.sch.secret)", id="pg-cast-as-row-type"),
    pytest.param("postgres", "SELECT row_to_json('(,)'::db.sch.secret)", id="pg-row-to-json"),
    pytest.param("postgres", "SELECT to_json(null::secret)", id="pg-unqualified-row-type"),
    pytest.param("postgres", "SELECT * FROM jsonb_to_recordset('[]') AS x(a db.sch.secret)",
                 id="pg-column-definition-row-type"),
    pytest.param("postgres", "SELECT 'db.sch.secret'::regclass", id="pg-regclass-cast"),
    pytest.param("postgres", "SELECT * FROM regclass('db.sch.secret')", id="pg-regclass-call"),
    pytest.param("postgres", "SELECT regclass('db.sch.secret')::oid", id="pg-regclass-oid"),
    pytest.param("postgres", "SELECT 'db.sch.secret'::regtype", id="pg-regtype-cast"),
    pytest.param("postgres", "SELECT pg_typeof(null::db.sch.secret)", id="pg-typeof"),
    pytest.param("postgres", "SELECT * FROM generate_series(1, (SELECT count(*) FROM "
                 "db.sch.secret))", id="pg-series-subquery"),
    pytest.param("postgres", "SELECT * FROM ROWS FROM (generate_series(1, 2), "
                 "json_populate_record(null::db.sch.secret, '{}'))", id="pg-rows-from"),
    pytest.param("postgres", "SELECT * FROM db.sch.t, LATERAL (SELECT * FROM db.sch.secret) s",
                 id="pg-lateral"),
    pytest.param("postgres", "SELECT * FROM db.sch.t TABLESAMPLE SYSTEM ((SELECT count(*) "
                 "FROM db.sch.secret))", id="pg-tablesample-subquery"),
    pytest.param("postgres", "SELECT * FROM ts_stat('select v from db.sch.secret')",
                 id="pg-ts-stat"),
    pytest.param("postgres", "SELECT xpath('/x', query_to_xml('select * from db.sch.secret', "
                 "true, true, ''))", id="pg-xpath-query-to-xml"),
    pytest.param("postgres", "SELECT * FROM ST_Dump((SELECT g FROM db.sch.secret LIMIT 1))",
                 id="pg-st-dump-subquery"),
    pytest.param("postgres", "SELECT * FROM db.sch.t WHERE g && (SELECT g FROM db.sch.secret "
                 "LIMIT 1)", id="pg-postgis-operator-subquery"),
    pytest.param("postgres", "SELECT * FROM unnest((SELECT array_agg(s) FROM db.sch.secret s))",
                 id="pg-unnest-subquery"),
    pytest.param("postgres", "SELECT * FROM pg_catalog.generate_series(1, 2)",
                 id="pg-qualified-builtin"),
    pytest.param("postgres", "SELECT * FROM db.sch.generate_series(1, 2)",
                 id="pg-schema-function-named-like-builtin"),
    pytest.param("postgres", "SELECT to_regclass('db.sch.secret')", id="pg-to-regclass"),
    pytest.param("postgres", "SELECT pg_read_file('/etc/passwd')", id="pg-read-file"),
    pytest.param("postgres", "SELECT dblink('host=x', 'select 1')", id="pg-dblink"),
    pytest.param("postgres", "SELECT lo_get(1)", id="pg-lo-get"),
    pytest.param("redshift", "SELECT * FROM regclass('db.sch.secret')", id="rs-regclass-call"),
    pytest.param("bigquery", "SELECT * FROM EXTERNAL_QUERY('c', 'select * from secret')",
                 id="bq-external-query"),
    pytest.param("bigquery", "SELECT * FROM ML.PREDICT(MODEL proj.ds.m, TABLE proj.ds.secret)",
                 id="bq-ml-predict"),
    pytest.param("bigquery", "SELECT * FROM VECTOR_SEARCH(TABLE proj.ds.secret, 'e', "
                 "(SELECT 1))", id="bq-vector-search"),
    pytest.param("bigquery", "SELECT * FROM APPENDS(TABLE proj.ds.secret)", id="bq-appends"),
    pytest.param("bigquery", "SELECT * FROM UNNEST((SELECT ARRAY_AGG(x) FROM proj.ds.secret x))",
                 id="bq-unnest-subquery"),
    pytest.param("snowflake", "SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))",
                 id="sf-result-scan"),
    pytest.param("snowflake", "SELECT * FROM IDENTIFIER('db.sch.secret')", id="sf-identifier"),
    pytest.param("snowflake", "SELECT * FROM TABLE('db.sch.secret')", id="sf-table-name"),
    pytest.param("snowflake", "SELECT * FROM TABLE(db.sch.secret_fn())", id="sf-udtf"),
    pytest.param("duckdb", "SELECT * FROM read_csv('/etc/passwd')", id="duck-read-csv"),
    pytest.param("duckdb", "SELECT * FROM query_table('cat.sch.secret')", id="duck-query-table"),
    pytest.param("duckdb", "SELECT * FROM query('select * from cat.sch.secret')",
                 id="duck-query"),
    pytest.param("duckdb", "SELECT * FROM sql_auto_complete('sel')", id="duck-autocomplete"),
    pytest.param("duckdb", "SELECT getvariable('x')", id="duck-getvariable"),
    pytest.param("duckdb", "SELECT * FROM glob('/etc/*')", id="duck-glob"),
    pytest.param("duckdb", "SELECT * FROM read_text('/etc/passwd')", id="duck-read-text"),
    pytest.param("duckdb", "SELECT * FROM '/etc/passwd'", id="duck-file-string"),
    pytest.param("duckdb", "SELECT x::cat.sch.secret FROM cat.sch.t", id="duck-named-type"),
    pytest.param("duckdb", "SELECT * FROM duckdb_tables()", id="duck-catalog"),
    pytest.param("sqlite", "SELECT * FROM pragma_table_info('secret')", id="sqlite-pragma"),
    pytest.param("databricks", "SELECT * FROM read_files('/x')", id="dbx-read-files"),
]
GRANTED = {
    "postgres": ("db", "sch", "t"), "redshift": ("db", "sch", "t"),
    "bigquery": ("proj", "ds", "t"), "snowflake": ("DB", "SCH", "T"),
    "duckdb": ("cat", "sch", "t"), "sqlite": ("t",), "databricks": ("cat", "sch", "t"),
}


@pytest.mark.parametrize(("dialect", "query"), SQL_ATTACKS)
def test_sql_reads_nothing_ungranted_through_builtins_or_types(dialect: str, query: str) -> None:
    result = ANALYZER.analyze(query, Connection(dialect))
    if isinstance(result, SqlRefusal):
        return
    # Allowed only if it lists the ungranted table (the grant check then refuses it).
    assert result.tables - {GRANTED[dialect]}, f"{query!r} reads only {sorted(result.tables)}"


@pytest.mark.parametrize(("dialect", "query"), [
    pytest.param("postgres", "SELECT * FROM generate_series(1, 3)", id="pg-series"),
    pytest.param("postgres", "SELECT d.* FROM db.sch.t, ST_Dump(db.sch.t.g) d", id="pg-st-dump"),
    pytest.param("postgres", "SELECT g::geometry, g::geography, g::box2d, 'a'::citext, "
                 "x::int, x::jsonb, x::text, x::oid FROM db.sch.t", id="pg-plain-casts"),
    pytest.param("postgres", "SELECT * FROM json_to_recordset('[]') AS x(a int, b text)",
                 id="pg-column-definition-builtin-types"),
    pytest.param("duckdb", "SELECT * FROM range(3)", id="duck-range"),
    pytest.param("sqlite", "SELECT CAST(x AS varchar2) FROM t", id="sqlite-any-type-name"),
])
def test_sql_plain_builtins_and_casts_stay_allowed(dialect: str, query: str) -> None:
    result = ANALYZER.analyze(query, Connection(dialect))
    assert not isinstance(result, SqlRefusal), result


# -- caches across instances: a change made elsewhere is heard within the poll bound ----------
@pytest.mark.anyio
@pytest.mark.parametrize("change", ["disable", "end_grace", "revoke"])
async def test_a_change_on_another_sqlite_instance_is_enforced_within_poll_interval(
    tmp_path: Path, change: str
) -> None:
    """Two processes' stores on one SQLite file: the guard on A has the token cached (fresh
    for 60 s); B disables it, ends its old secret's grace, or revokes it; A refuses within a
    few poll intervals, never serving the cached answer for the rest of its ttl."""
    url = tmp_path / "tokens.db"
    a, b = SQLiteStore(str(url), poll_interval=0.05), SQLiteStore(str(url), poll_interval=0.05)
    await a.open()
    await b.open()
    guard = Guard(store=a, connections=CONNECTIONS)
    try:
        issued = await b.create_token(FULL)
        secret = issued.token
        if change == "end_grace":
            await b.rotate_token(issued.id, grace_seconds=3600)
        path, query = b"/v3/maps/carto_dw/table", b"name=proj.ds.stores"
        auth = f"Bearer {secret}".encode()
        first = await guard.check_async("GET", path, query, auth)
        assert isinstance(first, tg.TokenRecord), first
        if change == "disable":
            await b.disable_token(issued.id)
        elif change == "end_grace":
            await b.end_rotation_grace(issued.id)
        else:
            await b.revoke_token(issued.id)
        await anyio.sleep(0.5)  # ten poll intervals
        after = await guard.check_async("GET", path, query, auth)
        assert not isinstance(after, tg.TokenRecord), f"{change}: still served from the cache"
        assert isinstance(after, Denial) and after.status == 401, after
    finally:
        await guard.resolver.close()
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_after_a_lost_listener_the_reset_lands_before_the_feed_is_trusted_again(
    postgres_dsn: str, schema: str, proxy: TcpProxy  # noqa: F811 (the fixtures)
) -> None:
    """A token revoked elsewhere while this instance's LISTEN was cut: its cached entry is
    still "fresh" by the clock. The resolver's lock-free hit path (WSGI request threads read
    it outside the loop) trusts fresh entries only while ``feed_healthy``; so when the feed
    reports healthy again, the reset must already have marked every entry stale."""
    async with (
        proxied_store(postgres_dsn, proxy, schema) as here,
        PostgresStore(postgres_dsn, schema=schema) as elsewhere,
    ):
        assert await here.wait_feed_ready(EVENT_WAIT)
        healthy_at_reset: list[bool] = []

        def listener(event: ChangeEvent) -> None:
            if event.kind == "reset":
                healthy_at_reset.append(here.feed_healthy)

        here.subscribe(listener)
        issued = await elsewhere.create_token(FULL)
        await proxy.cut()
        await wait_for(lambda: not here.feed_healthy, "the feed to notice the cut")
        await elsewhere.revoke_token(issued.id)
        await proxy.restore()
        await wait_for(lambda: bool(healthy_at_reset), "a reset once the feed is back")
        await wait_for(lambda: here.feed_healthy, "the feed to come back")
        assert healthy_at_reset == [False], "the feed was trusted before the reset landed"


# -- limits: every allowed way in is charged, no refusal is ------------------------------------
@pytest.mark.anyio
async def test_a_limited_token_is_charged_on_head_and_on_a_body_read_and_not_for_refusals(
) -> None:
    guard, limited, _ = await limited_guard(
        {"rate": [{"requests": 3, "per": "minute"}]})  # every API
    auth = f"Bearer {limited}".encode()
    # Refusals of every kind cost nothing: ungranted source, unknown route, wrong method.
    for path, qs, method in [
        (b"/v3/maps/carto_dw/table", b"name=proj.other.t", "GET"),
        (b"/v3/maps/nowhere", b"", "GET"),
        (b"/v3/maps/carto_dw/table", b"name=proj.ds.stores", "DELETE"),
        (b"/v3/sql/carto_dw/query", b"", "POST"),  # a body that is no query
    ]:
        refused = await guard.check_async(method, path, qs, auth, body=b"{}")
        assert isinstance(refused, Denial) and refused.status != 429, refused
    head = await guard.check_async("HEAD", b"/v3/maps/carto_dw/table", b"name=proj.ds.stores",
                                   auth)
    assert isinstance(head, tg.TokenRecord), head
    posted = await guard.check_async(
        "POST", b"/v3/sql/carto_dw/query", b"", auth,
        body=json.dumps({"q": "SELECT * FROM proj.ds.stores"}).encode())
    assert isinstance(posted, tg.TokenRecord), posted
    get = await guard.check_async("GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.stores",
                                  auth)
    assert isinstance(get, tg.TokenRecord), get
    over = await guard.check_async("HEAD", b"/v3/maps/carto_dw/table", b"name=proj.ds.stores",
                                   auth)
    assert isinstance(over, Denial) and over.code == codes.RATE_LIMITED, over
