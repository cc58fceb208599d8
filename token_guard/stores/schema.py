"""The SQLite schema as an ordered list of migrations, and how records map to table rows.

Migrations are numbered from 1 and applied in order inside one ``BEGIN IMMEDIATE``
transaction; the version reached is kept in ``PRAGMA user_version``. A later release adds a
step at the end of ``SQLITE_MIGRATIONS`` and never edits an earlier one.

The row codec (``spec_to_columns`` / ``spec_from_columns``) is SQL-free so that any SQL
store can keep grants, referers and APIs as JSON text the same way. Data read back is
validated again exactly like input: a row somebody edited by hand into something invalid
is refused (fail closed), never half-trusted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from token_guard.errors import StoreError
from token_guard.spec import TokenSpec, parse_token_spec

# parse_token_spec refuses an expiration date in the past; a stored token may well have
# expired since, so re-validation compares against the earliest possible instant instead.
_EPOCH_FLOOR = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: the version it brings the database to, and its statements."""

    version: int
    description: str
    statements: tuple[str, ...]


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tokens, OAuth clients and the audit log",
        (
            """
            CREATE TABLE tokens (
                id TEXT PRIMARY KEY,
                secret_hash TEXT NOT NULL UNIQUE,   -- SHA-256 hex; the secret is never stored
                name TEXT NOT NULL,
                grants TEXT NOT NULL,               -- JSON list of {connection_name, source}
                referers TEXT NOT NULL,             -- JSON list of origin patterns
                allowed_apis TEXT NOT NULL,         -- JSON list of API names
                expiration_date TEXT,
                created_at TEXT NOT NULL,
                revoked_at TEXT,
                last_used_at TEXT
            )
            """,
            """
            CREATE TABLE oauth_clients (
                client_id TEXT PRIMARY KEY,
                secret_hash TEXT NOT NULL,
                name TEXT NOT NULL,
                scopes TEXT NOT NULL,               -- JSON list of scope strings
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )
            """,
            """
            CREATE TABLE audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                token_id TEXT,
                detail TEXT NOT NULL                -- JSON object; never a secret
            )
            """,
        ),
    ),
    Migration(
        2,
        "cross-process change feed polled by every process's subscribers",
        (
            """
            CREATE TABLE changes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,  -- monotonic: pollers keep a cursor
                at TEXT NOT NULL,
                token_id TEXT,
                kind TEXT NOT NULL,
                origin TEXT NOT NULL                   -- the writing store instance
            )
            """,
            "CREATE INDEX audit_token_id ON audit (token_id)",
        ),
    ),
)

LATEST_SQLITE_VERSION = SQLITE_MIGRATIONS[-1].version


def migrate_sqlite(
    conn: sqlite3.Connection, migrations: Sequence[Migration] = SQLITE_MIGRATIONS
) -> int:
    """Bring ``conn``'s database to the last version in ``migrations``; return that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Several processes may
    open the file at once: ``BEGIN IMMEDIATE`` serialises them and the version is read
    again inside the transaction, so each step runs exactly once.
    """
    target = migrations[-1].version if migrations else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if current > target:
            raise StoreError(
                f"the database schema is version {current}, newer than this token_guard "
                f"knows ({target}); upgrade token_guard to open it"
            )
        for step in migrations:
            if step.version > current:
                for statement in step.statements:
                    conn.execute(statement)
                # PRAGMA takes no bound parameters; the version is an int from our own list.
                conn.execute(f"PRAGMA user_version = {int(step.version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return target


def format_timestamp(value: datetime) -> str:
    """A fixed-width UTC timestamp whose text order is time order (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str | None) -> datetime | None:
    """The inverse of ``format_timestamp`` (None stays None)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return parsed.astimezone(UTC)


def spec_to_columns(spec: TokenSpec) -> dict[str, str | None]:
    """The token body as column values: JSON text for lists, a timestamp for the expiry."""
    return {
        "name": spec.name,
        "grants": json.dumps([g.as_json() for g in spec.grants], separators=(",", ":")),
        "referers": json.dumps(list(spec.referers), separators=(",", ":")),
        "allowed_apis": json.dumps(list(spec.allowed_apis), separators=(",", ":")),
        "expiration_date": (
            None if spec.expiration_date is None else format_timestamp(spec.expiration_date)
        ),
    }


def spec_from_columns(
    name: Any, grants: Any, referers: Any, allowed_apis: Any, expiration_date: Any
) -> TokenSpec:
    """Rebuild and re-validate a spec from stored columns.

    Raises ``ValueError`` (``InvalidTokenSpec`` or ``json.JSONDecodeError`` among them) or
    ``TypeError`` when the stored data is not a valid token body.
    """
    body: dict[str, Any] = {
        "name": name,
        "grants": json.loads(grants),
        "referers": json.loads(referers),
        "allowed_apis": json.loads(allowed_apis),
    }
    spec = parse_token_spec(body, now=_EPOCH_FLOOR)
    if expiration_date is not None:
        if not isinstance(expiration_date, str):
            raise TypeError("expiration_date is not text")
        expiry = parse_timestamp(expiration_date)
        return TokenSpec(
            name=spec.name,
            grants=spec.grants,
            referers=spec.referers,
            allowed_apis=spec.allowed_apis,
            expiration_date=expiry,
        )
    return spec
