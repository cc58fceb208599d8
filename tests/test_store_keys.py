"""Signing keys shared through the store: many Tokens API instances on one store verify each
other's access tokens, follow a rotation made anywhere, and leave no private key behind.

Instances are separate apps on separate store objects (as separate processes are), on one
SQLite file and on one PostgreSQL schema; and a real ``uvicorn --workers 2`` over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql
from starlette.applications import Starlette

from tests.store_contract import private_key_forms
from token_guard.core.records import PublishedKey
from token_guard.management import SCOPES, create_client, create_management_app
from token_guard.management.keys import SigningKey
from token_guard.management.store_keys import StoreKeyRing, published_key
from token_guard.stores import MemoryStore, SQLiteStore
from token_guard.stores.base import TokenStore

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "https://tokens.test"  # as tests/management_app.py
AUDIENCE = "token-guard-api"
FORM = {"grant_type": "client_credentials"}
BODY = {"name": "shared", "grants": [], "referers": [], "allowed_apis": ["lds"]}


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema no other test uses, dropped afterwards."""
    name = f"tg_keys_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


StoreFactory = Callable[[], TokenStore]


@pytest.fixture(params=["sqlite", "postgres"])
async def new_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Makes store objects on ONE shared database: each is what one instance would open."""
    made: list[TokenStore] = []
    if request.param == "sqlite":
        def factory() -> TokenStore:
            made.append(SQLiteStore(str(tmp_path / "shared.db")))
            return made[-1]
    else:
        from token_guard.stores.postgres import PostgresStore

        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("pg_schema")

        def factory() -> TokenStore:
            made.append(PostgresStore(dsn, schema=schema, pool_max=2))
            return made[-1]
    yield factory
    for store in made:
        await store.close()


def _app(store: TokenStore) -> Starlette:
    return create_management_app(store, issuer=ISSUER, audience=AUDIENCE)


def _http(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _token(http: httpx.AsyncClient, creds: tuple[str, str]) -> str:
    r = await http.post("/oauth/token", auth=creds, data=FORM)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_instances_on_one_store_verify_each_other_and_see_each_others_writes(
    new_store: StoreFactory,
) -> None:
    admin = new_store()
    client, secret = await create_client(admin, "ci", SCOPES, actor="test")
    creds = (client.client_id, secret)
    async with _http(_app(new_store())) as a, _http(_app(new_store())) as b:
        token_a, token_b = await _token(a, creds), await _token(b, creds)
        assert _kid(token_a) != _kid(token_b)  # each instance signs with its own key
        made = await a.post("/v3/tokens", json=BODY, headers=_bearer(token_b))
        assert made.status_code == 201, made.text
        for http in (a, b):
            for token in (token_a, token_b):
                listed = await http.get("/v3/tokens", headers=_bearer(token))
                assert listed.status_code == 200, listed.text
                assert [t["id"] for t in listed.json()["tokens"]] == [made.json()["id"]]
        jwks = (await b.get("/.well-known/jwks.json")).json()
        assert {k["kid"] for k in jwks["keys"]} == {_kid(token_a), _kid(token_b)}
        assert all("d" not in k for k in jwks["keys"])  # never a private part


async def test_a_rotation_made_anywhere_is_followed_by_every_instance(
    new_store: StoreFactory,
) -> None:
    admin = new_store()
    client, secret = await create_client(admin, "ci", SCOPES, actor="test")
    creds = (client.client_id, secret)
    async with _http(_app(new_store())) as a, _http(_app(new_store())) as b:
        old_a, old_b = await _token(a, creds), await _token(b, creds)
        # What `token-guard keys rotate` does, from a third process.
        retired = await admin.retire_signing_keys(datetime.now(UTC))
        assert {k.kid for k in retired} == {_kid(old_a), _kid(old_b)}
        new_a, new_b = await _token(a, creds), await _token(b, creds)
        assert _kid(new_a) not in {_kid(old_a), _kid(old_b)}
        assert _kid(new_b) not in {_kid(old_a), _kid(old_b), _kid(new_a)}
        # New tokens verify everywhere; old ones until they expire (retired_at + lifetime).
        for http in (a, b):
            for token in (old_a, old_b, new_a, new_b):
                assert (await http.get("/v3/tokens", headers=_bearer(token))).status_code == 200
        active = [k.kid for k in await admin.list_signing_keys() if k.retired_at is None]
        assert sorted(active) == sorted([_kid(new_a), _kid(new_b)])


async def test_a_read_only_copy_of_the_store_holds_no_private_key(
    new_store: StoreFactory, tmp_path: Path
) -> None:
    admin = new_store()
    client, secret = await create_client(admin, "ci", SCOPES, actor="test")
    rings: list[StoreKeyRing] = []
    for _ in range(2):
        store = new_store()
        ring = StoreKeyRing(store)
        rings.append(ring)
        async with _http(create_management_app(
            store, issuer=ISSUER, audience=AUDIENCE, keys=ring
        )) as http:
            await _token(http, (client.client_id, secret))
    await admin.retire_signing_keys(datetime.now(UTC))
    keys: list[SigningKey] = [await ring.signing_key() for ring in rings]  # fresh ones
    keys += [k for ring in rings if (k := ring._mine) is not None]
    dump = await _dump_every_table(admin, tmp_path)
    assert len({k.kid for k in keys}) == 2 and all(k.kid.encode() in dump for k in keys)
    for key in keys:
        for private in private_key_forms(key):
            assert private not in dump


async def _dump_every_table(store: TokenStore, tmp_path: Path) -> bytes:
    """Every row of every table, as a read-only copy of the store would show them."""
    out: list[str] = []
    if isinstance(store, SQLiteStore):
        copy = tmp_path / "copy.db"
        with closing(sqlite3.connect(store.path)) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        with closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as conn:
            listed = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = [r[0] for r in listed]
            assert "signing_keys" in tables
            for table in tables:
                out += [repr(row) for row in conn.execute(f'SELECT * FROM "{table}"')]
        return "\n".join(out).encode()
    schema = store.schema  # type: ignore[attr-defined]
    async with await psycopg.AsyncConnection.connect(store._dsn, autocommit=True) as conn:  # type: ignore[attr-defined]
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        tables = [r[0] for r in await cur.fetchall()]
        assert "signing_keys" in tables
        for table in tables:
            rows = await conn.execute(
                sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
            out += [r[0] for r in await rows.fetchall()]
    return "\n".join(out).encode()


# -- the ring on its own -------------------------------------------------------------------
class CountingStore(MemoryStore):
    """Counts reads of the published keys, each taking a moment as a real store's does."""

    def __init__(self) -> None:
        super().__init__()
        self.key_reads = 0

    async def list_signing_keys(self) -> list[PublishedKey]:
        self.key_reads += 1
        await asyncio.sleep(0.01)
        return list(await super().list_signing_keys())


