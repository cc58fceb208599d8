"""Request bodies and the guard: read only for a token worth it, within ``body_timeout``.

- a missing, malformed, unknown, revoked or expired token is refused before one body byte
  is read, by the ASGI and the WSGI adapter alike;
- a body that does not arrive within ``body_timeout`` gets 408 ``request_timeout``
  (in process for both adapters, and over real HTTP under uvicorn);
- many held large POSTs with a bad token cost uvicorn no buffered bodies, and the memory is
  back once the connections close.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.servers import serve
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core.decision import ERROR_CODES, REQUEST_TIMEOUT
from token_guard.core.errors import ConfigurationError
from token_guard.core.secret import new_secret
from token_guard.stores import MemoryStore

PATH = "/v3/maps/carto_dw/table"  # POST: the table name may travel in the JSON body
BODY = json.dumps({"name": "proj.ds.stores"}).encode()


async def asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """An app that reads the body and answers 200 with its length."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """The WSGI twin of ``asgi_app``."""
    size = len(environ["wsgi.input"].read())
    start_response("200 OK", [])
    return [str(size).encode()]


def make_tokens(store: MemoryStore) -> dict[str, str]:
    """Authorization values, one per way a token can be refused, plus a good one."""

    async def go() -> dict[str, str]:
        good = await store.create_token(FULL)
        revoked = await store.create_token(FULL)
        await store.revoke_token(revoked.id)
        soon = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        expired = await store.create_token(dict(FULL, expiration_date=soon))
        return {
            "good": f"Bearer {good.token}",
            "missing": "",
            "not bearer": "Basic dXNlcjpwYXNz",
            "malformed": "Bearer x",
            "unknown": f"Bearer {new_secret()}",
            "revoked": f"Bearer {revoked.token}",
            "expired": f"Bearer {expired.token}",
        }

    tokens = asyncio.run(go())
    time.sleep(0.4)  # past the expiry date
    return tokens


@pytest.fixture(scope="module")
def store_tokens() -> tuple[MemoryStore, dict[str, str]]:
    """One store and its tokens for the module (ASGI guards leave their store open)."""
    store = MemoryStore()
    return store, make_tokens(store)


@pytest.fixture
def own_store_tokens() -> tuple[MemoryStore, dict[str, str]]:
    """A store and its tokens for one WSGI guard (whose close() closes the store)."""
    store = MemoryStore()
    return store, make_tokens(store)


BAD = ["missing", "not bearer", "malformed", "unknown", "revoked", "expired"]


def asgi_call(
    guard: TokenGuard, authorization: str, receive: Any
) -> tuple[int, dict[str, Any]]:
    """Run one POST through ``guard`` in process; the status and the JSON body sent back."""
    headers = [(b"content-type", b"application/json")]
    if authorization:
        headers.append((b"authorization", authorization.encode()))
    scope = {"type": "http", "method": "POST", "path": PATH, "raw_path": PATH.encode(),
             "query_string": b"", "headers": headers, "root_path": ""}
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, (json.loads(payload) if status != 200 else {"size": int(payload)})


@pytest.mark.parametrize("kind", BAD)
def test_asgi_refuses_a_bad_token_before_reading_the_body(
    store_tokens: tuple[MemoryStore, dict[str, str]], kind: str
) -> None:
    store, tokens = store_tokens
    guard = TokenGuard(asgi_app, store=store, connections=CONNECTIONS)
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": BODY, "more_body": False}

    status, body = asgi_call(guard, tokens[kind], receive)
    assert status in (400, 401), body
    assert reads == 0, f"{kind}: the body was read before the token was refused"
    good_status, good = asgi_call(guard, tokens["good"], receive)
    assert (good_status, good, reads) == (200, {"size": len(BODY)}, 1)  # read once, replayed


class CountingInput(io.BytesIO):
    """A wsgi.input that counts the bytes read from it."""

    def __init__(self, data: bytes, pause: float = 0.0, chunk: int | None = None) -> None:
        super().__init__(data)
        self.bytes_read = 0
        self.pause = pause
        self.chunk = chunk

    def read(self, size: int | None = -1) -> bytes:
        if self.pause:
            time.sleep(self.pause)
        if self.chunk is not None and (size is None or size < 0 or size > self.chunk):
            size = self.chunk
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def wsgi_call(guard: TokenGuardWSGI, authorization: str, stream: io.BytesIO,
              length: int) -> tuple[int, bytes]:
    """Run one POST through ``guard`` in process; the status and the body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": PATH, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(length),
        "wsgi.input": stream, "SERVER_NAME": "test", "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
        statuses.append(status)
        return None

    body = b"".join(guard(environ, start_response))
    return int(statuses[0].split()[0]), body


