"""The conductor: one request's path through the guard, shared by every transport.

``Guard.check`` takes what an adapter read from the request line and three headers and
returns the next ``Step``; the adapter only does the I/O a step asks for and hands the
result back, until the step is final:

- ``PASS`` — not the guard's request (outside the prefix, a CORS preflight): call the app.
- ``Denial`` — refuse with ``deny_response(denial)``.
- ``TokenRecord`` — allowed: hand the app the record (never the secret).
- ``Awaiting`` — a store lookup (a cache miss): ``step.then(await step.work())``; WSGI runs
  ``work`` on its loop thread.
- ``ReadBody`` — the route's source may travel in the body: read it (up to
  ``max_body_bytes``, within ``body_timeout`` seconds; the transport's limits refuse with
  a ``Denial``: 413 ``body_too_large``, 408 ``request_timeout``) and
  ``step.then(raw_or_denial, content_type)``.

The order is the guard's alone: route, facts from the query string and token extraction
(each remembered by what it depends on: see ``Guard.check``), token resolution, then the
body if the route needs it, then the decision, usage and ``on_decision``. Nothing an
adapter does changes a decision, so ASGI, WSGI and the CLI's ``check`` decide alike. A
token is resolved (and a missing, malformed, unknown, revoked or expired one refused)
before any body is read. Any exception inside a step is caught and
becomes a refusal (500 ``internal_error``, logged), never a pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import count
from time import time
from typing import Any, NamedTuple, TypedDict

from token_guard.core import decision as codes
from token_guard.core.bodies import parse_body
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.facts import RequestFacts
from token_guard.core.limits import ratelimit_headers
from token_guard.core.policy import CompiledToken, Policy, expired
from token_guard.core.querystrings import may_hold_token, plain_names, redact, values_of
from token_guard.core.records import TokenRecord
from token_guard.core.routes import Route, RouteMap, RouteMatch
from token_guard.core.sql import DEFAULT_ALLOWED_FUNCTIONS, SqlAnalyzer
from token_guard.limiters import Admitted, Charge, Limiter, make_limiter
from token_guard.report_only import parse_report_only
from token_guard.resolver import CacheSettings, Resolver
from token_guard.stores.base import TokenReader

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
    report_only: bool = False
    """True: a refusal the report-only mode let through to the app (``denial`` says why)."""


class Pending(NamedTuple):
    """A request that passed routing and token extraction.

    ``known`` holds its facts when they did not depend on a body; otherwise the guard asks
    for the body (``ReadBody``) once the token is resolved. A named tuple: every cache miss
    and every refusal of a known-bad token makes one, and a frozen dataclass's ``__init__``
    cost ~12 k instructions to the tuple's ~3.5 k.
    """

    method: str
    path: bytes
    match: RouteMatch
    token: str
    query_string: bytes
    origin: str | None
    referer: str | None
    known: RequestFacts | None = None


class PassThrough:
    """The type of ``PASS``: a request the guard does not handle."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PASS"


PASS = PassThrough()
"""``check``'s answer for a request the guard does not handle (outside the prefix, preflight)."""


class Awaiting(NamedTuple):
    """The guard needs I/O (the store, a shared limiter): ``step.then(await step.work())``.

    A named tuple, as ``Pending`` is: one a cache miss."""

    work: Callable[[], Awaitable[Any]]
    then: Callable[[Any], Step]


@dataclass(frozen=True, slots=True)
class ReadBody:
    """The guard needs the body: ``step.then(raw bytes or the transport's Denial, type)``."""

    then: Callable[[bytes | Denial, str | None], Step]


Step = PassThrough | Denial | TokenRecord | Admitted | Awaiting | ReadBody
"""What ``Guard.check`` and each continuation return."""

