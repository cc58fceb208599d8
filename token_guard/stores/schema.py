"""The schema of both SQL stores as ordered lists of migrations, versions in step.

Migrations are numbered from 1 and applied in order inside one transaction: SQLite under
``BEGIN IMMEDIATE`` with the version in ``PRAGMA user_version``, PostgreSQL under an
advisory lock with the version in ``<schema>.meta`` (``stores.postgres`` runs them). A
later release adds a step at the end of both lists under the same number, and never edits
an earlier one. A step one engine does natively shrinks there (v2's ``changes`` table:
PostgreSQL's feed is LISTEN/NOTIFY, so its v2 is only the audit index).

The tables since version 3:

* ``tokens(id, body, created_at, revoked_at, last_used_at)`` -- ``body`` is the validated
  token body as a JSON object (``TokenSpec.as_json()``; TEXT in SQLite, JSONB in
  PostgreSQL), read back through the spec's own parser (``stores.rows``). A new body field
  needs no column and no migration. Columns are only what SQL itself writes or looks up.
* ``token_secrets(secret_hash PRIMARY KEY, token_id, expires_at)`` -- the SHA-256 hashes
  that authenticate a token (the secret is never stored). One row per token today; secret
  rotation adds the new hash and gives the old one an ``expires_at`` (its grace period).
  A lookup ignores a hash whose ``expires_at`` has passed.
* ``oauth_clients``, ``audit``, and SQLite's ``changes`` feed, unchanged since v2.

Version 4 (the token lifecycle) adds ``tokens.disabled_at`` (a column, not a body key: an
older reader that skipped it would let a disabled token through, and older versions refuse
to open a newer schema) and ``token_secrets.prefix`` (the secret's non-secret start, shown
in lists; NULL for secrets issued before v4) and ``token_secrets.rotated_at`` (when a
rotation replaced that secret; its ``expires_at`` is the end of its grace period).

* ``signing_keys(kid PRIMARY KEY, public_pem, created_at, verify_until, token_lifetime,
  retired_at)`` (v5) -- the PUBLIC keys of the Tokens API instances on this store
  (``management.store_keys``). Private keys are never written to the store.
* ``token_usage(token_id, hour, api, code, count)`` (v6) -- requests per token, API, UTC
  hour and outcome (``code`` ``''``: allowed), added to in batches, pruned by age.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from token_guard.core.errors import StoreError
from token_guard.core.spec import TokenSpec


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
    Migration(
        3,
        "token bodies as one JSON column; secret hashes in token_secrets",
        (
            # The hashes move first (the old table goes), then tokens is rebuilt: SQLite can
            # drop neither a UNIQUE column nor several columns in one step.
            """
            CREATE TABLE token_secrets (
                secret_hash TEXT PRIMARY KEY,       -- SHA-256 hex; the secret is never stored
                token_id TEXT NOT NULL REFERENCES tokens (id),
                expires_at TEXT                     -- NULL: valid as long as the token
            )
            """,
            "INSERT INTO token_secrets (secret_hash, token_id) SELECT secret_hash, id FROM tokens",
            "CREATE INDEX token_secrets_token_id ON token_secrets (token_id)",
            """
            CREATE TABLE tokens_v3 (
                id TEXT PRIMARY KEY,
                body TEXT NOT NULL,                 -- JSON object: the validated token body
                created_at TEXT NOT NULL,
                revoked_at TEXT,
                last_used_at TEXT
            )
            """,
            # A list column that is not JSON (edited by hand) becomes a JSON string in the
            # body: the row still migrates, and reads as unreadable (logged, absent) as before.
            """
            INSERT INTO tokens_v3 (id, body, created_at, revoked_at, last_used_at)
            SELECT id, json_object(
                'name', name,
                'grants', CASE WHEN json_valid(grants) THEN json(grants) ELSE grants END,
                'referers', CASE WHEN json_valid(referers) THEN json(referers) ELSE referers END,
                'allowed_apis', CASE WHEN json_valid(allowed_apis)
                    THEN json(allowed_apis) ELSE allowed_apis END,
                'expiration_date', expiration_date
            ), created_at, revoked_at, last_used_at
            FROM tokens
            """,
            "DROP TABLE tokens",
            "ALTER TABLE tokens_v3 RENAME TO tokens",
        ),
    ),
    Migration(
        4,
        "token lifecycle: disabled tokens, secret prefixes and rotation times",
        (
            "ALTER TABLE tokens ADD COLUMN disabled_at TEXT",
            "ALTER TABLE token_secrets ADD COLUMN prefix TEXT",
            "ALTER TABLE token_secrets ADD COLUMN rotated_at TEXT",
        ),
    ),
    Migration(
        5,
        "public signing keys of the Tokens API instances (never a private key)",
        (
            """
            CREATE TABLE signing_keys (
                kid TEXT PRIMARY KEY,               -- RFC 7638 thumbprint of the public key
                public_pem TEXT NOT NULL,           -- SubjectPublicKeyInfo PEM: public only
                created_at TEXT NOT NULL,
                verify_until TEXT NOT NULL,         -- the last token it signed expires by then
                token_lifetime INTEGER NOT NULL,    -- seconds; retirement: retired_at + this
                retired_at TEXT
            )
            """,
        ),
    ),
    Migration(
        6,
        "usage per token, API, UTC hour and outcome",
        (
            """
            CREATE TABLE token_usage (
                token_id TEXT NOT NULL,
                hour TEXT NOT NULL,                 -- the hour's start, format_timestamp
                api TEXT NOT NULL,
                code TEXT NOT NULL,                 -- '' allowed, else the refusal's code
                count INTEGER NOT NULL,
                PRIMARY KEY (token_id, hour, api, code)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX token_usage_hour ON token_usage (hour)",
        ),
    ),
)

