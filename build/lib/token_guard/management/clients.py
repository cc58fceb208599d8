"""OAuth clients of the Tokens API: ids, secrets, scopes, and the client records in the store.

Security choices:

* **Client credentials** (RFC 6749 §4.4). A client secret is 256 random bits, shown once at
  creation, stored only as its SHA-256 digest and compared with ``hmac.compare_digest``.
  A fast hash is enough here: the secret is machine-generated and high-entropy, so there is
  no dictionary to try; slow password hashes protect *guessable* secrets and would only cost
  CPU on every token request.
* An unknown client id and a wrong secret take the same path (a digest compare against a
  secret nobody has), so the answer does not tell which one was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from token_guard.core.records import OAuthClient
from token_guard.stores.base import TokenStore

READ_SCOPE = "read:tokens"
WRITE_SCOPE = "write:tokens"
SCOPES: tuple[str, ...] = (READ_SCOPE, WRITE_SCOPE)
CLIENT_ID_PREFIX = "tgc_"
CLIENT_SECRET_PREFIX = "tgcs_"



def new_client_id() -> str:
    """A fresh public client id, e.g. ``tgc_3fK9...``."""
    return CLIENT_ID_PREFIX + secrets.token_hex(10)


def new_client_secret() -> str:
    """A fresh client secret: 256 random bits, URL-safe, with a recognisable prefix."""
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_client_secret(secret: str) -> str:
    """The SHA-256 hex digest stored in place of a client secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scopes(text: str | Sequence[str]) -> tuple[str, ...]:
    """Split and check scopes (space-separated or a list); raise ValueError on an unknown one."""
    items = text.split() if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        for scope in item.replace(",", " ").split():
            if scope not in SCOPES:
                raise ValueError(
                    f"unknown scope {scope!r}; the scopes are {' and '.join(SCOPES)}"
                )
            if scope not in out:
                out.append(scope)
    return tuple(out)


async def create_client(
    store: TokenStore, name: str, scopes: Sequence[str], *, actor: str
) -> tuple[OAuthClient, str]:
    """Create an OAuth client; return it and its secret (the only time the secret exists)."""
    checked = parse_scopes(scopes)
    if not checked:
        raise ValueError(f"a client needs at least one scope: {' or '.join(SCOPES)}")
    secret = new_client_secret()
    client = await store.create_client(
        new_client_id(), hash_client_secret(secret), name, checked
    )
    await store.add_audit(
        actor, "client.create", None,
        {"client_id": client.client_id, "name": name, "scopes": list(checked)},
    )
    return client, secret


async def revoke_client(store: TokenStore, client_id: str, *, actor: str) -> OAuthClient:
    """Revoke a client (its access tokens stop working at once); raise NotFound if unknown."""
    client = await store.revoke_client(client_id)
    await store.add_audit(actor, "client.revoke", None, {"client_id": client_id})
    return client


# A digest of a secret nobody has: compared against when the client id is unknown, so an
# unknown id and a wrong secret take the same path.
_NO_CLIENT_HASH = hash_client_secret(secrets.token_urlsafe(32))


async def authenticate_client(
    store: TokenStore, client_id: str, client_secret: str
) -> OAuthClient | None:
    """The active client whose secret matches, or None (unknown, wrong secret or revoked)."""
    found = await store.get_client(client_id)
    stored = found[1] if found is not None else _NO_CLIENT_HASH
    ok = hmac.compare_digest(hash_client_secret(client_secret), stored)
    if not ok or found is None or found[0].revoked_at is not None:
        return None
    return found[0]
