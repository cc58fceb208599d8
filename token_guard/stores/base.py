"""The one protocol every token store implements. Nothing outside ``stores/`` knows SQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from token_guard.records import (
    AuditEntry,
    ChangeEvent,
    IssuedToken,
    OAuthClient,
    TokenRecord,
)

ChangeListener = Callable[[ChangeEvent], None]


@runtime_checkable
class TokenStore(Protocol):
    """Async token storage. Methods open the store on first use; ``close`` releases it.

    Errors reaching the backend raise ``StoreUnavailable``; an invalid body raises
    ``InvalidTokenSpec``; an unknown id raises ``NotFound`` (``get_*`` return None instead).
    """

    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent)."""

    async def close(self) -> None:
        """Release connections and stop the change feed."""

    # -- tokens ------------------------------------------------------------------------
    async def create_token(
        self, body: Mapping[str, Any], *, actor: str = "api"
    ) -> IssuedToken:
        """Validate ``body`` (Tokens API JSON), store it, return the record and secret."""

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash`` (revoked ones included)."""

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

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Batch-write ``last_used_at`` per token id (called by the resolver, not per request)."""

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every change (this process's and, where supported, others').

        Returns a function that unsubscribes. Listeners run on the event loop and must not
        block.
        """

    # -- OAuth clients and audit (management) ----------------------------------------
    async def create_client(
        self, client_id: str, secret_hash: str, name: str, scopes: Sequence[str]
    ) -> OAuthClient:
        """Store a new OAuth client."""

    async def get_client(self, client_id: str) -> tuple[OAuthClient, str] | None:
        """The client and its secret hash, or None."""

    async def list_clients(self) -> Sequence[OAuthClient]:
        """All OAuth clients, revoked ones included."""

    async def revoke_client(self, client_id: str) -> OAuthClient:
        """Revoke an OAuth client (idempotent)."""

    async def add_audit(
        self, actor: str, action: str, token_id: str | None, detail: Mapping[str, Any]
    ) -> None:
        """Append an audit entry. Never pass a secret in ``detail``."""

    async def list_audit(
        self, *, limit: int = 100, before: int | None = None
    ) -> Sequence[AuditEntry]:
        """Audit entries, newest first, ``limit`` at most, with id below ``before``."""
