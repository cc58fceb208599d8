"""Signing keys shared through the store: each instance's private key in its own memory,
every instance's public key in the store. The default key ring of the Tokens API.

Security choices:

* **Private keys never leave the process that made them.** Each Tokens API instance (each
  uvicorn worker, each machine) generates its own Ed25519 key pair on its first signature
  and publishes only the public half (kid, PEM, lifetimes) in the store's ``signing_keys``
  table. A read-only copy of the store (a backup, a replica, a leaked dump) holds no private
  key, so it cannot mint access tokens. We chose this over private keys encrypted at rest
  with a secret from the environment: that secret would be one more thing to deploy to
  every instance and to rotate, and whoever reads it with the store can sign again. Someone
  who can WRITE the store could publish a key of their own, but they could as well create
  an OAuth client: the store is the Tokens API's root of trust either way.
* **Verification** looks the ``kid`` up among the published keys, cached for
  ``refresh_seconds`` (60 s). An unknown kid rereads the list (a token another instance
  has just signed must verify at once); concurrent rereads share one store read, so tokens
  with invented kids cost what an unknown client id costs ``/oauth/token``: one read. The
  cache holds what the (pruned) table holds and nothing else.
* **Lifetimes.** An instance signs with one key for at most ``key_lifetime`` (1 day), then
  publishes a fresh one. A key is published with ``verify_until = created_at + key_lifetime
  + token_lifetime``: the keys of a stopped or crashed instance expire by themselves, and
  every publish prunes the expired ones, so the table stays small.
* **Rotation** (``token-guard keys rotate``, ``store.retire_signing_keys``) retires every
  active key: each verifies until ``retired_at + token_lifetime`` (its last tokens have
  expired by then). Before every signature an instance reads the published keys (one read
  per ``POST /oauth/token``, which reads the client anyway), sees its key retired and
  publishes a fresh one, so a rotation made anywhere is followed everywhere.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from token_guard.core.errors import ConfigurationError
from token_guard.core.records import PublishedKey
from token_guard.management.keys import (
    DEFAULT_TOKEN_LIFETIME,
    SigningKey,
    key_thumbprint,
    public_jwk,
)
from token_guard.stores.base import SigningKeyRegistry

DEFAULT_KEY_LIFETIME = 86_400  # seconds an instance signs with one key before a fresh one
VERIFY_LEEWAY = timedelta(seconds=30)  # clock skew between instances, as the JWT leeway


@dataclass(frozen=True, slots=True)
class _Known:
    published: PublishedKey
    key: Ed25519PublicKey


def published_key(key: SigningKey, *, key_lifetime: int, token_lifetime: int) -> PublishedKey:
    """The public record of ``key`` as the store keeps it (no private material)."""
    pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    until = key.created_at + timedelta(seconds=key_lifetime + token_lifetime)
    return PublishedKey(key.kid, pem, key.created_at, until, token_lifetime)


class StoreKeyRing:
    """This instance's signing key in memory; every instance's public keys from the store.

    Not thread-safe: one ring serves one event loop (one uvicorn worker).
    """

    def __init__(
        self, store: SigningKeyRegistry, *, token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        key_lifetime: int = DEFAULT_KEY_LIFETIME, refresh_seconds: float = 60.0,
    ) -> None:
        for name, value in (("token_lifetime", token_lifetime), ("key_lifetime", key_lifetime)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        self._store = store
        self._token_lifetime = token_lifetime
        self._key_lifetime = key_lifetime
        self._refresh_seconds = refresh_seconds
        self._mine: SigningKey | None = None
        self._known: dict[str, _Known] = {}
        # Monotonic time at which the last read of the store STARTED: a read that started
        # after a caller asked saw everything published before it asked.
        self._loaded_at = -float("inf")
        self._sign_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()

    @property
    def kid(self) -> str | None:
        """The kid this instance signs with now (None before its first signature)."""
        return self._mine.kid if self._mine is not None else None

    async def signing_key(self) -> SigningKey:
        """This instance's active key; a fresh one is published when it is retired or old."""
        async with self._sign_lock:
            await self._reload(since=time.monotonic())
            mine = self._mine
            if mine is None or not self._still_signs(mine):
                mine = SigningKey.generate()
                await self._store.publish_signing_key(published_key(
                    mine, key_lifetime=self._key_lifetime, token_lifetime=self._token_lifetime
                ))
                self._mine = mine
                await self._reload(since=time.monotonic())
            return mine

    def _still_signs(self, key: SigningKey) -> bool:
        known = self._known.get(key.kid)
        if known is None or known.published.retired_at is not None:
            return False  # retired (a rotation) or pruned: publish a fresh key
        age = datetime.now(UTC) - key.created_at
        return age < timedelta(seconds=self._key_lifetime)

    async def public_key(self, kid: str) -> Ed25519PublicKey | None:
        """The published key ``kid`` if it still verifies; an unknown kid rereads the store."""
        now = time.monotonic()
        if kid not in self._known or now - self._loaded_at > self._refresh_seconds:
            await self._reload(since=now)
        known = self._known.get(kid)
        if known is None or datetime.now(UTC) >= known.published.verify_until + VERIFY_LEEWAY:
            return None
        return known.key

    async def public_jwks(self) -> dict[str, Any]:
        """The JWK Set of every published key that still verifies."""
        await self._reload(since=time.monotonic())
        at = datetime.now(UTC)
        return {"keys": [
            public_jwk(kid, k.key) for kid, k in self._known.items()
            if at < k.published.verify_until
        ]}

    async def _reload(self, since: float) -> None:
        """Read the published keys unless a read that started at ``since`` or later ran."""
        async with self._load_lock:
            if self._loaded_at >= since:
                return  # someone else's read, begun after we asked, has everything we need
            started = time.monotonic()
            published = await self._store.list_signing_keys()
            known: dict[str, _Known] = {}
            for row in published:
                old = self._known.get(row.kid)
                key = old.key if old is not None else _load_public(row)
                if key is not None:
                    known[row.kid] = _Known(row, key)
            self._known, self._loaded_at = known, started


def _load_public(row: PublishedKey) -> Ed25519PublicKey | None:
    # A row that does not hold an Ed25519 public key verifies nothing (fail closed).
    try:
        key = serialization.load_pem_public_key(row.public_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        return None
    if not isinstance(key, Ed25519PublicKey) or key_thumbprint(key) != row.kid:
        return None
    return key
