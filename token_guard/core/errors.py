"""The exception tree: catch ``TokenGuardError`` for anything token_guard raises."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TokenGuardError(Exception):
    """Base class of every error token_guard raises."""


class InvalidTokenSpec(TokenGuardError, ValueError):
    """A token body (the Tokens API JSON) is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class ConfigurationError(TokenGuardError, ValueError):
    """token_guard was configured wrongly; raised at start-up, naming the setting."""


class StoreError(TokenGuardError):
    """The token store failed."""


class StoreUnavailable(StoreError):
    """The token store cannot answer now (down, unreachable or too slow)."""


class NotFound(StoreError, LookupError):
    """No token (or client) has that id."""


class TokenStateError(StoreError):
    """The token's state forbids the change: a revoked token is never rotated, disabled or
    enabled again (revocation is final)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
