"""token_guard: authorization middleware for CARTO-style data APIs.

``TokenGuard`` (ASGI), ``TokenGuardWSGI`` (WSGI) and ``FlaskTokenGuard`` (Flask) let a
request through only if its API access token may call that API, read that data source on
that connection, and is used from an allowed website. Tokens live in a store:
``SQLiteStore`` (embedded default), ``PostgresStore`` (many instances), ``MemoryStore``
(tests).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from token_guard.adapters.asgi import SCOPE_KEY, TokenGuard, get_token
from token_guard.config import Settings, load_config
from token_guard.core import presets
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.errors import (
    ConfigurationError,
    InvalidTokenSpec,
    NotFound,
    StoreError,
    StoreUnavailable,
    TokenGuardError,
    TokenStateError,
)
from token_guard.core.facts import RequestFacts, Source
from token_guard.core.records import IssuedToken, TokenRecord
from token_guard.core.routes import Route, SqlParam
from token_guard.core.spec import Grant, TokenSpec, parse_token_spec
from token_guard.guard import DecisionEvent
from token_guard.limiters import MemoryLimiter, RedisLimiter
from token_guard.logs import RedactTokens, uvicorn_log_config
from token_guard.report_only import ReportOnlyWarning
from token_guard.resolver import CacheSettings
from token_guard.stores import MemoryStore, SQLiteStore, TokenStore

__version__ = "0.1.0"
"""The release, read by the packaging (``pyproject.toml``) and ``token-guard --version``."""

# A library adds only a NullHandler: the application decides where logs go (logs.py).
logging.getLogger("token_guard").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from token_guard.adapters.fastapi import ApiToken, api_token
    from token_guard.adapters.flask import FlaskTokenGuard, flask_token
    from token_guard.adapters.wsgi import TokenGuardWSGI, current_token
    from token_guard.management import create_management_app, one_port
    from token_guard.stores.postgres import PostgresStore

__all__ = [
    "SCOPE_KEY",
    "ApiToken",
    "CacheSettings",
    "ConfigurationError",
    "Connection",
    "DecisionEvent",
    "Denial",
    "FlaskTokenGuard",
    "Grant",
    "InvalidTokenSpec",
    "IssuedToken",
    "MemoryLimiter",
    "MemoryStore",
    "NotFound",
    "PostgresStore",
    "RedactTokens",
    "RedisLimiter",
    "ReportOnlyWarning",
    "RequestFacts",
    "Route",
    "SQLiteStore",
    "Settings",
    "Source",
    "SqlParam",
    "StoreError",
    "StoreUnavailable",
    "TokenGuard",
    "TokenGuardError",
    "TokenGuardWSGI",
    "TokenRecord",
    "TokenSpec",
    "TokenStateError",
    "TokenStore",
    "__version__",
    "api_token",
    "create_management_app",
    "current_token",
    "flask_token",
    "get_token",
    "load_config",
    "one_port",
    "parse_token_spec",
    "presets",
    "uvicorn_log_config",
]


def __getattr__(name: str) -> Any:
    # Optional extras load on first use: psycopg (postgres), the WSGI adapter (Flask's
    # current_token), the Flask extension and FastAPI's dependency (ApiToken, api_token).
    if name == "PostgresStore":
        from token_guard.stores.postgres import PostgresStore

        return PostgresStore
    if name == "TokenGuardWSGI":
        from token_guard.adapters.wsgi import TokenGuardWSGI

        return TokenGuardWSGI
    if name == "current_token":
        from token_guard.adapters.wsgi import current_token

        return current_token
    if name in ("FlaskTokenGuard", "flask_token"):
        from token_guard.adapters import flask

        return getattr(flask, name)
    if name in ("ApiToken", "api_token"):
        from token_guard.adapters import fastapi

        return getattr(fastapi, name)
    if name in ("one_port", "create_management_app"):
        # The management package (the Tokens API, OAuth) loads only when a one-port app asks.
        from token_guard import management

        return getattr(management, name)
    raise AttributeError(f"module 'token_guard' has no attribute {name!r}")
