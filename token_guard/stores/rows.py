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

The token body. ``body_json`` writes ``TokenSpec.as_json()`` as the ``body`` column (JSON
text; PostgreSQL casts it to JSONB) and ``spec_from_body`` reads it back through
``parse_token_spec``, so a field added to ``spec.TOKEN_FIELDS`` is stored and read with no
change here or in the schema. A key this version does not know (a field written by a newer
version, running alongside during an upgrade) is ignored on read and kept when this version
rewrites the body, so an older instance neither refuses those tokens nor erases the field.
The consequence for new fields: one whose absence would let more through (a disabled flag,
an expiry of an old secret) must not live only in the body, where an older reader skips it;
it goes in a column or table the lookup query itself checks (as ``token_secrets.expires_at``
does), or comes with a schema version, which older versions refuse to open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from token_guard.core.records import AuditEntry, OAuthClient, SecretInfo, TokenRecord
from token_guard.core.spec import TOKEN_FIELDS, TokenSpec, parse_token_spec
from token_guard.stores.schema import parse_timestamp

__all__ = [
    "AUDIT_COLUMNS",
    "CLIENT_COLUMNS",
    "SECRET_COLUMNS",
    "TOKEN_COLUMNS",
    "audit_from_row",
    "body_json",
    "client_from_row",
    "spec_from_body",
    "token_from_row",
]

logger = logging.getLogger("token_guard.stores")

TOKEN_COLUMNS: Final = "id, body, created_at, revoked_at, last_used_at, disabled_at"
#: What a row may add after ``TOKEN_COLUMNS``, in this order: the secret's prefix, then (for
#: a lookup by secret hash) its ``expires_at`` and ``rotated_at``.
SECRET_COLUMNS: Final = "prefix, expires_at, rotated_at"
CLIENT_COLUMNS: Final = "client_id, name, scopes, created_at, revoked_at"
AUDIT_COLUMNS: Final = "id, at, actor, action, token_id, detail"

_UNREADABLE = (ValueError, TypeError)
# parse_token_spec refuses an expiration date in the past; a stored token may well have
# expired since, so re-validation compares against the earliest possible instant instead.
_EPOCH_FLOOR = datetime.min.replace(tzinfo=UTC)
# What parse_token_spec accepts; any other stored key is a newer version's (see above).
_READABLE_FIELDS = frozenset(f.name for f in TOKEN_FIELDS if f.creatable)


def body_json(spec: TokenSpec, replacing: Sequence[Any] | None = None) -> str:
    """The ``body`` column for ``spec``; ``replacing`` (a stored ``TOKEN_COLUMNS`` row) lends
    the keys this version does not know, so rewriting a body never drops a newer field."""
    body = spec.as_json()
    if replacing is not None:
        body = {**_body_object(replacing[1]), **body}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def spec_from_body(body: Any) -> TokenSpec:
    """Re-validate a stored body (JSON text or an already decoded object) into a spec.

    Keys this version does not know are ignored. Raises ``ValueError`` (``InvalidTokenSpec``
    and ``json.JSONDecodeError`` among them) or ``TypeError`` for anything else that is not
    a valid token body.
    """
    known = {k: v for k, v in _body_object(body).items() if k in _READABLE_FIELDS}
    return parse_token_spec(known, now=_EPOCH_FLOOR)


def _body_object(body: Any) -> dict[str, Any]:
    if isinstance(body, str | bytes):
        body = json.loads(body)  # SQLite's TEXT; psycopg decodes JSONB itself
    if not isinstance(body, dict):
        raise ValueError(f"the body is a JSON {type(body).__name__}, not an object")
    return body


def token_from_row(row: Sequence[Any], where: str) -> TokenRecord | None:
    """The token in ``row`` (``TOKEN_COLUMNS``, then any of ``SECRET_COLUMNS``), re-validated;
    None, logged, if unreadable.

    ``where`` names the store in the log line (a file path or a schema, never a DSN).
    """
    token_id, body, created, revoked, last_used, disabled = row[:6]
    extra = [*row[6:9], None, None, None][:3]
    try:
        secret = None
        if len(row) > 6:
            prefix = extra[0]
            if prefix is not None and not isinstance(prefix, str):
                raise TypeError(f"secret prefix {prefix!r} is not text")
            secret = SecretInfo(prefix, _timestamp(extra[1]), _timestamp(extra[2]))
        spec = spec_from_body(body)
        created_at = _timestamp(created)
        if created_at is None:
            raise ValueError("created_at is empty")
        return TokenRecord(
            id=str(token_id),
            spec=spec,
            created_at=created_at,
            revoked_at=_timestamp(revoked),
            last_used_at=_timestamp(last_used),
            disabled_at=_timestamp(disabled),
            secret=secret,
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
