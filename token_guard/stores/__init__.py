"""Token stores behind narrow protocols (``stores.base``): MemoryStore (tests), SQLiteStore
(embedded default), PostgresStore (many instances; needs the ``postgres`` extra, imported on
first use).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from token_guard.errors import ConfigurationError
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

if TYPE_CHECKING:
    from token_guard.stores.postgres import PostgresStore

__all__ = [
    "AuditLog",
    "ChangeListener",
    "ClientStore",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "TokenAdmin",
    "TokenReader",
    "TokenStore",
    "open_store",
]

ENV_VAR = "TOKEN_GUARD_STORE"
DEFAULT_URL = "sqlite:///tokens.db"


def open_store(url: str | None = None, *, default: str | None = None) -> TokenStore:
    """The store a URL names: ``sqlite:///path`` (or a bare path) or ``postgresql://...``.

    Without ``url``, ``$TOKEN_GUARD_STORE``; without that, ``default`` (if given).
    """
    url = url or os.environ.get(ENV_VAR) or default
    if not url:
        raise ConfigurationError(
            f"store: none configured; pass a URL or set {ENV_VAR}, e.g. "
            "sqlite:///tokens.db or postgresql://user@host:5432/db"
        )
    if "://" not in url:
        return SQLiteStore(url)  # a bare path, as people type it
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        from token_guard.stores.postgres import PostgresStore

        return PostgresStore(url)
    if scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.lower().startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(
                f"store: sqlite URL {url!r} names no file; write sqlite:///tokens.db "
                "(relative) or sqlite:////abs/path/tokens.db"
            )
        return SQLiteStore(path)
    raise ConfigurationError(
        f"store: unknown URL scheme {scheme or '(none)'!r}; use sqlite:///path or "
        "postgresql://user@host:5432/db"
    )


def __getattr__(name: str) -> Any:
    # psycopg is an optional dependency: import the PostgreSQL store only when asked for.
    if name == "PostgresStore":
        return importlib.import_module("token_guard.stores.postgres").PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
