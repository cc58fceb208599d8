"""The store protocols, narrow to wide, and the helpers every store shares.

A store is read by the guard and administered by people and programs; each side depends
only on the protocol it uses:

* ``TokenReader`` -- what the request path needs: the lookup by secret hash, the change
  feed and whether it is healthy, and the batched usage write. A store serving only the
  guard (a read replica, a cache of another service) implements just this.
* ``TokenAdmin`` -- creating, reading, listing, updating, rotating, disabling, enabling
  and revoking tokens (CLI, the Tokens API).
* ``ClientStore`` -- the OAuth clients of the Tokens API.
* ``AuditLog`` -- the append-only record of who changed what.
* ``SigningKeyRegistry`` -- the PUBLIC keys of every Tokens API instance on the store
  (``management.store_keys``), so each verifies the others' access tokens.
* ``TokenStore`` -- all five plus ``open``/``close``: what ``MemoryStore``,
  ``SQLiteStore`` and ``PostgresStore`` implement, and what ``tg.TokenStore`` names.

Nothing outside ``stores/`` knows SQL.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

from token_guard.core.errors import TokenStateError
from token_guard.core.records import (
    AuditEntry,
    ChangeEvent,
    ChangeKind,
    IssuedToken,
    OAuthClient,
    PublishedKey,
    TokenRecord,
    UsageRow,
)

__all__ = [
    "AUDIT_CREATE",
    "AUDIT_DISABLE",
    "AUDIT_ENABLE",
    "AUDIT_END_GRACE",
    "AUDIT_REVOKE",
    "AUDIT_ROTATE",
    "AUDIT_UPDATE",
    "DEFAULT_GRACE_SECONDS",
    "MAX_GRACE_SECONDS",
    "MAX_PAGE",
    "AuditLog",
    "ChangeListener",
    "ClientStore",
    "Listeners",
    "SigningKeyRegistry",
    "TokenAdmin",
    "TokenReader",
    "TokenStore",
    "TokenWrite",
    "answers_from_memory",
    "check_grace",
    "check_limit",
    "retired_key",
    "revoked_is_final",
    "utc_now",
]

logger = logging.getLogger("token_guard.stores")

ChangeListener = Callable[[ChangeEvent], None]

MAX_PAGE = 1000

# Audit actions written by every store for token changes.
AUDIT_CREATE = "token.create"
AUDIT_UPDATE = "token.update"
AUDIT_REVOKE = "token.revoke"
AUDIT_ROTATE = "token.rotate"
AUDIT_END_GRACE = "token.rotate.expire"
AUDIT_DISABLE = "token.disable"
AUDIT_ENABLE = "token.enable"

DEFAULT_GRACE_SECONDS = 86_400
"""How long a rotated-out secret keeps working unless the rotation says otherwise (24 h)."""
MAX_GRACE_SECONDS = 30 * 86_400
"""The longest grace period: a replaced secret (perhaps a leaked one) dies within 30 days."""


@runtime_checkable
class TokenReader(Protocol):
    """What the guard reads: one lookup per cache miss, the change feed, usage batches.

    Errors reaching the backend raise ``StoreUnavailable``.
    """

    @property
    def feed_healthy(self) -> bool:
        """False while changes made elsewhere may go unheard (a broken LISTEN connection).

        A store whose feed cannot break says True always (a plain class attribute will do).
        """

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash`` (revoked ones included)."""

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every change (this process's and, where supported, others').

        Returns a function that unsubscribes. Listeners run on the event loop and must not
        block.
        """

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Batch-write ``last_used_at`` per token id, never moving it backwards; unknown ids
        are skipped (called by the usage recorder, not per request)."""


