"""The row codec of the SQL stores: stored rows back to records, read the same way by both.

One rule for a row that no longer reads (hand-edited JSON, a body that fails today's
validation, a garbled timestamp): it is logged as an error naming the row's id and never
its secret (rows carry only hashes, and the hash is not selected), and it is treated as
absent. A token that cannot be read is a token the guard does not know: 401, never an
allow and never a crash. An unreadable OAuth client cannot obtain a Tokens API token; an
unreadable audit entry is left out of the listing. Writes that need the record
(``update_token``) raise ``StoreError`` naming the id instead; ``revoke_token`` revokes the
row first, then raises, so a broken row can never stay active.

Both stores select columns in the orders below, so a row is a plain sequence here:
``sqlite3.Row`` and psycopg's tuples alike. Timestamps come as text (SQLite, written by
``schema.format_timestamp``) or as aware datetimes (PostgreSQL ``timestamptz``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from token_guard.records import AuditEntry, OAuthClient, TokenRecord
from token_guard.stores.schema import format_timestamp, parse_timestamp, spec_from_columns

__all__ = [
    "AUDIT_COLUMNS",
    "CLIENT_COLUMNS",
    "TOKEN_COLUMNS",
    "audit_from_row",
    "client_from_row",
    "token_from_row",
]

logger = logging.getLogger("token_guard.stores")

TOKEN_COLUMNS: Final = (
    "id, name, grants, referers, allowed_apis, expiration_date, created_at, revoked_at, "
    "last_used_at"
)
CLIENT_COLUMNS: Final = "client_id, name, scopes, created_at, revoked_at"
AUDIT_COLUMNS: Final = "id, at, actor, action, token_id, detail"

_UNREADABLE = (ValueError, TypeError)


def token_from_row(row: Sequence[Any], where: str) -> TokenRecord | None:
    """The token in ``row`` (``TOKEN_COLUMNS``), re-validated; None, logged, if unreadable.

    ``where`` names the store in the log line (a file path or a schema, never a DSN).
    """
    token_id, name, grants, referers, apis, expiration, created, revoked, last_used = row
    try:
        if isinstance(expiration, datetime):
            expiration = format_timestamp(expiration)
        spec = spec_from_columns(name, grants, referers, apis, expiration)
        created_at = _timestamp(created)
        if created_at is None:
            raise ValueError("created_at is empty")
        return TokenRecord(
            id=str(token_id),
            spec=spec,
            created_at=created_at,
            revoked_at=_timestamp(revoked),
            last_used_at=_timestamp(last_used),
        )
    except _UNREADABLE as exc:
        logger.error(
            "token %s has unreadable data in %s (%s); it is refused as unknown until the "
            "row is fixed or the token revoked and replaced", token_id, where, exc,
        )
        return None


def client_from_row(row: Sequence[Any], where: str) -> OAuthClient | None:
    """The OAuth client in ``row`` (``CLIENT_COLUMNS`` first); None, logged, if unreadable."""
    client_id, name, scopes, created, revoked = row[:5]
    try:
        parsed = json.loads(scopes)
        if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
            raise ValueError("scopes must be a JSON list of strings")
        created_at = _timestamp(created)
        if created_at is None:
            raise ValueError("created_at is empty")
        return OAuthClient(
            client_id=str(client_id),
            name=str(name),
            scopes=tuple(parsed),
            created_at=created_at,
            revoked_at=_timestamp(revoked),
        )
    except _UNREADABLE as exc:
        logger.error(
            "OAuth client %s has unreadable data in %s (%s); it is treated as unknown",
            client_id, where, exc,
        )
        return None


def audit_from_row(row: Sequence[Any], where: str) -> AuditEntry | None:
    """The audit entry in ``row`` (``AUDIT_COLUMNS``); None, logged, if unreadable."""
    entry_id, at, actor, action, token_id, detail = row
    try:
        parsed = json.loads(detail)
        if not isinstance(parsed, dict):
            raise ValueError("detail is not a JSON object")
        when = _timestamp(at)
        if when is None:
            raise ValueError("at is empty")
        return AuditEntry(
            int(entry_id), when, str(actor), str(action),
            None if token_id is None else str(token_id), parsed,
        )
    except _UNREADABLE as exc:
        logger.error("audit entry %s in %s is unreadable (%s); skipped", entry_id, where, exc)
        return None


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no timezone")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise TypeError(f"timestamp {value!r} is neither text nor a datetime")
    return parse_timestamp(value)
