"""The transport-neutral guard: one request's steps, shared by the ASGI and WSGI adapters.

An adapter reads the request's method, raw path, query string and the three headers the
guard uses, then: ``begin`` (route, facts and token; may pass the request through or refuse
it); when ``Pending.known`` is None, reads the body, ``parse_body`` and ``facts``; resolves
the token through ``resolver`` (``lookup`` sync, else ``resolve``); ``policy.decide``; and on
an allow ``resolver.note_used``. Every step returns a ``Denial`` instead of raising, so both
adapters make exactly the same decisions with the same responses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import unquote_plus

from token_guard import decision as codes
from token_guard.bodies import parse_body
from token_guard.connections import Connection
from token_guard.decision import Denial
from token_guard.errors import ConfigurationError
from token_guard.facts import RequestFacts
from token_guard.policy import CompiledToken, Policy
from token_guard.records import TokenRecord
from token_guard.resolver import CacheSettings, Resolver
from token_guard.routes import Route, RouteMap, RouteMatch
from token_guard.sql import DEFAULT_ALLOWED_FUNCTIONS, SqlAnalyzer
from token_guard.stores.base import TokenStore

log = logging.getLogger("token_guard")


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    """What ``on_decision`` observes: one per guarded request (no secret inside)."""

    allowed: bool
    method: str
    path: str
    token_id: str | None
    facts: RequestFacts | None
    denial: Denial | None


@dataclass(frozen=True, slots=True)
class Pending:
    """A request that passed routing and token extraction.

    ``known`` holds its facts when they did not depend on a body; otherwise the adapter
    reads the body and calls ``Guard.facts``.
    """

    match: RouteMatch
    token: str
    query_string: bytes
    origin: str | None
    referer: str | None
    known: RequestFacts | None = None


PASS = object()
"""``begin``'s answer for a request the guard does not handle (outside the prefix, preflight)."""

MISSING = Denial(
    401,
    codes.MISSING_TOKEN,
    "This API needs an API access token.",
    "Send it in an 'Authorization: Bearer <token>' header.",
)
QUERY_TOKEN_OFF = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "Tokens in the URL (access_token) are not accepted here: URLs leak into logs and caches.",
    "Send the token in an 'Authorization: Bearer <token>' header instead.",
)
TWO_TOKENS = Denial(
    400,
    codes.AMBIGUOUS_REQUEST,
    "The request carries two different tokens.",
    "Send exactly one token, in the 'Authorization: Bearer' header.",
)
BAD_AUTHORIZATION = Denial(
    401,
    codes.MALFORMED_TOKEN,
    "The Authorization header is not 'Bearer <token>'.",
    "Send 'Authorization: Bearer <token>' with the API access token.",
)
TWO_ORIGINS = Denial(
    400,
    codes.AMBIGUOUS_REQUEST,
    "The request has two different Origin or Referer headers.",
    "Send each header once; browsers never send two.",
)
_MEMO_SIZE = 4096
_MEMO_MAX_KEY = 2048
CONFLICTING_HEADERS = "\x00conflict"
"""What adapters pass for an Origin/Referer header sent twice with different values."""


def body_too_large(limit: int) -> Denial:
    """The 413 refusal for a body over ``limit`` bytes."""
    return Denial(
        413,
        codes.BODY_TOO_LARGE,
        f"The request body is larger than {limit} bytes.",
        "Send a smaller body; long SQL belongs in a granted query or a job.",
    )


def redact_query(query_string: bytes) -> str:
    """The query string with any ``access_token`` value replaced by ``REDACTED``."""
    text = query_string.decode("latin-1")
    if "access_token" not in text.lower() and "%" not in text:
        return text
    parts = []
    for part in text.split("&"):
        name = unquote_plus(part.split("=", 1)[0])
        parts.append(f"{name}=REDACTED" if "access_token" in name.lower() else part)
    return "&".join(parts)


