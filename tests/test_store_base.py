"""The store protocols: narrow ones a small store can implement, and their union.

A store serving only the guard implements ``TokenReader`` (four members); the guard and its
resolver need nothing else. The full stores implement every protocol and ``TokenStore``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.tokens import body
from token_guard import TokenGuard
from token_guard.core.records import TokenRecord
from token_guard.core.secret import hash_secret
from token_guard.resolver import Resolver
from token_guard.stores import MemoryStore, SQLiteStore
from token_guard.stores.base import (
    AuditLog,
    ChangeListener,
    ClientStore,
    Listeners,
    TokenAdmin,
    TokenReader,
    TokenStore,
)

pytestmark = pytest.mark.anyio

CONNECTIONS = {"carto_dw": "bigquery"}
TABLE = "/v3/maps/carto_dw/table?name=carto-demo-data.demo_tables.retail_stores"




class ReaderOnly:
    """Just the reader protocol, over records another store issued."""

    feed_healthy = True

    def __init__(self, records: Mapping[str, TokenRecord]) -> None:
        self.records = dict(records)  # secret hash -> record
        self.usage: list[dict[str, datetime]] = []
        self._listeners = Listeners()

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        return self.records.get(secret_hash)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        return self._listeners.add(listener)

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        self.usage.append(dict(last_used))


async def reader_with_one_token() -> tuple[ReaderOnly, str]:
    source = MemoryStore()
    issued = await source.create_token(body())
    return ReaderOnly({hash_secret(issued.token): issued.record}), issued.token


def test_a_reader_only_class_satisfies_the_reader_protocol_and_no_other() -> None:
    reader = ReaderOnly({})
    assert isinstance(reader, TokenReader)
    for wider in (TokenAdmin, ClientStore, AuditLog, TokenStore):
        assert not isinstance(reader, wider), wider.__name__


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(MemoryStore, id="memory"),
        pytest.param(lambda: SQLiteStore(":memory:"), id="sqlite"),
    ],
)
def test_every_full_store_satisfies_each_protocol_and_the_union(make: Callable[[], Any]) -> None:
    store = make()
    for protocol in (TokenReader, TokenAdmin, ClientStore, AuditLog, TokenStore):
        assert isinstance(store, protocol), protocol.__name__


def test_feed_healthy_is_declared_by_the_reader_protocol() -> None:
    # Declared, so a store cannot leave it out and still pass as a reader.
    class NoFeedHealth:
        async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
            return None

        def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
            return lambda: None

        async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
            return None

    assert not isinstance(NoFeedHealth(), TokenReader)


async def test_the_resolver_works_on_a_reader_only_store() -> None:
    reader, token = await reader_with_one_token()
    resolver: Resolver[TokenRecord] = Resolver(reader, lambda r: r)
    got = await resolver.resolve(token)
    assert isinstance(got, TokenRecord)
    resolver.note_used(got.id)
    await resolver.close()
    assert [set(batch) for batch in reader.usage] == [{got.id}]


async def test_token_guard_accepts_a_reader_only_store_and_serves_through_it() -> None:
    reader, token = await reader_with_one_token()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = TokenGuard(inner, store=reader, connections=CONNECTIONS)  # a reader is all it needs
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        allowed = await client.get(
            TABLE,
            headers={"Authorization": f"Bearer {token}", "Origin": "https://maps.example.com"},
        )
        refused = await client.get(TABLE)
    assert (allowed.status_code, refused.status_code) == (200, 401)
    await app.guard.resolver.close()