LATEST_SQLITE_VERSION = SQLITE_MIGRATIONS[-1].version

# ``{s}`` is the store's schema (an identifier, filled in by psycopg). Statements carry no
# parameters, so a literal percent sign is safe, but there is none.
POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tokens, OAuth clients and the audit log",
        (
            """CREATE TABLE {s}.tokens (
                id text PRIMARY KEY,
                secret_hash text NOT NULL,          -- SHA-256 hex; the secret is never stored
                name text NOT NULL,
                grants text NOT NULL,               -- JSON list of connection_name + source objects
                referers text NOT NULL,             -- JSON list of origin patterns
                allowed_apis text NOT NULL,         -- JSON list of API names
                expiration_date timestamptz,
                created_at timestamptz NOT NULL,
                revoked_at timestamptz,
                last_used_at timestamptz
            )""",
            "CREATE UNIQUE INDEX tokens_secret_hash ON {s}.tokens (secret_hash)",
            """CREATE TABLE {s}.oauth_clients (
                client_id text PRIMARY KEY,
                secret_hash text NOT NULL,
                name text NOT NULL,
                scopes text NOT NULL,               -- JSON list of scope strings
                created_at timestamptz NOT NULL,
                revoked_at timestamptz
            )""",
            """CREATE TABLE {s}.audit (
                id bigserial PRIMARY KEY,
                at timestamptz NOT NULL,
                actor text NOT NULL,
                action text NOT NULL,
                token_id text,
                detail text NOT NULL                -- JSON object; never a secret
            )""",
        ),
    ),
    Migration(
        2,
        "audit by token (the change feed is LISTEN/NOTIFY, not a table)",
        ("CREATE INDEX audit_token_id ON {s}.audit (token_id)",),
    ),
    Migration(
        3,
        "token bodies as one JSON column; secret hashes in token_secrets",
        (
            """CREATE TABLE {s}.token_secrets (
                secret_hash text PRIMARY KEY,       -- SHA-256 hex; the secret is never stored
                token_id text NOT NULL REFERENCES {s}.tokens (id),
                expires_at timestamptz              -- NULL: valid as long as the token
            )""",
            "INSERT INTO {s}.token_secrets (secret_hash, token_id) "
            "SELECT secret_hash, id FROM {s}.tokens",
            "CREATE INDEX token_secrets_token_id ON {s}.token_secrets (token_id)",
            # A list column that is not JSON (edited by hand) becomes a JSON string in the
            # body: the row still migrates, and reads as unreadable (logged, absent) as before.
            """CREATE FUNCTION {s}.migrate_v3_json(value text) RETURNS jsonb
                LANGUAGE plpgsql IMMUTABLE AS $$
                BEGIN
                    RETURN value::jsonb;
                EXCEPTION WHEN others THEN
                    RETURN to_jsonb(value);
                END $$""",
            "ALTER TABLE {s}.tokens ADD COLUMN body jsonb",
            """UPDATE {s}.tokens SET body = jsonb_build_object(
                'name', name,
                'grants', {s}.migrate_v3_json(grants),
                'referers', {s}.migrate_v3_json(referers),
                'allowed_apis', {s}.migrate_v3_json(allowed_apis),
                'expiration_date',
                    to_char(expiration_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            )""",
            "DROP FUNCTION {s}.migrate_v3_json(text)",
            """ALTER TABLE {s}.tokens
                ALTER COLUMN body SET NOT NULL,
                DROP COLUMN secret_hash,
                DROP COLUMN name,
                DROP COLUMN grants,
                DROP COLUMN referers,
                DROP COLUMN allowed_apis,
                DROP COLUMN expiration_date""",
        ),
    ),
    Migration(
        4,
        "token lifecycle: disabled tokens, secret prefixes and rotation times",
        (
            "ALTER TABLE {s}.tokens ADD COLUMN disabled_at timestamptz",
            "ALTER TABLE {s}.token_secrets ADD COLUMN prefix text",
            "ALTER TABLE {s}.token_secrets ADD COLUMN rotated_at timestamptz",
        ),
    ),
    Migration(
        5,
        "public signing keys of the Tokens API instances (never a private key)",
        (
            """CREATE TABLE {s}.signing_keys (
                kid text PRIMARY KEY,               -- RFC 7638 thumbprint of the public key
                public_pem text NOT NULL,           -- SubjectPublicKeyInfo PEM: public only
                created_at timestamptz NOT NULL,
                verify_until timestamptz NOT NULL,  -- the last token it signed expires by then
                token_lifetime integer NOT NULL,    -- seconds; retirement: retired_at + this
                retired_at timestamptz
            )""",
        ),
    ),
    Migration(
        6,
        "usage per token, API, UTC hour and outcome",
        (
            """CREATE TABLE {s}.token_usage (
                token_id text NOT NULL,
                hour timestamptz NOT NULL,
                api text NOT NULL,
                code text NOT NULL,                 -- '' allowed, else the refusal's code
                count bigint NOT NULL,
                PRIMARY KEY (token_id, hour, api, code)
            )""",
            "CREATE INDEX token_usage_hour ON {s}.token_usage (hour)",
        ),
    ),
)


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


def spec_from_columns(
    name: Any, grants: Any, referers: Any, allowed_apis: Any, expiration_date: Any
) -> TokenSpec:
    """A spec from the columns of schema versions 1-2 (JSON text per list), re-validated.

    The stores read ``body`` since version 3 (``stores.rows.spec_from_body``); this stays for
    callers that still build bodies column by column (``benchmarks/scale.py``).
    """
    from token_guard.stores.rows import spec_from_body  # rows imports this module

    return spec_from_body({
        "name": name,
        "grants": json.loads(grants),
        "referers": json.loads(referers),
        "allowed_apis": json.loads(allowed_apis),
        "expiration_date": expiration_date,
    })