_WWW_AUTH = {
    401: b'Bearer realm="token_guard", error="invalid_token"',
    403: b'Bearer realm="token_guard", error="insufficient_scope"',
    400: b'Bearer realm="token_guard", error="invalid_request"',
}
_MISSING_AUTH = b'Bearer realm="token_guard"'

ResponseParts = tuple[int, list[tuple[bytes, bytes]], bytes]
DenyResponder = Callable[[Denial], ResponseParts]


def default_deny_response(denial: Denial) -> ResponseParts:
    """The JSON body ``{"error", "hint", "code"}`` with an RFC 6750 ``WWW-Authenticate``."""
    body = json.dumps(denial.as_json()).encode("utf-8")
    www = _MISSING_AUTH if denial.code == codes.MISSING_TOKEN else _WWW_AUTH.get(denial.status)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    if www is not None:
        headers.append((b"www-authenticate", www))
    if denial.status == 503:
        headers.append((b"retry-after", b"2"))
    return denial.status, headers, body


class GuardOptions(TypedDict, total=False):
    """The optional settings ``TokenGuard`` and ``TokenGuardWSGI`` pass on to ``Guard``."""

    routes: Sequence[Route]
    prefix: str
    include_default_routes: bool
    allow_query_token: bool
    max_body_bytes: int
    max_query_bytes: int
    allowed_functions: Iterable[str]
    cache: CacheSettings | None
    on_decision: Callable[[DecisionEvent], None] | None
    deny_response: DenyResponder | None


