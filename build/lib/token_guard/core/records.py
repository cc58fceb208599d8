"""What stores keep and return: token records, issued tokens, OAuth clients, audit entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from token_guard.core.spec import Grant, TokenSpec, format_datetime


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token as handlers and management see it. It never holds the secret."""

    id: str
    spec: TokenSpec
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

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

    def state(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        exp = self.spec.expiration_date
        if exp is not None and exp <= now:
            return "expired"
        return "active"

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        """The token as the Tokens API returns it (no secret)."""
        body = {"id": self.id, **self.spec.as_json()}
        body["created_at"] = format_datetime(self.created_at)
        body["last_used_at"] = format_datetime(self.last_used_at)
        body["revoked_at"] = format_datetime(self.revoked_at)
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
class AuditEntry:
    """One management action: who (client id or ``cli:<user>``), what, when, on which token."""

    id: int
    at: datetime
    actor: str
    action: str
    token_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)
