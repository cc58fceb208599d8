"""Token stores behind narrow protocols (``stores.base``): MemoryStore (tests), SQLiteStore
(embedded default), PostgresStore (many instances; needs the ``postgres`` extra, imported on
first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from token_guard.stores.base import (
    AuditLog,
    ChangeListener,
    ClientStore,
    TokenAdmin,
    TokenReader,
    TokenStore,
)
from token_guard.stores.memory import MemoryStore
from token_guard.stores.sqlite import SQLiteStore
from token_guard.stores.urls import StoreURL, parse_store_url

if TYPE_CHECKING:
    from token_guard.stores.postgres import PostgresStore

__all__ = [
    "AuditLog",
    "ChangeListener",
    "ClientStore",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "StoreURL",
    "TokenAdmin",
    "TokenReader",
    "TokenStore",
    "open_store",
    "parse_store_url",
]


def open_store(
    url: str | None = None, *, default: str | None = None, create: bool = True
) -> TokenStore:
    """The store a URL names (see ``stores.urls``): ``sqlite:///path``, a bare path, or
    ``postgresql://...``. Without ``url``, ``$TOKEN_GUARD_STORE``; without that, ``default``.
    ``create=False``: a missing SQLite file is an error naming it, not a new empty store.
    """
    parsed = parse_store_url(url, default=default)
    if parsed.kind == "postgresql":
        from token_guard.stores.postgres import PostgresStore

        return PostgresStore(parsed.target)
    return SQLiteStore(parsed.target, create=create)


def __getattr__(name: str) -> Any:
    # psycopg is an optional dependency: import the PostgreSQL store only when asked for.
    if name == "PostgresStore":
        return importlib.import_module("token_guard.stores.postgres").PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