INTERNAL_ERROR = Denial(
    500,
    codes.INTERNAL_ERROR,
    "token_guard could not decide on this request, so it was refused.",
    "This is a bug in token_guard: retry, and report it with the server's log line.",
)

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
FACTS_MEMO_SIZE = 8192
"""Remembered facts per (route answer, query string); cleared when full."""
BEARER_MEMO_SIZE = 8192
"""Remembered tokens per Authorization header; cleared when full."""
_MEMO_MAX_QUERY = 2048  # longer query strings are read afresh every time
REPEAT_MEMO_SIZE = 2048
"""Remembered allowed requests (exact repeats, re-validated: see ``Guard.check``); cleared
when full."""
# On the request path, bytes.find rather than ``in``: ``bytes in bytes`` first tries the
# operand as an int, and the TypeError it raises and clears costs more than the search.
_PROBE_TIMEOUT = 30.0  # the start-up lookup; the stores bound their own connects too
CONFLICTING_HEADERS = "\x00conflict"
"""What adapters pass for an Origin/Referer header sent twice with different values."""
# Where a server or proxy joined repeated Referer headers: ", " before another URL's scheme.
_JOINED_URLS = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def one_origin(value: str) -> str:
    """One Origin value from a header value with a comma in it: a join of equal values is
    that value, of different ones a conflict (WSGI servers join repeated headers with ", ",
    so both adapters read a comma this way and decide alike)."""
    parts = {p.strip() for p in value.split(",")}
    return parts.pop() if len(parts) == 1 else CONFLICTING_HEADERS


def one_referer(value: str) -> str:
    """One Referer value from a header value with a comma in it: two URLs joined
    (``"https://a/, https://b/"``) are a conflict unless equal; a comma not followed by a
    URL stays part of one URL (``/map/@40.7,-74.0``). Two headers whose second is not a URL
    thus read as one, on ASGI as on WSGI, where a server's join cannot be told apart."""
    parts = _JOINED_URLS.split(value)
    if len(parts) == 1:
        return value
    distinct = {p.strip() for p in parts}
    return distinct.pop() if len(distinct) == 1 else CONFLICTING_HEADERS


def body_timed_out(seconds: float) -> Denial:
    """The 408 refusal for a body that did not arrive within ``seconds``."""
    return Denial(
        408,
        codes.REQUEST_TIMEOUT,
        f"The request body did not arrive within {seconds:g} seconds.",
        "Send the whole body promptly (the guard's body_timeout bounds how long it waits).",
    )


def body_too_large(limit: int) -> Denial:
    """The 413 refusal for a body over ``limit`` bytes."""
    return Denial(
        413,
        codes.BODY_TOO_LARGE,
        f"The request body is larger than {limit} bytes.",
        "Send a smaller body; long SQL belongs in a granted query or a job.",
    )


redact_query = redact
"""The query string with any ``access_token`` value replaced by ``REDACTED``."""


_WWW_AUTH = {
    401: b'Bearer realm="token_guard", error="invalid_token"',
    403: b'Bearer realm="token_guard", error="insufficient_scope"',
    400: b'Bearer realm="token_guard", error="invalid_request"',
}
_MISSING_AUTH = b'Bearer realm="token_guard"'

ResponseParts = tuple[int, list[tuple[bytes, bytes]], bytes]
DenyResponder = Callable[[Denial], ResponseParts]


RESPONSE_MEMO_SIZE = 256
"""Refusals whose response is remembered, by identity (the module's constants: UNKNOWN,
MISSING...); cleared when full."""
# id(denial) -> (that denial, its status, headers, body). The denial is kept with its
# response, so its id cannot be reused while the entry exists.
_responses: dict[int, tuple[Denial, int, tuple[tuple[bytes, bytes], ...], bytes]] = {}


def default_deny_response(denial: Denial) -> ResponseParts:
    """The JSON body ``{"error", "hint", "code"}`` with an RFC 6750 ``WWW-Authenticate``.

    Remembered per refusal object: building it (JSON encoding) cost about 30 k
    instructions, the most of a refusal's; a flood of unknown tokens is refused with one
    object, ``resolver.UNKNOWN``. Each call gets its own list of headers. A refusal with
    headers of its own (a 429's Retry-After and RateLimit, made per request) is not kept.
    """
    known = _responses.get(id(denial))
    if known is not None and known[0] is denial:
        return known[1], list(known[2]), known[3]
    status, headers, body = _deny_response(denial)
    if denial.headers:
        return status, headers, body
    if len(_responses) >= RESPONSE_MEMO_SIZE:
        _responses.clear()
    _responses[id(denial)] = (denial, status, tuple(headers), body)
    return status, headers, body


