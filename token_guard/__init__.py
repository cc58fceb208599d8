"""token_guard: authorization middleware for CARTO-style data APIs.

``TokenGuard`` (ASGI) and ``TokenGuardWSGI`` (Flask/WSGI) let a request through only if its
API access token may call that API, read that data source on that connection, and is used
from an allowed website. Tokens live in a store: ``SQLiteStore`` (embedded default),
``PostgresStore`` (many instances), ``MemoryStore`` (tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from token_guard.asgi import SCOPE_KEY, TokenGuard, get_token
from token_guard.connections import Connection
from token_guard.decision import Denial
from token_guard.errors import (
    ConfigurationError,
    InvalidTokenSpec,
    NotFound,
    StoreError,
    StoreUnavailable,
    TokenGuardError,
)
from token_guard.facts import RequestFacts, Source
from token_guard.guard import DecisionEvent
from token_guard.records import IssuedToken, TokenRecord
from token_guard.resolver import CacheSettings
from token_guard.routes import Route, SqlParam
from token_guard.spec import Grant, TokenSpec, parse_token_spec
from token_guard.stores import MemoryStore, SQLiteStore, TokenStore

if TYPE_CHECKING:
    from token_guard.stores.postgres import PostgresStore
    from token_guard.wsgi import TokenGuardWSGI

__all__ = [
    "SCOPE_KEY",
    "CacheSettings",
    "ConfigurationError",
    "Connection",
    "DecisionEvent",
    "Denial",
    "Grant",
    "InvalidTokenSpec",
    "IssuedToken",
    "MemoryStore",
    "NotFound",
    "PostgresStore",
    "RequestFacts",
    "Route",
    "SQLiteStore",
    "Source",
    "SqlParam",
    "StoreError",
    "StoreUnavailable",
    "TokenGuard",
    "TokenGuardError",
    "TokenGuardWSGI",
    "TokenRecord",
    "TokenSpec",
    "TokenStore",
    "get_token",
    "parse_token_spec",
]


def __getattr__(name: str) -> Any:
    # Optional extras load on first use: psycopg (postgres) and the WSGI adapter.
    if name == "PostgresStore":
        from token_guard.stores.postgres import PostgresStore

        return PostgresStore
    if name == "TokenGuardWSGI":
        from token_guard.wsgi import TokenGuardWSGI

        return TokenGuardWSGI
    raise AttributeError(f"module 'token_guard' has no attribute {name!r}")
