"""TokenGuard: the pure-ASGI middleware for Starlette and FastAPI.

Security choices, stated once:
- Inside the protected prefix (``/v3/`` by default) every request needs a token and a route
  the guard can classify; anything else is refused. Outside the prefix nothing is touched.
- A CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) carries no token and
  passes through untouched to the app's CORS layer. Put ``CORSMiddleware`` *outside*
  TokenGuard (added after it, so it wraps it) so browsers can read the guard's 401/403.
- The token comes from ``Authorization: Bearer`` (scheme case-insensitive). The
  ``access_token`` query parameter is refused unless ``allow_query_token=True``; two
  different tokens in one request are refused (400).
- The token is never logged, and ``access_token`` is redacted from every URL the guard logs.
  It is also redacted IN the scope (``query_string``, in place) before the app or a refusal
  answers: the server's access log (uvicorn's reads the same scope dict) prints
  ``access_token=REDACTED``. The guard reads the token first; the app beneath sees the
  redacted query string and finds the resolved token with ``get_token``.
- A body is read only when the route's source may travel in it, only after the token is
  resolved (a missing, malformed, unknown, revoked or expired token is refused first), up
  to ``max_body_bytes`` (413 above) and within ``body_timeout`` seconds (408 past it, so a
  slow sender cannot hold the request open); it is read by its Content-Type as the app reads it
  (``token_guard.core.bodies``) and replayed intact to the app.
- The path judged is the one the app beneath routes: ``path`` minus ``root_path``
  (``Mount``, FastAPI ``mount``, ``uvicorn --root-path``); see ``route_path``.
- The request's steps are the guard's (``token_guard.guard``); this adapter only reads
  headers, reads and replays the body, and writes the response.
- When the store cannot answer and nothing cached can decide, the answer is 503, never a pass.
- A refused websocket is closed with 1008 (policy violation) before ``accept``.
- ``report_only=`` (``token_guard.report_only``): a refusal is recorded and the request
  passed on unchanged (with ``X-Token-Guard-Would-Refuse: <code>`` if
  ``report_only_header=True``); a loud warning at start-up says nothing is enforced.

Handlers find the resolved ``TokenRecord`` (never the secret) at ``scope["token_guard.token"]``
(``token_guard.get_token(request.scope)``; FastAPI: ``token: token_guard.ApiToken``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from types import FrameType
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import unquote_to_bytes

from token_guard.core import decision as codes
from token_guard.core.bodies import one_content_type
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.querystrings import may_hold_token, plain_names, redacted_query
from token_guard.core.records import TokenRecord
from token_guard.guard import (
    Awaiting,
    GuardOptions,
    ReadBody,
    body_timed_out,
    body_too_large,
    one_origin,
    one_referer,
)
from token_guard.limiters import Admitted
from token_guard.report_only import HEADER
from token_guard.stores.base import TokenReader

if TYPE_CHECKING:
    from token_guard.config import ConfigSource

log = logging.getLogger("token_guard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "token_guard.token"
"""The scope key under which handlers find the resolved ``TokenRecord``."""


REDACTED_MEMO_SIZE = 4096
"""Query strings whose log redaction ``TokenGuard`` remembers; cleared when full."""
_REDACTED_MAX_QUERY = 512  # longer query strings are tested afresh every time


def get_token(scope: Mapping[str, Any]) -> TokenRecord | None:
    """The token record TokenGuard resolved for this request (pass ``request.scope``)."""
    value = scope.get(SCOPE_KEY)
    return value if isinstance(value, TokenRecord) else None


class TokenGuard:
    """Guards an ASGI app with API access tokens (options: see ``token_guard.guard.Guard``).

    ``config`` (a TOML file's path or ``tg.load_config(...)``) supplies ``store``,
    ``connections`` and options not given as keywords. A bad setting raises
    ``ConfigurationError`` here; when Starlette/FastAPI build the guard lazily (``Middleware``,
    ``add_middleware``), it fails the server's start-up instead (``MisconfiguredGuard``).
    At lifespan start-up the store is read once: one that cannot answer fails the start-up.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: TokenReader | None = None,
        connections: Mapping[str, str | Connection] | None = None,
        config: ConfigSource | None = None,
        **options: Unpack[GuardOptions],
    ) -> None:
        from token_guard.config import build_guard

        self.app = app
        try:
            self.guard, self._owns_store = build_guard(
                "TokenGuard", store=store, connections=connections, config=config,
                options=options,
            )
        except ConfigurationError as exc:
            if not _built_by_starlette():
                raise
            # Starlette builds its middleware stack inside its first __call__ (the lifespan
            # scope), where uvicorn's lifespan "auto" mode swallows an exception and serves
            # 500s; this instance fails the start-up instead, saying why.
            self.__class__ = MisconfiguredGuard
            self.problem = str(exc)
            log.error("%s", self.problem)
            return
        self._check = self.guard.check  # bound once: attribute chains cost at this size
        # query string -> its redacted form, or None when nothing is redacted (bounded)
        self._redacted: dict[bytes, bytes | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        named = dict(headers)  # one C call; the loop below only when a name repeats
        if len(named) == len(headers):
            authorization = named.get(b"authorization")
            found = named.get(b"origin")
            origin = None if found is None else found.decode("latin-1")
            found = named.get(b"referer")
            referer = None if found is None else found.decode("latin-1")
            # A value with a comma is read as WSGI reads a server-joined pair: same decision.
            if origin is not None and "," in origin:
                origin = one_origin(origin)
            if referer is not None and "," in referer:
                referer = one_referer(referer)
            preflight = False
            conflict = False
        else:
            authorization, origin, referer, preflight, conflict = _read_headers(headers)
        method: str = scope.get("method", "GET")
        if method == "OPTIONS" and not preflight:
            preflight = b"access-control-request-method" in named
        query_string: bytes = scope.get("query_string", b"")
        # What the server's log must print instead of this query string (None: itself),
        # remembered per query string without escapes (a map's table tiles send one again
        # and again; escaped ones carry SQL and bound values, new on most requests).
        redacted = self._redacted.get(query_string, query_string)
        names_plain: bool | None = None  # plain_names(query_string), when asked here
        if redacted is query_string:
            names_plain = plain_names(query_string)
            redacted = (None if names_plain or not may_hold_token(query_string)
                        else redacted_query(query_string))
            if len(query_string) <= _REDACTED_MAX_QUERY and query_string.find(b"%") == -1:
                if len(self._redacted) >= REDACTED_MEMO_SIZE:
                    self._redacted.clear()
                self._redacted[query_string] = redacted
        if redacted is not None:
            scope["query_string"] = redacted  # in place: the server logs this dict
        # served_raw_path(scope), written out for the common case (the call costs ~400
        # instructions a request): only a mounted app or a differing raw path needs it.
        path: str = scope["path"]
        encoded = path.encode("utf-8")
        raw_path: bytes | None = scope.get("raw_path") or encoded
        if raw_path != encoded or scope.get("root_path"):
            raw_path = served_raw_path(scope)
        if raw_path is None:
            denial = OUTSIDE_ROOT if scope.get("root_path") else PATH_MISMATCH
            await self._refuse(scope, receive, send, self.guard.refused(
                method, scope["path"], query_string, denial
            ), method, scope["path"])
            return
        step = self._check(
            method,
            raw_path,
            query_string,
            authorization,
            origin,
            referer,
            preflight,
            conflict,
            names_plain,
        )
        while True:
            if isinstance(step, TokenRecord):
                scope[SCOPE_KEY] = step
                await self.app(scope, receive, send)
                return
            if isinstance(step, Denial):
                await self._refuse(scope, receive, send, step, method, raw_path)
                return
            if isinstance(step, Admitted):  # a token with limits: RateLimit headers added
                scope[SCOPE_KEY] = step.record
                await self.app(scope, receive, _with_headers(send, step.headers))
                return
            if isinstance(step, Awaiting):
                step = step.then(await step.work())
            elif isinstance(step, ReadBody):
                seen: list[Message] = []
                raw = await self._read_body(receive, seen) if scope["type"] == "http" else b""
                if isinstance(raw, bytes):
                    receive = _replay(raw, receive)
                elif self.guard.report_only is not None:
                    # A refusal report-only may let through: the app gets what was read.
                    receive = _replay_messages(seen, receive)
                step = step.then(raw, one_content_type(
                    [v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"]
                ))
            else:
                await self.app(scope, receive, send)
                return

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the store once at start-up (failing the start-up if it cannot answer), then
        run the app's lifespan; close the resolver (and a store opened from ``config``) at
        shutdown."""
        first = await receive()
        if first.get("type") == "lifespan.startup":
            problem = await self.guard.probe("TokenGuard")
            if problem is not None:
                await send({"type": "lifespan.startup.failed", "message": problem})
                return
        resolver = self.guard.resolver
        limiter = self.guard.limiter
        store = self.guard.store if self._owns_store else None
        pending: Message | None = first

        async def wrapped() -> Message:
            nonlocal pending
            if pending is not None:
                message, pending = pending, None
            else:
                message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await resolver.close()
                await limiter.close()
                close = getattr(store, "close", None)
                if close is not None:
                    await close()
            return message

        await self.app(scope, wrapped, send)

    async def _read_body(self, receive: Receive, seen: list[Message]) -> bytes | Denial:
        try:
            async with asyncio.timeout(self.guard.body_timeout):
                return await self._read_chunks(receive, seen)
        except TimeoutError:
            return body_timed_out(self.guard.body_timeout)

    async def _read_chunks(self, receive: Receive, seen: list[Message]) -> bytes | Denial:
        limit = self.guard.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            seen.append(message)
            if message["type"] != "http.request":
                return Denial(400, "malformed_request", "The client went away.", "Retry.")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return body_too_large(limit)
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        return b"".join(chunks)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, denial: Denial, method: str,
        path: bytes | str,
    ) -> None:
        """Answer the refusal, or (report-only) pass the request on as it came."""
        mode = self.guard.report_only
        if mode is None or not self.guard.lets_through(method, path):
            await self._respond(scope, send, denial)
            return
        if mode.header and scope["type"] == "http":
            send = _with_header(send, (HEADER, denial.code.encode("ascii")))
        await self.app(scope, receive, send)

    async def _respond(self, scope: Scope, send: Send, denial: Denial) -> None:
        if scope["type"] == "websocket":
            # Closing before accept makes the server refuse the handshake (HTTP 403).
            await send(
                {"type": "websocket.close", "code": 1008, "reason": denial.message[:120]}
            )
            return
        status, headers, body = self.guard.deny_response(denial)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class MisconfiguredGuard(TokenGuard):
    """A ``TokenGuard`` Starlette built lazily with bad settings: it fails the lifespan
    start-up with the message naming the setting (uvicorn exits), and refuses every request
    with a 500 saying the same, never passing one."""

    problem: str

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": self.problem})
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1011, "reason": "misconfigured"})
            return
        body = json.dumps({
            "error": f"token_guard is misconfigured: {self.problem}",
            "hint": "Fix the setting the message names and restart the server.",
            "code": codes.INTERNAL_ERROR,
        }).encode("utf-8")
        await send({"type": "http.response.start", "status": 500, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _built_by_starlette() -> bool:
    """Whether Starlette's (or FastAPI's) ``build_middleware_stack`` is constructing us:
    the lazy forms ``Middleware(TokenGuard, ...)`` and ``app.add_middleware(TokenGuard, ...)``."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        module = str(frame.f_globals.get("__name__", ""))
        if frame.f_code.co_name == "build_middleware_stack" and module.split(".")[0] in (
            "starlette", "fastapi",
        ):
            return True
        frame = frame.f_back
    return False


def _read_headers(
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes | None, str | None, str | None, bool, bool]:
    """Authorization, Origin, Referer, preflight and two-Authorizations, header by header
    (Authorization sent twice: equal values are one, different ones a conflict)."""
    authorization: bytes | None = None
    origin: str | None = None
    referer: str | None = None
    preflight = False
    conflict = False
    for name, value in headers:
        if name == b"authorization":
            conflict = conflict or (authorization is not None and authorization != value)
            authorization = value
        elif name == b"origin":
            text = value.decode("latin-1")
            origin = text if origin is None else f"{origin},{text}"
        elif name == b"referer":
            text = value.decode("latin-1")
            referer = text if referer is None else f"{referer},{text}"
        elif name == b"access-control-request-method":
            preflight = True
    # Repeated Origin/Referer headers are read as a WSGI server hands them over (joined with
    # ","), so both adapters decide alike: see ``guard.one_origin`` / ``guard.one_referer``.
    if origin is not None and "," in origin:
        origin = one_origin(origin)
    if referer is not None and "," in referer:
        referer = one_referer(referer)
    return authorization, origin, referer, preflight, conflict


OUTSIDE_ROOT = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The request path does not lie under the mount point the server gave (root_path).",
    "Send the request to a path under the application's mount point.",
)