class Guard:
    """Configuration, compiled once, and the steps every request goes through.

    ``allowed_functions`` adds SQL functions (``"name"`` or a whole schema,
    ``"carto-un.carto.*"``) to the read-only ones queries may call; any other function is
    refused, since it could read or change what no grant covers.
    """

    def __init__(
        self,
        *,
        store: TokenStore,
        connections: Mapping[str, str | Connection],
        routes: Sequence[Route] = (),
        prefix: str = "/v3/",
        include_default_routes: bool = True,
        allow_query_token: bool = False,
        max_body_bytes: int = 1024 * 1024,
        max_query_bytes: int = 64 * 1024,
        allowed_functions: Iterable[str] = (),
        cache: CacheSettings | None = None,
        on_decision: Callable[[DecisionEvent], None] | None = None,
        deny_response: DenyResponder | None = None,
    ) -> None:
        if not isinstance(max_body_bytes, int) or max_body_bytes <= 0:
            raise ConfigurationError("max_body_bytes: must be a positive number of bytes")
        if not isinstance(max_query_bytes, int) or max_query_bytes <= 0:
            raise ConfigurationError("max_query_bytes: must be a positive number of bytes")
        if not hasattr(store, "get_by_secret_hash"):
            raise ConfigurationError(
                "store: must be a token store, e.g. tg.SQLiteStore('tokens.db')"
            )
        self.store = store
        if isinstance(allowed_functions, str):
            raise ConfigurationError(
                "allowed_functions: must be a list of names, e.g. ['carto-un.carto.*']"
            )
        sql = SqlAnalyzer(
            max_query_bytes=max_query_bytes,
            allowed_functions=(*DEFAULT_ALLOWED_FUNCTIONS, *allowed_functions),
        )
        self.policy = Policy(connections, sql=sql)
        self.routes = RouteMap(
            prefix=prefix, routes=routes, include_defaults=include_default_routes
        )
        self.resolver: Resolver[CompiledToken] = Resolver(
            store, self.policy.compile, settings=cache or CacheSettings()
        )
        self.allow_query_token = allow_query_token
        self.max_body_bytes = max_body_bytes
        self.on_decision = on_decision
        self.deny_response = deny_response or default_deny_response
        # What ``begin`` answers is a pure function of the request line and the three
        # headers it reads: remembered, so a repeated request (a map's tiles, a polled
        # query) skips path, query-string and header parsing. Bounded; cleared when full.
        # Facts that depend on a body are never part of it (Pending.known is None).
        self._begun: dict[tuple[Any, ...], Pending | Denial | object] = {}

    def begin(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        authorization: bytes | None,
        origin: str | None,
        referer: str | None,
        preflight: bool = False,
        conflicting_authorization: bool = False,
    ) -> Pending | Denial | object:
        """Route and extract the token: ``PASS``, a ``Denial`` or a ``Pending`` request."""
        if preflight and method == "OPTIONS" and origin is not None:
            return PASS
        key = (method, raw_path, query_string, origin, referer, authorization,
               conflicting_authorization)
        found = self._begun.get(key)
        if found is None:
            found = self._begin(
                method, raw_path, query_string, authorization, origin, referer,
                conflicting_authorization,
            )
            if len(raw_path) + len(query_string) <= _MEMO_MAX_KEY:
                if len(self._begun) >= _MEMO_SIZE:
                    self._begun.clear()
                self._begun[key] = found
        return found

    def _begin(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        authorization: bytes | None,
        origin: str | None,
        referer: str | None,
        conflicting_authorization: bool,
    ) -> Pending | Denial | object:
        """``begin`` without its memo: a pure function of its arguments."""
        match = self.routes.match(method, raw_path)
        if match is None:
            return PASS
        if isinstance(match, Denial):
            return match
        known: RequestFacts | None = None
        if not match.needs_body:
            facts = self.routes.facts(match, query_string, None, origin, referer)
            if isinstance(facts, Denial):
                return facts
            known = facts
        if origin == CONFLICTING_HEADERS or referer == CONFLICTING_HEADERS:
            return TWO_ORIGINS
        if conflicting_authorization:
            return TWO_TOKENS
        token = None if authorization is None else _bearer(authorization)
        if b"access_token" in query_string and not isinstance(token, Denial):
            token = self._query_token(query_string, token)
        if isinstance(token, Denial):
            return token
        if token is None:
            return MISSING
        return Pending(match, token, query_string, origin, referer, known)

    def parse_body(
        self, raw: bytes, content_type: str | None = None
    ) -> Mapping[str, Any] | Denial | None:
        """The parameters of a buffered body (None if empty) read by its Content-Type, or
        the refusal (see ``token_guard.bodies``)."""
        return parse_body(raw, content_type)

    def facts(self, pending: Pending, body: Mapping[str, Any] | None) -> RequestFacts | Denial:
        """What the request reads (API, connection, sources, origin), or the refusal."""
        if pending.known is not None:
            return pending.known
        return self.routes.facts(
            pending.match, pending.query_string, body, pending.origin, pending.referer
        )

    def observe(
        self,
        method: str,
        path: str,
        query_string: bytes,
        facts: RequestFacts | None,
        outcome: TokenRecord | Denial,
        token_id: str | None = None,
    ) -> None:
        """Log a refusal (never the token) and tell ``on_decision``, if set."""
        logged = f"{path}?{redact_query(query_string)}" if query_string else path
        if isinstance(outcome, Denial):
            log.info(
                "denied %s %s: %s (%s)%s", method, logged, outcome.code, outcome.status,
                f" token {token_id}" if token_id else "",
            )
            event = DecisionEvent(False, method, logged, token_id, facts, outcome)
        else:
            event = DecisionEvent(True, method, logged, outcome.id, facts, None)
        if self.on_decision is not None:
            self.on_decision(event)

    def _query_token(self, query_string: bytes, header_token: str | None) -> str | Denial | None:
        values = []
        for part in query_string.decode("latin-1").split("&"):
            name, _, value = part.partition("=")
            if unquote_plus(name) == "access_token":
                values.append(unquote_plus(value))
        if not values:
            return header_token
        if not self.allow_query_token:
            return QUERY_TOKEN_OFF
        if len(set(values)) > 1 or (header_token is not None and header_token != values[0]):
            return TWO_TOKENS
        return values[0]


def _bearer(value: bytes) -> str | Denial:
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return BAD_AUTHORIZATION
    token = rest.strip(b" \t")
    if not token or b" " in token or b"," in token:
        return BAD_AUTHORIZATION
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return BAD_AUTHORIZATION
