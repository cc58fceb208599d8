"""MemoryStore: the token store kept in this process's memory (tests, demos, one worker).

Nothing survives a restart and nothing is shared between processes. It is the reference
implementation of ``TokenStore``: the SQL stores behave the same way, call for call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from token_guard.core.errors import NotFound, StoreError, StoreUnavailable
from token_guard.core.records import (
    AuditEntry,
    IssuedToken,
    OAuthClient,
    PublishedKey,
    SecretInfo,
    TokenRecord,
    UsageRow,
)
from token_guard.core.secret import hash_secret, new_secret, new_token_id, secret_prefix
from token_guard.core.spec import apply_update, format_datetime, parse_token_spec
from token_guard.stores.base import (
    AUDIT_CREATE,
    AUDIT_DISABLE,
    AUDIT_ENABLE,
    AUDIT_END_GRACE,
    AUDIT_REVOKE,
    AUDIT_ROTATE,
    AUDIT_UPDATE,
    DEFAULT_GRACE_SECONDS,
    ChangeListener,
    Listeners,
    TokenWrite,
    answers_from_memory,
    check_grace,
    check_limit,
    retired_key,
    revoked_is_final,
    utc_now,
)


class MemoryStore:
    """A ``TokenStore`` in process memory. Opens on first use; after ``close`` it refuses
    calls with ``StoreUnavailable`` until ``open`` is called again (its data is kept).
    """

    feed_healthy = True  # every change is made in this process: none can go unheard

    def __init__(self) -> None:
        self._state = "new"  # new -> open -> closed -> open ...
        # Records without ``secret``; the current secret's info is added on the way out.
        self._tokens: dict[str, TokenRecord] = {}
        self._hashes: dict[str, tuple[str, SecretInfo]] = {}  # secret hash -> (token id, info)
        self._current: dict[str, str] = {}  # token id -> its current secret's hash
        self._clients: dict[str, tuple[OAuthClient, str]] = {}
        self._audit: list[AuditEntry] = []
        self._signing_keys: dict[str, PublishedKey] = {}  # kid -> key, insertion = age
        self._listeners = Listeners()
        self._usage: dict[tuple[str, datetime, str, str], int] = {}

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
        self._add_secret(record.id, secret)
        self._record(TokenWrite("created", AUDIT_CREATE, record.id, actor), {"name": spec.name})
        return IssuedToken(self._out(record), token=secret)

    def _add_secret(self, token_id: str, secret: str) -> None:
        secret_hash = hash_secret(secret)
        self._hashes[secret_hash] = (token_id, SecretInfo(secret_prefix(secret)))
        self._current[token_id] = secret_hash

    def _out(self, record: TokenRecord) -> TokenRecord:
        current = self._hashes.get(self._current.get(record.id, ""))
        return replace(record, secret=None if current is None else current[1])

    @answers_from_memory  # the resolver asks it within the request's step
    async def get_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash``, revoked ones and replaced
        secrets included (``record.secret`` says until when)."""
        self._ready()
        found = self._hashes.get(secret_hash)
        if found is None:
            return None
        record = self._tokens.get(found[0])
        return None if record is None else replace(record, secret=found[1])

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with public id ``token_id``, or None."""
        self._ready()
        record = self._tokens.get(token_id)
        return None if record is None else self._out(record)

    async def list_tokens(
        self, *, limit: int = 100, after: str | None = None
    ) -> Sequence[TokenRecord]:
        """Tokens ordered by id, ``limit`` at most, starting after id ``after``."""
        self._ready()
        check_limit(limit)
        ids = sorted(i for i in self._tokens if after is None or i > after)
        return [self._out(self._tokens[i]) for i in ids[:limit]]

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
        return self._out(updated)

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
        return self._out(record)

    async def rotate_token(
        self, token_id: str, *, grace_seconds: int = DEFAULT_GRACE_SECONDS, actor: str = "api"
    ) -> IssuedToken:
        """A new secret for the token; the current one works ``grace_seconds`` more."""
        self._ready()
        grace = check_grace(grace_seconds)
        record = self._require(token_id)
        revoked_is_final(record, "rotated")
        now = utc_now()
        until = now + timedelta(seconds=grace)
        old = self._current.get(token_id)
        if old is not None:
            self._hashes[old] = (token_id, replace(self._hashes[old][1], expires_at=until,
                                                   rotated_at=now))
        secret = new_secret()
        self._add_secret(token_id, secret)
        self._record(
            TokenWrite("updated", AUDIT_ROTATE, token_id, actor),
            {"grace_seconds": grace, "old_secret_expires_at": format_datetime(until),
             "prefix": secret_prefix(secret)},
        )
        return IssuedToken(self._out(record), token=secret)

    async def end_rotation_grace(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """End every replaced secret's grace period now (idempotent)."""
        self._ready()
        record = self._require(token_id)
        now = utc_now()
        ended = 0
        for secret_hash, (owner, info) in list(self._hashes.items()):
            if owner == token_id and info.expires_at is not None and info.expires_at > now:
                self._hashes[secret_hash] = (owner, replace(info, expires_at=now))
                ended += 1
        self._record(
            TokenWrite("updated", AUDIT_END_GRACE, token_id, actor), {"secrets_ended": ended}
        )
        return self._out(record)

    async def disable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Refuse the token until ``enable_token`` (idempotent: the first time is kept)."""
        return self._set_disabled(token_id, True, actor)

    async def enable_token(self, token_id: str, *, actor: str = "api") -> TokenRecord:
        """Undo ``disable_token`` (idempotent)."""
        return self._set_disabled(token_id, False, actor)

    def _set_disabled(self, token_id: str, disable: bool, actor: str) -> TokenRecord:
        self._ready()
        record = self._require(token_id)
        revoked_is_final(record, "disabled" if disable else "enabled")
        already = (record.disabled_at is not None) == disable
        if not already:
            record = replace(record, disabled_at=utc_now() if disable else None)
            self._tokens[token_id] = record
        self._record(
            TokenWrite("updated", AUDIT_DISABLE if disable else AUDIT_ENABLE, token_id, actor),
            {"already_disabled" if disable else "already_enabled": already},
        )
        return self._out(record)

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

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add the rows' counts."""
        self._ready()
        for r in rows:
            key = (r.token_id, _aware(r.hour), r.api, r.code)
            self._usage[key] = self._usage.get(key, 0) + r.count

    async def get_usage(
        self, token_id: str, start: datetime, end: datetime
    ) -> Sequence[UsageRow]:
        """The token's rows with ``start <= hour < end``, oldest first."""
        self._ready()
        start, end = _aware(start), _aware(end)
        return [
            UsageRow(t, h, a, c, n) for (t, h, a, c), n in sorted(self._usage.items())
            if t == token_id and start <= h < end
        ]

    async def prune_usage(self, before: datetime) -> int:
        """Delete rows of hours before ``before``."""
        self._ready()
        before = _aware(before)
        old = [k for k in self._usage if k[1] < before]
        for key in old:
            del self._usage[key]
        return len(old)

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

    # -- public signing keys ---------------------------------------------------------------
    async def publish_signing_key(self, key: PublishedKey) -> None:
        """Add ``key`` (a kid already present is kept); prune keys past ``verify_until``."""
        self._ready()
        now = utc_now()
        for kid in [k for k, v in self._signing_keys.items() if v.verify_until <= now]:
            del self._signing_keys[kid]
        self._signing_keys.setdefault(key.kid, key)

    async def list_signing_keys(self) -> Sequence[PublishedKey]:
        """Every published key not yet pruned, oldest first."""
        self._ready()
        return list(self._signing_keys.values())

    async def retire_signing_keys(self, at: datetime) -> Sequence[PublishedKey]:
        """Retire every active key at ``at``; return the keys retired."""
        self._ready()
        retired = [
            retired_key(k, at) for k in self._signing_keys.values() if k.retired_at is None
        ]
        for key in retired:
            self._signing_keys[key.kid] = key
        return retired

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
        self, *, limit: int = 100, before: int | None = None, token_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Audit entries, newest first, ``limit`` at most, with id below ``before``, only
        ``token_id``'s when given."""
        self._ready()
        check_limit(limit)
        out: list[AuditEntry] = []
        for entry in reversed(self._audit):
            if before is not None and entry.id >= before:
                continue
            if token_id is not None and entry.token_id != token_id:
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


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
