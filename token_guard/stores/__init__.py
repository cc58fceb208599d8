"""Token stores behind one protocol: MemoryStore (tests), SQLiteStore (embedded default),
PostgresStore (many instances; needs the ``postgres`` extra, imported on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from token_guard.stores.base import ChangeListener, TokenStore
from token_guard.stores.memory import MemoryStore
from token_guard.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from token_guard.stores.postgres import PostgresStore

__all__ = ["ChangeListener", "MemoryStore", "PostgresStore", "SQLiteStore", "TokenStore"]


def __getattr__(name: str) -> Any:
    # psycopg is an optional dependency: import the PostgreSQL store only when asked for.
    if name == "PostgresStore":
        return importlib.import_module("token_guard.stores.postgres").PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