@runtime_checkable
class TokenAdmin(Protocol):
    """Token administration: what the CLI and the Tokens API change.

    An invalid body raises ``InvalidTokenSpec``; an unknown id raises ``NotFound``
    (``get_token`` returns None instead). Every change is audited and announced to the
    store's subscribers.
    """

    async def create_token(
        self, body: Mapping[str, Any], *, actor: str = "api"
    ) -> IssuedToken:
        """Validate ``body`` (Tokens API JSON), store it, return the record and secret."""

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with public id ``token_id``, or None."""

    async def list_tokens(
        self, *, limit: int = 100, after: str | None = None
    ) -> Sequence[TokenRecord]:
        """Tokens ordered by id, ``limit`` at most, starting after id ``after``."""

    async def update_token(
        self, token_id: str, changes: Mapping[str, Any], *, actor: str = "api"
    ) -> TokenRecord:
        """Apply a PATCH body (name, grants, referers, allowed_apis) and notify."""

    async def revoke_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Revoke (idempotent) and notify; later requests with the token get 401."""

    async def rotate_token(
        self, token_id: str, *, grace_seconds: int = DEFAULT_GRACE_SECONDS, actor: str = "api"
    ) -> IssuedToken:
        """Issue a new secret for the same token (same id, body); the current secret keeps
        working ``grace_seconds`` more (0: refused at once with ``token_rotated``).

        Secrets replaced earlier keep their own end. A revoked token raises
        ``TokenStateError``; a bad ``grace_seconds`` raises ``ValueError``.
        """

    async def end_rotation_grace(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """End the grace period of every replaced secret of the token now (idempotent)."""

    async def disable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Refuse the token (``token_disabled``) until ``enable_token``; idempotent.

        A revoked token raises ``TokenStateError``.
        """

    async def enable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Undo ``disable_token`` (idempotent); a revoked token raises ``TokenStateError``."""


@runtime_checkable
class ClientStore(Protocol):
    """The OAuth clients (client-credentials grant) allowed to call the Tokens API."""

    async def create_client(
        self, client_id: str, secret_hash: str, name: str, scopes: Sequence[str]
    ) -> OAuthClient:
        """Store a new OAuth client; an id already in use raises ``StoreError``."""

    async def get_client(self, client_id: str) -> tuple[OAuthClient, str] | None:
        """The client and its secret hash, or None (also when its row is unreadable)."""

    async def list_clients(self) -> Sequence[OAuthClient]:
        """All OAuth clients ordered by id, revoked ones included."""

    async def revoke_client(self, client_id: str) -> OAuthClient:
        """Revoke an OAuth client (idempotent)."""


@runtime_checkable
class AuditLog(Protocol):
    """Who changed what, newest first. Token changes are written by ``TokenAdmin`` itself."""

    async def add_audit(
        self, actor: str, action: str, token_id: str | None, detail: Mapping[str, Any]
    ) -> None:
        """Append an audit entry. Never pass a secret in ``detail``."""

    async def list_audit(
        self, *, limit: int = 100, before: int | None = None, token_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Audit entries, newest first, ``limit`` at most, with id below ``before``, only
        ``token_id``'s when given."""


@runtime_checkable
class SigningKeyRegistry(Protocol):
    """Public signing keys of the Tokens API instances sharing the store (no private key)."""

    async def publish_signing_key(self, key: PublishedKey) -> None:
        """Add ``key`` (a kid already present is left as it is); prune keys past
        ``verify_until``."""

    async def list_signing_keys(self) -> Sequence[PublishedKey]:
        """Every published key not yet pruned, oldest first."""

    async def retire_signing_keys(self, at: datetime) -> Sequence[PublishedKey]:
        """Retire every active key at ``at`` (``verify_until`` becomes at most
        ``at + token_lifetime``); return the keys retired."""


def retired_key(key: PublishedKey, at: datetime) -> PublishedKey:
    """``key`` retired at ``at``: it verifies until the tokens it signed have expired."""
    until = min(key.verify_until, at + timedelta(seconds=key.token_lifetime))
    return replace(key, retired_at=at, verify_until=until)


class UsageLog(Protocol):
    """Requests per token, API, UTC hour and outcome, written in batches by the guard."""

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add each row's count to the stored count of its (token, hour, api, code)."""

    async def get_usage(
        self, token_id: str, start: datetime, end: datetime
    ) -> Sequence[UsageRow]:
        """The token's rows with ``start <= hour < end``, oldest first."""

    async def prune_usage(self, before: datetime) -> int:
        """Delete rows of hours before ``before``; return how many went."""


@runtime_checkable
class TokenStore(
    TokenReader, TokenAdmin, ClientStore, AuditLog, SigningKeyRegistry, UsageLog, Protocol
):
    """A whole store: every protocol above, plus its lifecycle.

    Methods open the store on first use; ``close`` releases it. Errors reaching the
    backend raise ``StoreUnavailable``.
    """

    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent)."""

    async def close(self) -> None:
        """Release connections and stop the change feed."""


# -- helpers every store shares ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenWrite:
    """One token change as every store records it: audited, fed, announced, in one shape.

    Each store has one ``_write(change, op)`` that runs ``op`` (the change itself, which
    returns its result and the audit entry's detail) and, in the same transaction, appends
    the audit entry (``actor``, ``action``) and the change-feed event (``kind``: the SQLite
    ``changes`` row, PostgreSQL's ``pg_notify``); then, after commit, tells this instance's
    listeners. A write whose outcome is unknown (``StoreUnavailable`` or a cancellation
    after it was sent) is announced too: a needless eviction costs one lookup, while a
    revocation that committed unannounced would leave a revoked token cached.
    """

    kind: ChangeKind
    action: str
    token_id: str
    actor: str

    @property
    def event(self) -> ChangeEvent:
        """The event listeners hear for this change."""
        return ChangeEvent(self.kind, self.token_id)


def check_grace(grace_seconds: int) -> int:
    """``grace_seconds`` if it is a whole number of seconds from 0 to MAX_GRACE_SECONDS."""
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int)
        or not 0 <= grace_seconds <= MAX_GRACE_SECONDS
    ):
        raise ValueError(
            f"grace_seconds must be a whole number of seconds from 0 to {MAX_GRACE_SECONDS} "
            f"(30 days), got {grace_seconds!r}; e.g. 86400 for 24 hours, 0 to end at once"
        )
    return grace_seconds


def revoked_is_final(record: TokenRecord, change: str) -> None:
    """Raise ``TokenStateError`` if ``record`` is revoked: it cannot be ``change``d."""
    if record.revoked_at is not None:
        raise TokenStateError(
            f"token {record.id!r} is revoked and cannot be {change}: revocation is final; "
            "create a new token instead"
        )


L = TypeVar("L", bound=Callable[..., Any])


def answers_from_memory(lookup: L) -> L:
    """Mark a store's ``async def get_by_secret_hash`` that only reads process memory.

    The resolver then runs its first step within the request's own step, and when it
    returns without waiting (as it does: it has nothing to wait for), takes its answer at
    once: no task, no timeout, no trip through the event loop; on a cache miss those cost
    more than the lookup itself. Only for a lookup that, before it first waits, neither
    uses the running task (``asyncio.timeout``, ``asyncio.current_task``: that would be
    the request's) nor sets a context variable; were it to wait after all, it goes on in a
    task of its own under ``lookup_timeout``, as any other store's lookup does. The mark
    belongs to the function: a subclass that overrides the method is not marked.
    """
    lookup.answers_from_memory = True  # type: ignore[attr-defined]
    return lookup


def check_limit(limit: int) -> None:
    """Refuse a page size outside 1..MAX_PAGE (a programming error, not a store failure)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Listeners:
    """The subscribers of one store; a failing listener is logged and never stops the others.

    Not thread-safe: subscribe, unsubscribe and emit all run on the event loop's thread.
    """

    __slots__ = ("_ids", "_listeners")

    def __init__(self) -> None:
        self._listeners: dict[int, ChangeListener] = {}
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._listeners)

    def add(self, listener: ChangeListener) -> Callable[[], None]:
        """Register ``listener``; the returned function removes it (calling it twice is fine)."""
        key = next(self._ids)
        self._listeners[key] = listener

        def unsubscribe() -> None:
            self._listeners.pop(key, None)

        return unsubscribe

    def emit(self, event: ChangeEvent) -> None:
        """Call every listener with ``event``."""
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:
                logger.exception("a change listener failed on %s; the others still ran", event)
