"""Real servers for tests, each on a free loopback port in a background thread: uvicorn
(ASGI), and waitress, werkzeug or wsgiref (WSGI, threaded); and a raw HTTP client.

waitress and werkzeug pass the raw request target (``REQUEST_URI``); ``wsgiref`` does not,
so it exercises the guard's PATH_INFO fallback. ``send`` goes through ``http.client`` so a
path reaches the server exactly as written (no client-side normalisation).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import socketserver
import threading
import time
import wsgiref.simple_server
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import uvicorn
import waitress
from werkzeug.serving import make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

T = TypeVar("T")
ServerKind = Literal["waitress", "werkzeug", "wsgiref"]


def interruptible() -> None:
    """``preexec_fn`` for a server process a test stops with Ctrl-C (SIGINT): SIGINT as a
    terminal's foreground job has it.

    A shell without job control (a script's ``cmd &``, some CI runners) starts a background
    job with SIGINT ignored, and its children inherit that; Python then installs no
    ``KeyboardInterrupt`` handler, so waitress, which relies on it, never stops and the test
    waits out its timeout (uvicorn installs its own handler and stops either way).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` in its own thread and event loop, until ``stop``."""

    def __init__(
        self, app: Any, *, port: int | None = None, ws: str = "auto", root_path: str = ""
    ) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", ws=ws,
            root_path=root_path,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> None:
        """Start serving and wait until the port accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        """Run a coroutine on the server's loop (where the store and cache live)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(15)


@contextmanager
def serve(app: Any, **kwargs: Any) -> Iterator[ServerThread]:
    """Serve ``app`` with uvicorn on loopback for the duration of the block."""
    server = ServerThread(app, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- WSGI servers -----------------------------------------------------------------------
class _ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class WSGIServer:
    """A threaded WSGI server on a loopback port, running in a daemon thread."""

    port: int
    stop: Any

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serve_wsgi(
    app: WSGIApplication, kind: ServerKind = "waitress", url_prefix: str = ""
) -> Iterator[WSGIServer]:
    """Serve ``app`` with a threaded ``kind`` server on a free loopback port for the block."""
    if kind == "waitress":
        server: Any = waitress.create_server(
            app, host="127.0.0.1", port=0, threads=8, url_prefix=url_prefix,
            clear_untrusted_proxy_headers=True,
        )
        port = int(server.effective_port)
        stopping = threading.Event()

        def run() -> None:
            # Poll in short rounds and close from this thread: closing the sockets from
            # another thread while it sits in select() raises EBADF there.
            while not stopping.is_set():
                server.asyncore.loop(timeout=0.05, map=server._map, count=1)
            server.close()

        stop = stopping.set
    elif kind == "werkzeug":
        server = make_server("127.0.0.1", 0, app, threaded=True)
        port = int(server.server_port)
        run, stop = partial(server.serve_forever, poll_interval=0.05), server.shutdown
    else:
        server = _ThreadingWSGIServer(("127.0.0.1", 0), _QuietHandler)
        server.set_app(app)
        port = int(server.server_port)
        run, stop = partial(server.serve_forever, poll_interval=0.05), server.shutdown
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield WSGIServer(port, stop)
    finally:
        stop()
        thread.join(5)


# -- a raw HTTP client -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    """A response as received: status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def send(
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> Reply:
    """One HTTP/1.1 request with ``path`` sent verbatim; repeated headers stay repeated."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            data = body or b""
            for i in range(0, len(data), 1000):
                piece = data[i : i + 1000]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        response = conn.getresponse()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def bearer(token: str) -> list[tuple[str, str]]:
    """The Authorization header for ``token``."""
    return [("Authorization", f"Bearer {token}")]
