"""What a refusal is: the HTTP status, a stable machine code and words for people."""

from __future__ import annotations

from dataclasses import dataclass

# Stable machine codes. Clients may branch on these; never rename one.
MISSING_TOKEN = "missing_token"
MALFORMED_TOKEN = "malformed_token"
INVALID_TOKEN = "invalid_token"
REVOKED_TOKEN = "revoked_token"
EXPIRED_TOKEN = "expired_token"
API_NOT_ALLOWED = "api_not_allowed"
SOURCE_NOT_GRANTED = "source_not_granted"
CONNECTION_NOT_GRANTED = "connection_not_granted"
QUERY_NOT_ALLOWED = "query_not_allowed"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"
UNKNOWN_ROUTE = "unknown_route"
MALFORMED_REQUEST = "malformed_request"
AMBIGUOUS_REQUEST = "ambiguous_request"
UNKNOWN_CONNECTION = "unknown_connection"
BODY_TOO_LARGE = "body_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
STORE_UNAVAILABLE = "store_unavailable"
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal: ``status`` (401/403/400/413/503), ``code`` (stable), ``message`` and ``hint``.

    ``message`` says what was wrong, ``hint`` what would fix it. Neither ever contains the
    token secret.
    """

    status: int
    code: str
    message: str
    hint: str = ""

    def as_json(self) -> dict[str, str]:
        """The response body: ``{"error", "hint", "code"}`` (CARTO clients read ``error``)."""
        return {"error": self.message, "hint": self.hint, "code": self.code}
