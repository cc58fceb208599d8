"""token_guard: authorization middleware for CARTO-style data APIs."""

from __future__ import annotations

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
from token_guard.records import IssuedToken, TokenRecord
from token_guard.spec import Grant, TokenSpec, parse_token_spec

__all__ = [
    "ConfigurationError",
    "Connection",
    "Denial",
    "Grant",
    "InvalidTokenSpec",
    "IssuedToken",
    "NotFound",
    "RequestFacts",
    "Source",
    "StoreError",
    "StoreUnavailable",
    "TokenGuardError",
    "TokenRecord",
    "TokenSpec",
    "parse_token_spec",
]