def _deny_response(denial: Denial) -> ResponseParts:
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
    if denial.headers:
        headers.extend(denial.headers)
    return denial.status, headers, body


class GuardOptions(TypedDict, total=False):
    """The optional settings ``TokenGuard`` and ``TokenGuardWSGI`` pass on to ``Guard``."""

    routes: Sequence[Route]
    prefix: str
    include_default_routes: bool
    allow_query_token: bool
    max_body_bytes: int
    body_timeout: float
    max_query_bytes: int
    allowed_functions: Iterable[str]
    cache: CacheSettings | None
    on_decision: Callable[[DecisionEvent], None] | None
    deny_response: DenyResponder | None
    limiter: str | Limiter | None
    ratelimit_headers: bool
    report_only: bool | Iterable[str]
    report_only_header: bool


class Guard:
    """Configuration, compiled once, and the steps every request goes through.

    ``allowed_functions`` adds SQL functions (``"name"`` or a whole schema,
    ``"carto-un.carto.*"``) to the read-only ones queries may call; any other function is
    refused, since it could read or change what no grant covers.

    ``limiter`` counts the requests of tokens with ``limits``: None (in-process counters),
    a Redis URL (shared by every instance: ``token_guard.limiters.RedisLimiter``) or a
    limiter object. ``ratelimit_headers`` adds the RateLimit headers to allowed responses
    of those tokens (refusals always carry them).
    """

    def __init__(
        self,
        *,
        store: TokenReader,
        connections: Mapping[str, str | Connection],
        routes: Sequence[Route] = (),
        prefix: str = "/v3/",
        include_default_routes: bool = True,
        allow_query_token: bool = False,
        max_body_bytes: int = 1024 * 1024,
        body_timeout: float = 10.0,
        max_query_bytes: int = 64 * 1024,
        allowed_functions: Iterable[str] = (),
        cache: CacheSettings | None = None,
        on_decision: Callable[[DecisionEvent], None] | None = None,
        deny_response: DenyResponder | None = None,
        limiter: str | Limiter | None = None,
        ratelimit_headers: bool = True,
        report_only: bool | Iterable[str] = False,
        report_only_header: bool = False,
    ) -> None:
        if not isinstance(max_body_bytes, int) or max_body_bytes <= 0:
            raise ConfigurationError("max_body_bytes: must be a positive number of bytes")
        if (
            isinstance(body_timeout, bool) or not isinstance(body_timeout, int | float)
            or not 0 < body_timeout < float("inf")
        ):
            raise ConfigurationError(
                f"body_timeout: must be a positive number of seconds, got {body_timeout!r}"
            )
        if not isinstance(max_query_bytes, int) or max_query_bytes <= 0:
            raise ConfigurationError("max_query_bytes: must be a positive number of bytes")
        if isinstance(store, type):
            raise ConfigurationError(
                f"store: got the class {store.__name__}, not a store; pass an instance, "
                "e.g. store=tg.SQLiteStore('tokens.db')"
            )
        if not isinstance(store, TokenReader):
            raise ConfigurationError(
                f"store: {type(store).__name__} is not a token store (it needs "
                "get_by_secret_hash, subscribe, record_usage and feed_healthy); use e.g. "
                "tg.SQLiteStore('tokens.db')"
            )
        self.store = store
        if cache is not None and not isinstance(cache, CacheSettings):
            hint = "cache=tg.CacheSettings(**{...})" if isinstance(cache, Mapping) else (
                "cache=tg.CacheSettings(ttl=30)")
            raise ConfigurationError(
                f"cache: must be tg.CacheSettings(...), got {type(cache).__name__}; e.g. {hint}"
            )
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
        # Seconds a body the decision reads may take to arrive (408 past it).
        self.body_timeout = float(body_timeout)
        self.on_decision = on_decision
        self.deny_response = deny_response or default_deny_response
        self.limiter = make_limiter(limiter)
        self.ratelimit_headers = ratelimit_headers
        # None unless report_only= was given (token_guard.report_only: warns at start-up).
        self.report_only = parse_report_only(report_only, report_only_header)
        # What ``begin`` answers is a pure function of the request line and the three
        # headers it reads: remembered, so a repeated request (a map's tiles, a polled
        # query) skips path, query-string and header parsing. Bounded; cleared when full.
        # Facts that depend on a body are never part of it (Pending.known is None).
        # The memos of check(), each bounded for all requests and cleared when full:
        # (id of a RouteMatch, query string) -> (that match, facts without headers or Denial)
        self._facts: dict[tuple[Any, ...], tuple[RouteMatch, RequestFacts | Denial, bool]] = {}
        # Authorization header -> its token (or why it has none)
        self._bearers: dict[bytes, str | Denial] = {}
        # (path, query string, Authorization, Origin, Referer, method) of an allowed request
        # without limits or body -> (token, its compiled token, facts, the token's counter
        # for the API): see ``check``.
        self._repeats: dict[
            tuple[Any, ...], tuple[str, CompiledToken, RequestFacts, count[int]]
        ] = {}
        # Bound once: attribute chains cost on a path this short.
        self._match = self.routes.match
        self._route_facts = self.routes.query_facts
        self._lookup = self.resolver.lookup
        self._policy_decide = self.policy.decide
        self._decide_parts = self.policy.decide_parts
        self._note_used = self.resolver.note_used
        self._uses = self.resolver.usage.uses
        self._note_refused = self.resolver.note_refused

    def check(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        authorization: bytes | None,
        origin: str | None,
        referer: str | None,
        preflight: bool = False,
        conflicting_authorization: bool = False,
        names_plain: bool | None = None,
    ) -> Step:
        """The first step of a request (see the module docstring for the steps).

        ``names_plain``: what ``querystrings.plain_names(query_string)`` answers, if the
        adapter already asked (None: the guard asks when it needs to).

        Each step remembers its own answer by what that answer depends on, never by the
        whole request: the route by its path (a tile's coordinates aside: ``RouteMap.match``),
        the facts by (route answer, query string) and then by the parameters the route
        reads (``RouteMap.query_facts``), the token by its Authorization header, the website's
        answer by (referer list, headers) and the sources' preparation by (connection,
        sources) (``Policy``; nothing per token). So a map's distinct tiles, many tokens and
        varying bound parameters each cost a few lookups.
        """
        if preflight and method == "OPTIONS" and origin is not None:
            return PASS
        try:
            # An exact repeat of an allowed request: everything the decision reads is in the
            # key, except the token's cache entry and the clock, re-validated here (the same
            # compiled object still cached and fresh, not expired); anything else takes the
            # full path below, which decides as if this memo did not exist.
            # A path ending in a digit (a tile's z/x/y) is never remembered here (below).
            tiled = raw_path[-1:].isdigit()
            if not tiled:
                repeat = (raw_path, query_string, authorization, origin, referer, method)
                seen = self._repeats.get(repeat)
                if seen is not None and not conflicting_authorization:
                    cached = seen[1]
                    if self._lookup(seen[0]) is cached and (
                        cached.expires_at is None or time() < cached.expires_at
                    ):
                        next(seen[3])  # the token's counter for this API
                        if self.on_decision is not None:
                            self.observe(method, raw_path, query_string,
                                         _with(seen[2], origin, referer), cached.record)
                        return cached.record
            match = self._match(method, raw_path)
            if match is None:
                return PASS
            if isinstance(match, Denial):
                self.observe(method, raw_path, query_string, None, match)
                return match
            # What the request reads, without its headers (origin and referer None): the
            # same object for every request with this route answer and query string; and
            # whether the query string names access_token.
            what: RequestFacts | None = None
            named = True
            if not match.needs_body:
                key = (id(match), query_string)
                known = self._facts.get(key)
                if known is not None and known[0] is match:
                    read = known[1]
                    named = known[2]
                else:
                    # No name with "%", "+" or "_": none reads as access_token, and none
                    # decodes to a name the route reads. Otherwise _token looks closer.
                    if names_plain is None:
                        names_plain = plain_names(query_string)
                    read = self._route_facts(match, query_string, names_plain)
                    named = not names_plain
                    if len(query_string) <= _MEMO_MAX_QUERY:
                        if len(self._facts) >= FACTS_MEMO_SIZE:
                            self._facts.clear()
                        self._facts[key] = (match, read, named)
                if isinstance(read, Denial):
                    self.observe(method, raw_path, query_string, None, read)
                    return read
                what = read
            token = None if authorization is None else self._bearers.get(authorization)
            if (
                token is None
                or named
                or conflicting_authorization
                or origin == CONFLICTING_HEADERS
                or referer == CONFLICTING_HEADERS
            ):
                token = self._token(authorization, origin, referer, query_string,
                                    conflicting_authorization)
            if isinstance(token, Denial):
                self.observe(method, raw_path, query_string, _with(what, origin, referer),
                             token)
                return token
            compiled = self._lookup(token)
            if what is None or compiled.__class__ is not CompiledToken:
                pending = Pending(method, raw_path, match, token, query_string, origin,
                                  referer, _with(what, origin, referer))
                if compiled is None:
                    return Awaiting(partial(self.resolver.resolve_missed, token),
                                    partial(self._resolved, pending))
                return self._resolved(pending, compiled)
            # _decide, written out: the path every cached request takes.
            record = compiled.record
            denial = self._decide_parts(compiled, what, origin, referer, time())
            if denial is not None:
                self.observe(method, raw_path, query_string, _with(what, origin, referer),
                             denial, record.id)
                return denial
            if compiled.limits is not None:
                return self._charge(method, raw_path, query_string,
                                    _with(what, origin, referer), compiled)
            counter = self._uses[what.api][record.id]  # see usage.TokenCounters
            next(counter)
            # Not stored: a path ending in a digit (a tile's z/x/y: a map asks for each tile
            # once, so the entry would only cost), a long query string, two Authorizations.
            if not tiled and len(query_string) <= _MEMO_MAX_QUERY and not conflicting_authorization:
                if len(self._repeats) >= REPEAT_MEMO_SIZE:
                    self._repeats.clear()
                self._repeats[repeat] = (token, compiled, what, counter)
            if self.on_decision is not None:
                self.observe(method, raw_path, query_string, _with(what, origin, referer),
                             record)
            return record
        except Exception:
            log.exception("token_guard failed deciding %s %r", method, raw_path[:200])
            return INTERNAL_ERROR

    def _token(
        self,
        authorization: bytes | None,
        origin: str | None,
        referer: str | None,
        query_string: bytes,
        conflicting_authorization: bool,
    ) -> str | Denial:
        """The request's one token, or why it has none (checked in this order)."""
        if origin == CONFLICTING_HEADERS or referer == CONFLICTING_HEADERS:
            return TWO_ORIGINS
        if conflicting_authorization:
            return TWO_TOKENS
        token: str | Denial | None = None
        if authorization is not None:
            token = self._bearers.get(authorization)
            if token is None:
                token = _bearer(authorization)
                if len(self._bearers) >= BEARER_MEMO_SIZE:
                    self._bearers.clear()
                self._bearers[authorization] = token
        # Any spelling the app decodes to access_token (a%63cess_token too): values_of
        # reads names as the frameworks do.
        if may_hold_token(query_string) and not isinstance(token, Denial):
            token = self._query_token(query_string, token)
        if token is None:
            return MISSING
        return token

    def _resolved(self, pending: Pending, compiled: CompiledToken | Denial) -> Step:
        """The token is known (or refused): decide, or ask for the body first."""
        try:
            if isinstance(compiled, Denial):
                self.observe(pending.method, pending.path, pending.query_string, pending.known,
                             compiled)
                return compiled
            if pending.known is None:
                # Every refusal that needs no body comes before reading one.
                late = expired(compiled, time())
                if late is not None:
                    self.observe(pending.method, pending.path, pending.query_string, None,
                                 late, compiled.record.id)
                    return late
                return ReadBody(partial(self._with_body, pending, compiled))
            return self._decide(pending, compiled, pending.known)
        except Exception:
            return self._failed(pending)

    def _with_body(
        self, pending: Pending, compiled: CompiledToken, raw: bytes | Denial,
        content_type: str | None,
    ) -> Step:
        """The body arrived (or the transport refused it): the facts, then the decision."""
        try:
            token_id = compiled.record.id
            parsed = raw if isinstance(raw, Denial) else parse_body(raw, content_type)
            if isinstance(parsed, Denial):
                self.observe(pending.method, pending.path, pending.query_string, None, parsed,
                             token_id)
                return parsed
            facts = self.routes.facts(
                pending.match, pending.query_string, parsed, pending.origin, pending.referer
            )
            if isinstance(facts, Denial):
                self.observe(pending.method, pending.path, pending.query_string, None, facts,
                             token_id)
                return facts
            return self._decide(pending, compiled, facts)
        except Exception:
            return self._failed(pending)

    def _decide(self, pending: Pending, compiled: CompiledToken, facts: RequestFacts) -> Step:
        record = compiled.record
        denial = self._policy_decide(compiled, facts, time())
        if denial is not None:
            self.observe(pending.method, pending.path, pending.query_string, facts, denial,
                         record.id)
            return denial
        if compiled.limits is not None:
            return self._charge(pending.method, pending.path, pending.query_string, facts,
                                compiled)
        next(self._uses[facts.api][record.id])
        if self.on_decision is not None:
            self.observe(pending.method, pending.path, pending.query_string, facts, record)
        return record

    def _charge(self, method: str, path: bytes, query_string: bytes,
                facts: RequestFacts | None, compiled: CompiledToken) -> Step:
        """Allowed, and the token has limits: count the request, or refuse it (429)."""
        assert compiled.limits is not None and facts is not None
        record = compiled.record
        answer = self.limiter.charge(record.id, compiled.limits[facts.api], time())
        done = partial(self._charged, method, path, query_string, facts, record)
        if callable(answer):
            return Awaiting(answer, done)
        return done(answer)

    def _charged(self, method: str, path: bytes, query_string: bytes, facts: RequestFacts,
                 record: TokenRecord, answer: Charge) -> Step:
        if isinstance(answer, Denial):
            self.observe(method, path, query_string, facts, answer, record.id)
            return answer
        self._note_used(record.id, facts.api)
        if self.on_decision is not None:
            self.observe(method, path, query_string, facts, record)
        if self.ratelimit_headers and answer:
            return Admitted(record, ratelimit_headers(answer, time()))
        return record

    def _failed(self, pending: Pending) -> Denial:
        log.exception("token_guard failed deciding %s %r", pending.method, pending.path[:200])
        return INTERNAL_ERROR

    async def check_async(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes = b"",
        authorization: bytes | None = None,
        origin: str | None = None,
        referer: str | None = None,
        body: bytes = b"",
        content_type: str | None = "application/json",
    ) -> PassThrough | Denial | TokenRecord:
        """All the steps of one request, for callers that hold the whole request (the
        CLI's ``check``, tests): the same decision ``TokenGuard`` makes."""
        step = self.check(method, raw_path, query_string, authorization, origin, referer)
        while True:
            if isinstance(step, Awaiting):
                step = step.then(await step.work())
            elif isinstance(step, ReadBody):
                limit = self.max_body_bytes
                step = step.then(body_too_large(limit) if len(body) > limit else body,
                                 content_type)
            elif isinstance(step, Admitted):
                return step.record  # counted against its limits like any allowed request
            else:
                return step

    def refused(self, method: str, path: str, query_string: bytes, denial: Denial) -> Denial:
        """A refusal the transport made before the guard's steps (observed like the rest)."""
        self.observe(method, path, query_string, None, denial)
        return denial

    def observe(
        self,
        method: str,
        path: bytes | str,
        query_string: bytes,
        facts: RequestFacts | None,
        outcome: TokenRecord | Denial,
        token_id: str | None = None,
    ) -> None:
        """Log a refusal (never the token) and tell ``on_decision``, if set.

        The log line and the event are only made for someone to read (a refusal of a flood
        of made-up tokens costs less by their ~15 k instructions when nobody does).
        """
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        on_decision = self.on_decision
        if isinstance(outcome, Denial):
            if token_id is not None:
                self._note_refused(token_id, facts.api if facts is not None else "",
                                   outcome.code)
            passed = self.report_only is not None and self.lets_through(method, path)
            if passed:
                self.report_only.count(outcome.code)  # type: ignore[union-attr]
            level = logging.WARNING if passed else logging.INFO
            if on_decision is None and not log.isEnabledFor(level):
                return
            logged = f"{path}?{redact_query(query_string)}" if query_string else path
            log.log(
                level,
                "%s %s %s: %s (%s)%s", "report-only: would refuse" if passed else "denied",
                method, logged, outcome.code, outcome.status,
                f" token {token_id}" if token_id else "",
            )
            if on_decision is not None:
                on_decision(DecisionEvent(False, method, logged, token_id, facts, outcome,
                                          passed))
        elif on_decision is not None:
            logged = f"{path}?{redact_query(query_string)}" if query_string else path
            on_decision(DecisionEvent(True, method, logged, outcome.id, facts, None))

    def lets_through(self, method: str, path: bytes | str) -> bool:
        """Whether report-only mode lets a refusal of this request reach the app (an unknown
        API is enforced when only some APIs are in report-only)."""
        mode = self.report_only
        if mode is None:
            return False
        if mode.apis is None:
            return True
        match = self.routes.match(method, path.encode("utf-8") if isinstance(path, str) else path)
        return isinstance(match, RouteMatch) and mode.covers(match.route.api)

    async def probe(self, public: str) -> str | None:
        """Read the store once (at start-up): None if it answers, else why, for people."""
        try:
            # Opening may migrate the schema, under the store's own deadlines: not cut short.
            opening = getattr(self.store, "open", None)
            if opening is not None:
                await opening()
            await asyncio.wait_for(self.store.get_by_secret_hash("0" * 64), _PROBE_TIMEOUT)
        except TimeoutError:
            return (f"{public}: store: {self.store!r} did not answer within "
                    f"{_PROBE_TIMEOUT:g} s at start-up; check that it is up and reachable")
        except Exception as exc:
            return (f"{public}: store: {self.store!r} cannot be read at start-up: {exc}")
        return None

    def _query_token(self, query_string: bytes, header_token: str | None) -> str | Denial | None:
        values = values_of(query_string, "access_token")
        if not values:
            return header_token
        if not self.allow_query_token:
            return QUERY_TOKEN_OFF
        if len(set(values)) > 1 or (header_token is not None and header_token != values[0]):
            return TWO_TOKENS
        return values[0]


# RFC 6750 b64token characters: a header of "Bearer " and these is read without the slow path.
_B64TOKEN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="


def _with(what: RequestFacts | None, origin: str | None, referer: str | None
          ) -> RequestFacts | None:
    """The request's whole facts: what it reads, and its headers."""
    if what is None or (origin is None and referer is None):
        return what
    return what._replace(origin=origin, referer=referer)


def _bearer(value: bytes) -> str | Denial:
    if value[:7] == b"Bearer ":
        token = value[7:]
        if token and not token.translate(None, _B64TOKEN):
            return token.decode("ascii")
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return BAD_AUTHORIZATION
    token = rest.strip(b" \t")
    if not token or token.find(b" ") != -1 or token.find(b",") != -1:
        return BAD_AUTHORIZATION
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return BAD_AUTHORIZATION
