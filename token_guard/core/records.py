"""What stores keep and return: token records, issued tokens, OAuth clients, audit entries,
and the public signing keys of the Tokens API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from token_guard.core.spec import Grant, TokenSpec, format_datetime

TokenState = Literal["active", "revoked", "expired", "disabled", "rotated"]


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown of one of a token's secrets: never the secret, nor its hash.

    ``prefix`` is the secret's first characters (``secret.secret_prefix``; None for secrets
    issued before they were kept). ``expires_at`` is set once a rotation replaced the
    secret (its grace period ends then) and ``rotated_at`` says when that rotation was.
    """

    prefix: str | None
    expires_at: datetime | None = None
    rotated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The secret as the Tokens API shows it."""
        return {
            "prefix": self.prefix,
            "expires_at": format_datetime(self.expires_at),
            "rotated_at": format_datetime(self.rotated_at),
        }


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token as handlers and management see it. It never holds the secret.

    ``secret`` describes the secret the record was found by (``get_by_secret_hash``: it may
    be one a rotation replaced), or the token's current one (``get_token``, listings).
    """

    id: str
    spec: TokenSpec
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    disabled_at: datetime | None = None
    secret: SecretInfo | None = None

    @property
    def name(self) -> str:
        """The token's name."""
        return self.spec.name

    @property
    def grants(self) -> tuple[Grant, ...]:
        """The data-source grants."""
        return self.spec.grants

    @property
    def allowed_apis(self) -> tuple[str, ...]:
        """The APIs the token may call."""
        return self.spec.allowed_apis

    @property
    def referers(self) -> tuple[str, ...]:
        """The websites allowed to use the token ([] = any)."""
        return self.spec.referers

    @property
    def expiration_date(self) -> datetime | None:
        """When the token stops working (None = never)."""
        return self.spec.expiration_date

    def state(self, now: datetime) -> TokenState:
        """``active``, ``revoked``, ``expired``, ``disabled`` or ``rotated`` at ``now``.

        Final states first: ``rotated`` only for a record found by a secret whose grace
        period is over (the token itself may be active with its new secret).
        """
        if self.revoked_at is not None:
            return "revoked"
        exp = self.spec.expiration_date
        if exp is not None and exp <= now:
            return "expired"
        if self.disabled_at is not None:
            return "disabled"
        if self.secret_expired(now):
            return "rotated"
        return "active"

    def secret_expired(self, now: datetime) -> bool:
        """True if the secret this record was found by was rotated out before ``now``."""
        secret = self.secret
        return secret is not None and secret.expires_at is not None and secret.expires_at <= now

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        """The token as the Tokens API returns it (no secret)."""
        body = {"id": self.id, **self.spec.as_json()}
        body["created_at"] = format_datetime(self.created_at)
        body["last_used_at"] = format_datetime(self.last_used_at)
        body["revoked_at"] = format_datetime(self.revoked_at)
        body["disabled_at"] = format_datetime(self.disabled_at)
        body["secret_prefix"] = None if self.secret is None else self.secret.prefix
        if now is not None:
            body["state"] = self.state(now)
        return body


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """The answer to creating a token: the record, and the secret (shown this once)."""

    record: TokenRecord
    token: str = field(repr=False)

    @property
    def id(self) -> str:
        """The public token id."""
        return self.record.id


# Rotation, its early end, disable and enable are announced as ``updated``: every cache
# (and every older instance) evicts the token's entries by id for any of them.
ChangeKind = Literal["created", "updated", "revoked", "reset"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A change in the store that caches must hear of.

    ``reset`` means "notifications may have been lost": drop everything cached.
    """

    kind: ChangeKind
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A machine-to-machine client of the management API (the secret is stored hashed)."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """The PUBLIC half of one Tokens API instance's signing key, as the store keeps it.

    ``public_pem`` is the SubjectPublicKeyInfo PEM; the private half never leaves the
    process that generated it. ``verify_until`` is when the last token the key may have
    signed expires (after it the key verifies nothing and may be pruned);
    ``token_lifetime`` is the lifetime of the tokens it signs, so a retirement can bring
    ``verify_until`` forward to ``retired_at + token_lifetime``.
    """

    kid: str
    public_pem: str
    created_at: datetime
    verify_until: datetime
    token_lifetime: int
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One management action: who (client id or ``cli:<user>``), what, when, on which token."""

    id: int
    at: datetime
    actor: str
    action: str
    token_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Requests of one token to one API in one UTC hour: allowed (``code`` ``""``) or
    refused with ``code``."""

    token_id: str
    hour: datetime
    api: str
    code: str
    count: int
