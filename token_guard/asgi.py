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
- A JSON body is read only when the route's source may travel in it, up to
  ``max_body_bytes`` (413 above), and replayed intact to the app.
- When the store cannot answer and nothing cached can decide, the answer is 503, never a pass.
- A refused websocket is closed with 1008 (policy violation) before ``accept``.

Handlers find the resolved ``TokenRecord`` (never the secret) at ``scope["token_guard.token"]``
(``token_guard.get_token(request.scope)``; FastAPI: ``Depends(token_guard.fastapi.api_token)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from time import time
from typing import Any, Unpack
from urllib.parse import unquote_to_bytes

from token_guard import decision as codes
from token_guard.bodies import one_content_type
from token_guard.connections import Connection
from token_guard.decision import Denial
from token_guard.facts import RequestFacts
from token_guard.guard import (
    CONFLICTING_HEADERS,
    PASS,
    Guard,
    GuardOptions,
    Pending,
    body_too_large,
)
from token_guard.records import TokenRecord
from token_guard.stores.base import TokenStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "token_guard.token"
"""The scope key under which handlers find the resolved ``TokenRecord``."""


def get_token(scope: Mapping[str, Any]) -> TokenRecord | None:
    """The token record TokenGuard resolved for this request (pass ``request.scope``)."""
    value = scope.get(SCOPE_KEY)
    return value if isinstance(value, TokenRecord) else None


class TokenGuard:
    """Guards an ASGI app with API access tokens (options: see ``token_guard.guard.Guard``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: TokenStore,
        connections: Mapping[str, str | Connection],
        **options: Unpack[GuardOptions],
    ) -> None:
        self.app = app
        self.guard = Guard(store=store, connections=connections, **options)
        # Bound once: attribute chains cost on a path this short.
        self._begin = self.guard.begin
        self._lookup = self.guard.resolver.lookup
        self._decide = self.guard.policy.decide
        self._note_used = self.guard.resolver.note_used

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self._lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        # The guarded path is written out here, not in a helper coroutine: one coroutine
        # layer less is measurable at this size.
        guard = self.guard
        authorization: bytes | None = None
        origin: str | None = None
        referer: str | None = None
        preflight = False
        conflict = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                conflict = conflict or (authorization is not None and authorization != value)
                authorization = value
            elif name == b"origin":
                text = value.decode("latin-1")
                origin = text if origin in (None, text) else CONFLICTING_HEADERS
            elif name == b"referer":
                text = value.decode("latin-1")
                referer = text if referer in (None, text) else CONFLICTING_HEADERS
            elif name == b"access-control-request-method":
                preflight = True
        method: str = scope.get("method", "GET")
        query_string: bytes = scope.get("query_string", b"")
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        if scope.get("root_path"):
            routed = route_path(scope, raw_path)
            if routed is None:
                await self._deny(scope, send, OUTSIDE_ROOT, None)
                return
            raw_path = routed
        pending = self._begin(
            method,
            raw_path,
            query_string,
            authorization,
            origin,
            referer,
            preflight,
            conflict,
        )
        if type(pending) is not Pending:
            if pending is PASS:
                await self.app(scope, receive, send)
            else:
                assert isinstance(pending, Denial)
                await self._deny(scope, send, pending, None)
            return
        assert isinstance(pending, Pending)  # for the type checker

        facts = pending.known
        if facts is None:
            read = await self._facts_from_body(scope, pending, receive)
            if isinstance(read, Denial):
                await self._deny(scope, send, read, None)
                return
            facts, receive = read
        compiled = self._lookup(pending.token)
        if compiled is None:
            compiled = await guard.resolver.resolve(pending.token)
        if isinstance(compiled, Denial):
            await self._deny(scope, send, compiled, None, facts)
            return
        denial = self._decide(compiled, facts, time())
        record = compiled.record
        if denial is not None:
            await self._deny(scope, send, denial, record.id, facts)
            return
        self._note_used(record.id)
        scope[SCOPE_KEY] = record
        if guard.on_decision is not None:
            guard.observe(method, scope.get("path", ""), query_string, facts, record)
        await self.app(scope, receive, send)

    async def _facts_from_body(
        self, scope: Scope, pending: Pending, receive: Receive
    ) -> tuple[RequestFacts, Receive] | Denial:
        """Read and replay the JSON body the route's source may travel in, then the facts."""
        guard = self.guard
        body = None
        if scope["type"] == "http":
            raw = await self._read_body(receive)
            if isinstance(raw, Denial):
                return raw
            receive = _replay(raw, receive)
            content_type = one_content_type(
                [v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"]
            )
            parsed = guard.parse_body(raw, content_type)
            if isinstance(parsed, Denial):
                return parsed
            body = parsed
        facts = guard.facts(pending, body)
        if isinstance(facts, Denial):
            return facts
        return facts, receive

    def _lifespan_receive(self, receive: Receive) -> Receive:
        resolver = self.guard.resolver

        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await resolver.close()
            return message

        return wrapped

    async def _read_body(self, receive: Receive) -> bytes | Denial:
        limit = self.guard.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return Denial(400, "malformed_request", "The client went away.", "Retry.")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return body_too_large(limit)
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        return b"".join(chunks)

    async def _deny(
        self,
        scope: Scope,
        send: Send,
        denial: Denial,
        token_id: str | None,
        facts: Any = None,
    ) -> None:
        guard = self.guard
        method = scope.get("method", "WEBSOCKET")
        guard.observe(method, scope.get("path", ""), scope.get("query_string", b""),
                      facts, denial, token_id)
        if scope["type"] == "websocket":
            # Closing before accept makes the server refuse the handshake (HTTP 403).
            await send(
                {"type": "websocket.close", "code": 1008, "reason": denial.message[:120]}
            )
            return
        status, headers, body = guard.deny_response(denial)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


OUTSIDE_ROOT = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The request path does not lie under the mount point the server gave (root_path).",
    "Send the request to a path under the application's mount point.",
)


def route_path(scope: Scope, raw_path: bytes) -> bytes | None:
    """The raw form of the path the app beneath routes: ``path`` minus ``root_path``.

    Starlette (``Mount``, FastAPI ``mount``) and uvicorn (``--root-path``) keep the mount
    point in ``path`` and ``raw_path``; the routers beneath match ``path`` minus
    ``root_path`` (Starlette's ``get_route_path``). None when the two cannot be reconciled:
    ``path`` not under ``root_path``, or a raw path that decodes to neither form.
    """
    path: str = scope["path"]
    root: str = scope["root_path"]
    if not path.startswith(root):
        return None
    rest = path[len(root):]
    if rest and rest[0] != "/":
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


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