PATH_MISMATCH = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The request path does not match the path the application would route (raw_path).",
    "Send the path as a client library builds it; if a middleware rewrites the ASGI "
    "scope's path, set raw_path too, or put TokenGuard inside it.",
)


def served_raw_path(scope: Scope) -> bytes | None:
    """The raw form of the path the app beneath routes, or None when ``raw_path`` and
    ``path`` (minus ``root_path``) cannot be reconciled: a middleware outside that rewrote
    ``path`` alone would otherwise get its new path served on the old one's decision."""
    path: str = scope["path"]
    raw_path: bytes = scope.get("raw_path") or path.encode("utf-8")
    if scope.get("root_path") or raw_path != path.encode("utf-8"):
        return route_path(scope, raw_path)
    return raw_path


def route_path(scope: Scope, raw_path: bytes) -> bytes | None:
    """The raw form of the path the app beneath routes: ``path`` minus ``root_path``.

    Starlette (``Mount``, FastAPI ``mount``) and uvicorn (``--root-path``) keep the mount
    point in ``path`` and ``raw_path``; the routers beneath match ``path`` minus
    ``root_path`` (Starlette's ``get_route_path``). None when the two cannot be reconciled:
    ``path`` not under ``root_path``, or a raw path that decodes to neither form.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not path.startswith(root):
        return None
    rest = path[len(root):]
    if root and rest and rest[0] != "/":
        # Starlette routes the whole path then ("/api" + "v3/..." is not under "/api").
        return raw_path
    encoded = root.encode("utf-8")
    if raw_path.startswith(encoded) and raw_path[len(encoded):len(encoded) + 1] in (b"/", b""):
        stripped = raw_path[len(encoded):]
    else:
        # The mount point arrived percent-encoded: drop the raw segments that decode to it.
        count = root.count("/")
        segments = raw_path.split(b"/")
        head = b"/".join(segments[: count + 1])
        if count < len(segments) and _unquote(head) == root:
            stripped = raw_path[len(head):]
        elif _unquote(raw_path) == rest:
            stripped = raw_path  # a server that leaves the mount point out of raw_path
        else:
            return None
    if _unquote(stripped) != rest:
        return None
    return stripped


def _unquote(raw: bytes) -> str:
    # As uvicorn decodes the path: %-escapes as UTF-8, undecodable bytes replaced.
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send`` with ``headers`` added to the response start (an http response only)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return wrapped


def _with_header(send: Send, header: tuple[bytes, bytes]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return sending


def _replay_messages(seen: list[Message], receive: Receive) -> Receive:
    pending = list(seen)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