async def test_an_unknown_kid_rereads_the_store_and_concurrent_rereads_share_one() -> None:
    store = CountingStore()
    ring = StoreKeyRing(store)
    await ring.public_jwks()
    other = SigningKey.generate()  # another instance publishes after our last read
    await store.publish_signing_key(
        published_key(other, key_lifetime=3600, token_lifetime=3600)
    )
    before = store.key_reads
    assert await ring.public_key(other.kid) is not None  # found at once: one reread
    assert store.key_reads == before + 1
    assert await ring.public_key(other.kid) is not None  # then cached
    assert store.key_reads == before + 1
    found = await asyncio.gather(*(ring.public_key(f"invented-{i}") for i in range(50)))
    assert found == [None] * 50
    assert store.key_reads <= before + 3  # 50 invented kids at once: shared reads


async def test_a_key_past_its_verify_window_verifies_nothing() -> None:
    store = MemoryStore()
    ring = StoreKeyRing(store)
    old = SigningKey.generate(datetime.now(UTC) - timedelta(days=5))
    await store.publish_signing_key(
        published_key(old, key_lifetime=3600, token_lifetime=3600)
    )
    assert await ring.public_key(old.kid) is None
    assert (await ring.public_jwks())["keys"] == []


async def test_an_instance_publishes_a_fresh_key_when_its_own_is_too_old() -> None:
    store = MemoryStore()
    ring = StoreKeyRing(store, key_lifetime=60)
    first = await ring.signing_key()
    assert (await ring.signing_key()).kid == first.kid
    ring._mine = SigningKey(first.kid, first.private_key, first.created_at - timedelta(minutes=2))
    assert (await ring.signing_key()).kid != first.kid


async def test_a_published_row_whose_kid_is_not_its_keys_thumbprint_is_ignored() -> None:
    store = MemoryStore()
    real, other = SigningKey.generate(), SigningKey.generate()
    row = published_key(real, key_lifetime=3600, token_lifetime=3600)
    await store.publish_signing_key(PublishedKey(
        other.kid, row.public_pem, row.created_at, row.verify_until, row.token_lifetime
    ))
    assert await StoreKeyRing(store).public_key(other.kid) is None


# -- uvicorn --workers 2 -------------------------------------------------------------------
def _serve_workers(db: Path, port: int, workers: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TOKEN_GUARD_STORE"] = f"sqlite:///{db}"
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.management_app:app", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_until_up(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            httpx.get(f"{base}/openapi.json", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("uvicorn --workers did not start")


def test_uvicorn_with_two_workers_accepts_one_token_on_every_call(
    tmp_path: Path, free_port: int
) -> None:
    db = tmp_path / "tokens.db"

    async def make_client() -> tuple[str, str]:
        store = SQLiteStore(str(db))
        try:
            client, secret = await create_client(store, "ci", SCOPES, actor="test")
        finally:
            await store.close()
        return client.client_id, secret

    import anyio

    creds = anyio.run(make_client)
    base = f"http://127.0.0.1:{free_port}"
    proc = _serve_workers(db, free_port, 2)
    try:
        _wait_until_up(base, proc)
        # A fresh connection per call, so the kernel hands calls to both workers.
        tokens = [
            httpx.post(f"{base}/oauth/token", auth=creds, data=FORM, timeout=10)
            .json()["access_token"] for _ in range(20)
        ]
        kids = {_kid(t) for t in tokens}
        statuses = [
            httpx.get(f"{base}/v3/tokens", headers=_bearer(tokens[0]), timeout=10).status_code
            for _ in range(20)
        ]
        assert statuses == [200] * 20
        for token in tokens:  # a token from each worker verifies on whichever answers
            assert httpx.get(
                f"{base}/v3/tokens", headers=_bearer(token), timeout=10
            ).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Informational, not a timing claim: how many workers signed (usually both).
    print(f"kids seen across 20 token requests: {len(kids)}")
