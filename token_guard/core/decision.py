"""What a refusal is: the HTTP status, a stable machine code and words for people.

This module is the one registry of error codes: the guard's denials and the management
API's errors (``invalid_token_spec``, ``not_found``, ``insufficient_scope``, ...) are all
declared in ``ERROR_CODES``, and ``error_body`` builds the ``{"error", "hint", "code"}`` body
every one of them is answered with. The OAuth token endpoint is the exception: RFC 6749 §5.2
fixes its body (``{"error", "error_description"}``) and its codes (``invalid_client``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# Stable machine codes. Clients may branch on these; never rename one.
MISSING_TOKEN = "missing_token"
MALFORMED_TOKEN = "malformed_token"
INVALID_TOKEN = "invalid_token"
REVOKED_TOKEN = "revoked_token"
EXPIRED_TOKEN = "expired_token"
TOKEN_ROTATED = "token_rotated"
TOKEN_DISABLED = "token_disabled"
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
REQUEST_TIMEOUT = "request_timeout"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
STORE_UNAVAILABLE = "store_unavailable"
RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"
LIMITER_UNAVAILABLE = "limiter_unavailable"
INTERNAL_ERROR = "internal_error"
# The management API's own (it shares MISSING_TOKEN, INVALID_TOKEN and STORE_UNAVAILABLE).
INVALID_TOKEN_SPEC = "invalid_token_spec"
INVALID_REQUEST = "invalid_request"
NOT_FOUND = "not_found"
INSUFFICIENT_SCOPE = "insufficient_scope"
CONFLICT = "conflict"
INVALID_SIGNATURE = "invalid_signature"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One stable code: the status it is answered with, who answers it, what it means."""

    code: str
    status: int
    meaning: str
    guard: bool = False
    management: bool = False


#: Every ``code`` a ``{"error", "hint", "code"}`` body can carry, by code.
ERROR_CODES: Mapping[str, ErrorCode] = MappingProxyType({e.code: e for e in (
    ErrorCode(MISSING_TOKEN, 401, "no token was sent", guard=True, management=True),
    ErrorCode(MALFORMED_TOKEN, 401, "the token is not well-formed (prefix, checksum)", guard=True),
    ErrorCode(INVALID_TOKEN, 401, "the token is unknown or does not verify",
              guard=True, management=True),
    ErrorCode(REVOKED_TOKEN, 401, "the token was revoked", guard=True),
    ErrorCode(EXPIRED_TOKEN, 401, "the token's expiration_date has passed", guard=True),
    ErrorCode(TOKEN_ROTATED, 401,
              "the secret was replaced by a rotation and its grace period is over", guard=True),
    # 401, not 403: the credential itself is not valid for any request while disabled (as
    # for revoked and expired), and RFC 6750's invalid_token covers it; 403 would tell the
    # client to ask for a grant it can never get.
    ErrorCode(TOKEN_DISABLED, 401, "the token is disabled (reversibly) by its owner",
              guard=True),
    ErrorCode(API_NOT_ALLOWED, 403, "the token may not call this API", guard=True),
    ErrorCode(SOURCE_NOT_GRANTED, 403, "the token may not read this source", guard=True),
    ErrorCode(CONNECTION_NOT_GRANTED, 403, "the token has no grant on this connection",
              guard=True),
    ErrorCode(QUERY_NOT_ALLOWED, 403, "the query is not one the guard can prove safe",
              guard=True),
    ErrorCode(ORIGIN_NOT_ALLOWED, 403, "the website is not in the token's referers", guard=True),
    ErrorCode(UNKNOWN_ROUTE, 403, "the path is not a route the guard knows", guard=True),
    ErrorCode(MALFORMED_REQUEST, 400, "the request cannot be read unambiguously", guard=True),
    ErrorCode(AMBIGUOUS_REQUEST, 400, "the request names two tokens or conflicting sources",
              guard=True),
    ErrorCode(UNKNOWN_CONNECTION, 403, "the connection is not configured in the guard",
              guard=True),
    ErrorCode(BODY_TOO_LARGE, 413, "the body is larger than the guard reads", guard=True),
    ErrorCode(REQUEST_TIMEOUT, 408,
              "the body did not arrive within the guard's body_timeout", guard=True),
    ErrorCode(UNSUPPORTED_MEDIA_TYPE, 415,
              "the body's Content-Type is one the guard does not read on a source route",
              guard=True),
    ErrorCode(RATE_LIMITED, 429, "the token is over one of its rate limits; the hint names the "
              "limit and when its window resets (Retry-After)", guard=True),
    ErrorCode(QUOTA_EXCEEDED, 429, "the token's calendar quota is used up; the hint names the "
              "quota and when it resets (Retry-After)", guard=True),
    ErrorCode(LIMITER_UNAVAILABLE, 503, "the shared limiter (Redis) cannot answer and the guard "
              "is set to fail closed", guard=True),
    ErrorCode(INTERNAL_ERROR, 500, "the guard failed to decide, so it refused", guard=True),
    ErrorCode(STORE_UNAVAILABLE, 503, "the token store cannot answer now",
              guard=True, management=True),
    ErrorCode(INVALID_TOKEN_SPEC, 400, "the token body is invalid; field names the field",
              management=True),
    ErrorCode(INVALID_REQUEST, 400, "a parameter or the body is unreadable; field names it",
              management=True),
    ErrorCode(NOT_FOUND, 404, "no token has this id", management=True),
    ErrorCode(INSUFFICIENT_SCOPE, 403, "the OAuth access token lacks the scope",
              management=True),
    ErrorCode(INVALID_SIGNATURE, 401,
              "a secret scanner's report is not signed by a configured key", management=True),
    ErrorCode(CONFLICT, 409,
              "the token's state forbids this change (a revoked token stays revoked)",
              management=True),
)})


def error_body(code: str, message: str, hint: str, **extra: str) -> dict[str, str]:
    """The error body ``{"error", "hint", "code"}`` (+ ``extra``, e.g. ``field``).

    CARTO's clients read ``error`` (its React client also ``hint``); ``code`` is stable.
    """
    return {"error": message, "hint": hint, "code": code, **extra}


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal: ``status`` (401/403/400/413/429/503), ``code`` (stable), ``message`` and ``hint``.

    ``message`` says what was wrong, ``hint`` what would fix it. Neither ever contains the
    token secret.
    """

    status: int
    code: str
    message: str
    hint: str = ""
    #: Response headers the refusal needs besides the body's (429: Retry-After, RateLimit).
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def as_json(self) -> dict[str, str]:
        """The response body: ``{"error", "hint", "code"}`` (CARTO clients read ``error``)."""
        return error_body(self.code, self.message, self.hint)