def test_wsgi_refuses_a_bad_token_before_reading_the_body(
    own_store_tokens: tuple[MemoryStore, dict[str, str]],
) -> None:
    store, tokens = own_store_tokens
    guard = TokenGuardWSGI(wsgi_app, store=store, connections=CONNECTIONS)
    try:
        for kind in BAD:
            stream = CountingInput(BODY)
            status, _ = wsgi_call(guard, tokens[kind], stream, len(BODY))
            assert status in (400, 401), kind
            assert stream.bytes_read == 0, f"{kind}: the body was read before the refusal"
        good = CountingInput(BODY)
        assert wsgi_call(guard, tokens["good"], good, len(BODY)) == (200, str(len(BODY)).encode())
    finally:
        guard.close()


def test_request_timeout_is_a_registered_code() -> None:
    entry = ERROR_CODES[REQUEST_TIMEOUT]
    assert (entry.status, entry.guard) == (408, True)


@pytest.mark.parametrize("value", [0, -1, float("inf"), "10", True])
def test_a_bad_body_timeout_fails_at_start_up_naming_it(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="body_timeout"):
        TokenGuard(asgi_app, store=MemoryStore(), connections=CONNECTIONS, body_timeout=value)


def test_asgi_a_slow_body_gets_408(store_tokens: tuple[MemoryStore, dict[str, str]]) -> None:
    store, tokens = store_tokens
    guard = TokenGuard(asgi_app, store=store, connections=CONNECTIONS, body_timeout=0.2)
    parts = [BODY[:5], BODY[5:]]

    async def receive() -> dict[str, Any]:
        if len(parts) == 1:
            await asyncio.sleep(5)  # the rest of the body never comes in time
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    status, body = asgi_call(guard, tokens["good"], receive)
    assert (status, body["code"]) == (408, "request_timeout")
    assert "0.2 seconds" in body["error"] and body["hint"]


def test_wsgi_a_trickling_body_gets_408(
    own_store_tokens: tuple[MemoryStore, dict[str, str]],
) -> None:
    store, tokens = own_store_tokens
    guard = TokenGuardWSGI(wsgi_app, store=store, connections=CONNECTIONS, body_timeout=0.2)
    try:
        slow = CountingInput(BODY, pause=0.1, chunk=4)  # 4 bytes every 0.1 s
        status, body = wsgi_call(guard, tokens["good"], slow, len(BODY))
        assert (status, json.loads(body)["code"]) == (408, "request_timeout")
        assert slow.bytes_read < len(BODY)
    finally:
        guard.close()


@pytest.fixture
def uvicorn_guard(store_tokens: tuple[MemoryStore, dict[str, str]]) -> Iterator[int]:
    """A real uvicorn serving TokenGuard(asgi_app) with a short body_timeout; its port."""
    store, _ = store_tokens
    guard = TokenGuard(asgi_app, store=store, connections=CONNECTIONS, body_timeout=0.5)
    with serve(guard) as server:
        yield server.port


def _request_head(authorization: str, length: int) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: {authorization}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _status(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the whole response: the head, then as much body as its
    content-length says (a server may send them in separate writes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length is not None and len(body) < int(length[1]):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_uvicorn_a_slow_body_gets_408(
    uvicorn_guard: int, store_tokens: tuple[MemoryStore, dict[str, str]]
) -> None:
    _, tokens = store_tokens
    with socket.create_connection(("127.0.0.1", uvicorn_guard), timeout=10) as sock:
        sock.sendall(_request_head(tokens["good"], len(BODY)) + BODY[:5])  # and no more
        status, data = _status(sock)
    assert status == 408 and b"request_timeout" in data


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_held_large_posts_with_a_bad_token_buffer_nothing(uvicorn_guard: int) -> None:
    count, size = 200, 1024 * 1024
    payload = b"x" * size
    before = _rss_bytes()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", uvicorn_guard), timeout=10)
            socks.append(sock)
            sock.sendall(_request_head("Bearer x", size))
            sock.setblocking(False)
            sent = 0
            try:  # as much of the 1 MiB body as the server lets in; the rest is held
                while sent < size:
                    sent += sock.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
            sock.setblocking(True)
        for sock in socks:
            status, _ = _status(sock)
            assert status == 401
        held = _rss_bytes() - before
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.5)
    after = _rss_bytes() - before
    # Buffering the bodies would cost count * 1 MiB = 200 MiB; what uvicorn reads ahead
    # before pausing a connection is a few tens of KiB each.
    assert held < count * size / 4, f"{held / 2**20:.0f} MiB held by {count} refused POSTs"
    assert after < count * size / 4, f"{after / 2**20:.0f} MiB still held after closing"
