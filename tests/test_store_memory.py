"""MemoryStore passes the shared store contract."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator

import pytest

from tests.store_contract import StoreContract
from token_guard.stores import MemoryStore
from token_guard.stores.base import TokenStore


class TestMemoryStore(StoreContract):
    """The contract on a fresh in-memory store per test."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[TokenStore]:
        """A fresh MemoryStore."""
        s = MemoryStore()
        yield s
        await s.close()

    async def stored_bytes(self, store: TokenStore) -> bytes | None:
        """Everything the store holds, serialised (its listeners aside)."""
        assert isinstance(store, MemoryStore)
        state = {k: v for k, v in vars(store).items() if k != "_listeners"}
        return pickle.dumps(state) + repr(state).encode()


def test_memory_store_satisfies_the_protocol() -> None:
    assert isinstance(MemoryStore(), TokenStore)
