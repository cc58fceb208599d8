"""MemoryStore: the token store kept in this process's memory (tests, demos, one worker).

Nothing survives a restart and nothing is shared between processes. It is the reference
implementation of ``TokenStore``: the SQL stores behave the same way, call for call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from token_guard.core.errors import NotFound, StoreError, StoreUnavailable
from token_guard.core.records import AuditEntry, IssuedToken, OAuthClient, TokenRecord
from token_guard.core.secret import hash_secret, new_secret, new_token_id
from token_guard.core.spec import apply_update, parse_token_spec
from token_guard.stores.base import (
    AUDIT_CREATE,
    AUDIT_REVOKE,
    AUDIT_UPDATE,
    ChangeListener,
    Listeners,
    TokenWrite,
    check_limit,
    utc_now,
)


class MemoryStore:
    """A ``TokenStore`` in process memory. Opens on first use; after ``close`` it refuses
    calls with ``StoreUnavailable`` until ``open`` is called again (its data is kept).
    """

    feed_healthy = True  # every change is made in this process: none can go unheard

    def __init__(self) -> None:
        self._state = "new"  # new -> open -> closed -> open ...
        self._tokens: dict[str, TokenRecord] = {}
        self._hashes: dict[str, str] = {}  # secret hash -> token id
        self._clients: dict[str, tuple[OAuthClient, str]] = {}
        self._audit: list[AuditEntry] = []
        self._listeners = Listeners()

    async def open(self) -> None:
        """Mark the store usable (idempotent)."""
        self._state = "open"

    async def close(self) -> None:
        """Refuse further calls until ``open``; subscribers stay registered."""
        self._state = "closed"

    def _ready(self) -> None:
        if self._state == "new":
            self._state = "open"
        elif self._state == "closed":
            raise StoreUnavailable("the memory store is closed; call open() to use it again")

    # -- tokens ----------------------------------------------------------------------------
    async def create_token(self, body: Mapping[str, Any], *, actor: str = "api") -> IssuedToken:
        """Validate ``body``, store the token under its secret's hash, return it with the secret."""
        self._ready()
        spec = parse_token_spec(body)
        secret = new_secret()
        record = TokenRecord(id=new_token_id(), spec=spec, created_at=utc_now())
        self._tokens[record.id] = record
        self._hashes[hash_secret(secret)] = record.id
        self._record(TokenWrite("created", AUDIT_CREATE, record.id, actor), {"name": spec.name})
        return IssuedToken(record, token=secret)

    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash`` (revoked ones included)."""
        self._ready()
        token_id = self._hashes.get(secret_hash)
        return None if token_id is None else self._tokens.get(token_id)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with public id ``token_id``, or None."""
        self._ready()
        return self._tokens.get(token_id)

    async def list_tokens(
        self, *, limit: int = 100, after: str | None = None
    ) -> Sequence[TokenRecord]:
        """Tokens ordered by id, ``limit`` at most, starting after id ``after``."""
        self._ready()
        check_limit(limit)
        ids = sorted(i for i in self._tokens if after is None or i > after)
        return [self._tokens[i] for i in ids[:limit]]

    async def update_token(
        self, token_id: str, changes: Mapping[str, Any], *, actor: str = "api"
    ) -> TokenRecord:
        """Apply a PATCH body (name, grants, referers, allowed_apis) and notify."""
        self._ready()
        record = self._require(token_id)
        updated = replace(record, spec=apply_update(record.spec, changes))
        self._tokens[token_id] = updated
        self._record(
            TokenWrite("updated", AUDIT_UPDATE, token_id, actor),
            {"fields": sorted(map(str, changes))},
        )
        return updated

    async def revoke_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Revoke (idempotent: the first revocation time is kept) and notify."""
        self._ready()
        record = self._require(token_id)
        already = record.revoked_at is not None
        if not already:
            record = replace(record, revoked_at=utc_now())
            self._tokens[token_id] = record
        self._record(
            TokenWrite("revoked", AUDIT_REVOKE, token_id, actor), {"already_revoked": already}
        )
        return record

    async def record_usage(self, last_used: Mapping[str, datetime]) -> None:
        """Set ``last_used_at`` per token id, never moving it backwards; unknown ids are skipped."""
        self._ready()
        for token_id, at in last_used.items():
            record = self._tokens.get(token_id)
            if record is None:
                continue
            at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
            if record.last_used_at is None or record.last_used_at < at:
                self._tokens[token_id] = replace(record, last_used_at=at)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every change made through this store; returns the unsubscriber."""
        return self._listeners.add(listener)

    def _record(self, change: TokenWrite, detail: Mapping[str, Any]) -> None:
        # The SQL stores' ``_write`` shape without a transaction: audit, then announce.
        self._append_audit(change.actor, change.action, change.token_id, detail)
        self._listeners.emit(change.event)

    def _require(self, token_id: str) -> TokenRecord:
        record = self._tokens.get(token_id)
        if record is None:
            raise NotFound(f"no token has id {token_id!r}; list tokens to find the right id")
        return record

    # -- OAuth clients and audit -----------------------------------------------------------
    async def create_client(
        self, client_id: str, secret_hash: str, name: str, scopes: Sequence[str]
    ) -> OAuthClient:
        """Store a new OAuth client; an id already in use raises ``StoreError``."""
        self._ready()
        if client_id in self._clients:
            raise StoreError(f"an OAuth client with id {client_id!r} exists; choose another id")
        client = OAuthClient(client_id, name, tuple(scopes), utc_now())
        self._clients[client_id] = (client, secret_hash)
        return client

    async def get_client(self, client_id: str) -> tuple[OAuthClient, str] | None:
        """The client and its secret hash, or None."""
        self._ready()
        return self._clients.get(client_id)

    async def list_clients(self) -> Sequence[OAuthClient]:
        """All OAuth clients ordered by id, revoked ones included."""
        self._ready()
        return [self._clients[k][0] for k in sorted(self._clients)]

    async def revoke_client(self, client_id: str) -> OAuthClient:
        """Revoke an OAuth client (idempotent)."""
        self._ready()
        found = self._clients.get(client_id)
        if found is None:
            raise NotFound(f"no OAuth client has id {client_id!r}")
        client, secret_hash = found
        if client.revoked_at is None:
            client = replace(client, revoked_at=utc_now())
            self._clients[client_id] = (client, secret_hash)
        return client

    async def add_audit(
        self, actor: str, action: str, token_id: str | None, detail: Mapping[str, Any]
    ) -> None:
        """Append an audit entry. Never pass a secret in ``detail``."""
        self._ready()
        self._append_audit(actor, action, token_id, detail)

    async def list_audit(
        self, *, limit: int = 100, before: int | None = None
    ) -> Sequence[AuditEntry]:
        """Audit entries, newest first, ``limit`` at most, with id below ``before``."""
        self._ready()
        check_limit(limit)
        out: list[AuditEntry] = []
        for entry in reversed(self._audit):
            if before is not None and entry.id >= before:
                continue
            out.append(entry)
            if len(out) == limit:
                break
        return out

    def _append_audit(
        self, actor: str, action: str, token_id: str | None, detail: Mapping[str, Any]
    ) -> None:
        # A deep copy: the caller keeping and mutating its dict must not rewrite history.
        entry = AuditEntry(
            id=len(self._audit) + 1,
            at=utc_now(),
            actor=actor,
            action=action,
            token_id=token_id,
            detail=copy.deepcopy(dict(detail)),
        )
        self._audit.append(entry)
