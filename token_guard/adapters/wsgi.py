"""TokenGuardWSGI: the WSGI adapter (Flask, any WSGI app), making TokenGuard's decisions.

Usage::

    app = flask.Flask(__name__)
    app.wsgi_app = TokenGuardWSGI(app.wsgi_app, store=SQLiteStore("tokens.db"),
                                  connections={"carto_dw": "bigquery"})

Views find the resolved ``TokenRecord`` (never the secret) at ``environ["token_guard.token"]``:
``token_guard.current_token()`` reads it from ``flask.request`` (401 if the guard did not
run), ``token_guard.get_token(environ)`` from any WSGI environ.

It makes exactly the decisions of the ASGI ``TokenGuard`` (same ``Guard`` steps, same status
codes, JSON bodies and headers); its security choices are stated there. What is WSGI's own:

- **The raw path.** WSGI has only ``PATH_INFO``, already percent-decoded: ``%2F`` and
  ``%2e%2e`` are invisible in it. The guard classifies the raw request target the server
  passes as ``REQUEST_URI`` (waitress, werkzeug's dev server, uWSGI, mod_wsgi) or ``RAW_URI``
  (gunicorn, werkzeug) when it decodes to ``PATH_INFO`` or ``SCRIPT_NAME + PATH_INFO``: the
  same bytes, so the same decision, as ASGI's ``raw_path``. When it decodes to something
  else (waitress collapses a leading ``//``; a middleware rewrote ``PATH_INFO``), the raw
  target's refusal stands, and a request passes only if both the raw target and
  ``PATH_INFO`` are outside the prefix; otherwise it is 400. With no raw URI (``wsgiref``)
  the guard classifies ``PATH_INFO`` re-quoted, the path the app routes on: a ``%``, ``;``,
  ``\\``, space, control character, dot or empty segment in it is refused inside the
  prefix, as its encoded form would be; an encoded ``/`` it cannot see is judged as the
  ``/`` the app routes on. Python's ``http.server`` (werkzeug's dev server) itself rewrites
  a leading ``//`` to ``/`` before any WSGI code runs. Put the guard innermost (around
  ``app.wsgi_app``), so nothing rewrites the path after it decided.
- **Duplicated headers.** WSGI servers join a repeated header with ``,``: two different
  ``Authorization: Bearer`` headers are 400 ``ambiguous_request``, two different ``Origin`` or
  ``Referer`` headers count as conflicting (refused where websites are restricted), as in ASGI.
- **Bodies.** A body the decision reads is buffered (``CONTENT_LENGTH``, or to EOF when
  ``wsgi.input_terminated`` says the server dechunked it), refused with 413 above
  ``max_body_bytes`` before it is read, refused with 408 when it has not arrived within
  ``body_timeout`` seconds (checked between reads of ``_READ_CHUNK`` bytes; a single read
  blocks as long as the server's own socket timeout allows), and replayed intact to the app as a new
  ``wsgi.input`` with ``CONTENT_LENGTH`` set.
- **Threads.** A cache hit is decided synchronously in the request thread
  (``Resolver.lookup`` and ``note_used`` are thread-safe). A miss is resolved on one
  long-lived event loop in a daemon thread (a task scheduled with
  ``call_soon_threadsafe`` that releases the waiting request thread when done), so
  concurrent misses for a token share one store lookup and no request creates an event loop.
  The store is used only on that loop: reach it with
  ``guard.call(lambda: store.create_token(body))``. The loop starts on the first miss in each
  process, so a pre-forking server (gunicorn ``--preload``) is fine if the master served
  nothing before forking.
- **Shutdown.** ``close()`` (also run at interpreter exit) flushes usage, closes the store
  and stops the loop thread. Requests after it get 503. At exit it runs among threading's
  exit hooks, before ``concurrent.futures`` stops its worker threads (the SQLite store's
  among them), so the last usage records are written; ``atexit`` would run too late.
- **CORS.** Flask-CORS runs inside the Flask app, behind the guard, so it never sees a
  refusal made here: use ``token_guard.FlaskTokenGuard`` (it sends refusals through the
  app's ``after_request`` hooks, Flask-CORS's among them; see ``examples/flask_app.py``),
  or, for another WSGI framework, answer CORS in a WSGI middleware *around* the guard. A
  preflight passes through the guard untouched.
- **Logs.** ``access_token`` is redacted in place in ``QUERY_STRING``, ``REQUEST_URI`` and
  ``RAW_URI`` before the app or a refusal answers (gunicorn's access log and paste's
  TransLogger read them there); werkzeug's development server logs its own copy of the
  request line, so the ``werkzeug`` logger gets a ``logs.RedactTokens`` filter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # its exit hook must be registered before the guard's
import contextlib
import io
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar, Unpack
from urllib.parse import quote, unquote_to_bytes

from token_guard.adapters.asgi import SCOPE_KEY, get_token
from token_guard.core import decision as codes
from token_guard.core.bodies import one_content_type
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.policy import CompiledToken
from token_guard.core.querystrings import may_hold_token, redacted_query
from token_guard.core.records import TokenRecord
from token_guard.guard import (
    Awaiting,
    Guard,
    GuardOptions,
    ReadBody,
    body_timed_out,
    body_too_large,
    default_deny_response,
    one_origin,
    one_referer,
)
from token_guard.limiters import Admitted
from token_guard.logs import install_redaction
from token_guard.report_only import HEADER
from token_guard.resolver import UNAVAILABLE
from token_guard.stores.base import TokenReader

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from token_guard.config import ConfigSource

__all__ = ["ENVIRON_KEY", "TokenGuardWSGI", "current_token", "get_token"]

T = TypeVar("T")
log = logging.getLogger("token_guard")

ENVIRON_KEY = SCOPE_KEY
"""The environ key under which views find the resolved ``TokenRecord``."""

CLIENT_GONE = Denial(400, codes.MALFORMED_REQUEST, "The client went away.", "Retry.")
PATH_MISMATCH = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The request path does not match the path the application would route (PATH_INFO).",
    "Send the path as a client library builds it; if a middleware rewrites PATH_INFO, "
    "put TokenGuardWSGI inside it, around app.wsgi_app.",
)
BAD_LENGTH = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The Content-Length header is not a number of bytes.",
    "Send a valid Content-Length, or let the HTTP client set it.",
)

# RFC 3986 pchar minus ";" and "%": anything else in PATH_INFO is re-quoted, so the route
# classifier refuses it inside the prefix exactly as it refuses the encoded form.
_PCHAR_SAFE = "/!$&'()*+,=:@~"
# A comma followed by a URL scheme: where a server joined two Referer headers.
_READ_CHUNK = 64 * 1024


def current_token() -> TokenRecord:
    """The token record the guard resolved for the current Flask request (401 if none)."""
    from flask import request
    from werkzeug.exceptions import Unauthorized

    record = get_token(request.environ)
    if record is None:
        # The guard did not run for this request: a misconfiguration, never an anonymous pass.
        raise Unauthorized(
            "No API access token was checked for this request: wrap app.wsgi_app with "
            "TokenGuardWSGI and serve this view under its protected prefix."
        )
    return record


class TokenGuardWSGI:
    """Guards a WSGI app with API access tokens (options: see ``token_guard.guard.Guard``)."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        store: TokenReader | None = None,
        connections: Mapping[str, str | Connection] | None = None,
        config: ConfigSource | None = None,
        **options: Unpack[GuardOptions],
    ) -> None:
        from token_guard.config import build_guard

        self.app = app
        self.guard, _ = build_guard(
            "TokenGuardWSGI", store=store, connections=connections, config=config,
            options=options,
        )
        store = self.guard.store
        self._check = self.guard.check  # bound once: attribute chains cost at this size
        install_redaction("werkzeug")  # its dev server logs its own copy of the request line
        # The resolver bounds the store lookup itself; this margin only covers scheduling.
        self._resolve_wait = self.guard.resolver.settings.lookup_timeout + 5.0
        self._loop = _LoopThread(_starter(self.guard))
        self._closed = False
        # Runs at close() or at interpreter exit, whichever comes first; holds no ref to self.
        self._finalizer = weakref.finalize(
            self, self._loop.stop, self.guard.resolver.close, self.guard.limiter.close,
            *_closer(store)
        )
        _before_executors_stop(self._finalizer)

    def start(self) -> None:
        """Start the guard's loop now and read the store once; raise ``ConfigurationError``
        naming the store if it cannot answer. Call it in each worker process (gunicorn's
        ``post_fork``, before ``waitress.serve``), not in a parent that forks afterwards."""
        problem = self.call(lambda: self.guard.probe("TokenGuardWSGI"), timeout=60.0)
        if problem is not None:
            raise ConfigurationError(problem)

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the guard's event loop, where the store lives, and return its
        result (e.g. ``guard.call(lambda: store.create_token(body))``)."""
        return self._loop.call(factory, timeout)

    def close(self) -> None:
        """Flush usage, close the resolver and the store, and stop the loop thread."""
        self._closed = True
        self._finalizer()

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        # Written out for the common case: each call and each bytes method call here costs
        # hundreds of instructions a request, str's ``in`` a few dozen.
        get = environ.get
        try:  # servers set all three (PEP 3333 lets them omit an empty one)
            method: str = environ["REQUEST_METHOD"]
            query: str = environ["QUERY_STRING"]
            path_info: str = environ["PATH_INFO"]
        except KeyError:
            method, query = get("REQUEST_METHOD", "GET"), get("QUERY_STRING", "")
            path_info = get("PATH_INFO", "")
        query_string = query.encode("latin-1")
        # _raw_path(environ), written out for a raw URI that decodes to PATH_INFO unchanged.
        uri: str | None = get("REQUEST_URI") or get("RAW_URI")
        target = uri.partition("?")[0] if uri else ""
        app_path: bytes | None = None
        if target and target == path_info and target[0] == "/":
            raw_path = target.encode("latin-1")
        else:
            raw_path, app_path = _raw_path(environ)
        # _may_name_token's first tests written out: most query strings end there.
        if ((not query.isascii() or "%" in query or "_t" in query or "_T" in query)
                and _may_name_token(query) and may_hold_token(query_string)):
            _redact_environ(environ, query_string)
        if app_path is not None:
            checked = self._reconcile(method, raw_path, app_path)
            if isinstance(checked, Denial):
                return self._refuse(
                    environ, start_response,
                    self.guard.refused(method, _path(environ), query_string, checked),
                    method, raw_path,
                )
            raw_path = checked
        header: str | None = get("HTTP_AUTHORIZATION")
        if header is None:
            authorization, conflict = None, False
        elif "," in header:
            authorization, conflict = _authorization(header)
        else:
            authorization, conflict = header.encode("latin-1"), False
        origin: str | None = get("HTTP_ORIGIN")
        referer: str | None = get("HTTP_REFERER")
        step = self._check(
            method,
            raw_path,
            query_string,
            authorization,
            origin if origin is None or "," not in origin else one_origin(origin),
            referer if referer is None or "," not in referer else one_referer(referer),
            method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ,
            conflict,
        )
        while True:
            if isinstance(step, TokenRecord):
                environ[ENVIRON_KEY] = step
                return self.app(environ, start_response)
            if isinstance(step, Denial):
                return self._refuse(environ, start_response, step, method, raw_path)
            if isinstance(step, Admitted):  # a token with limits: RateLimit headers added
                environ[ENVIRON_KEY] = step.record
                return self.app(environ, _with_headers(start_response, step.headers))
            if isinstance(step, Awaiting):
                step = step.then(self._resolve(step.work))
            elif isinstance(step, ReadBody):
                raw = self._read_body(environ)
                if isinstance(raw, bytes):  # replayed to the app
                    environ["wsgi.input"] = io.BytesIO(raw)
                    environ["CONTENT_LENGTH"] = str(len(raw))
                    environ["wsgi.input_terminated"] = True
                content_type = environ.get("CONTENT_TYPE")
                step = step.then(raw, one_content_type([content_type] if content_type else []))
            else:
                return self.app(environ, start_response)

    def _reconcile(self, method: str, raw: bytes, app_path: bytes) -> bytes | Denial:
        """The raw URI disagrees with PATH_INFO (the server normalised it, or a middleware
        rewrote it): decide on the raw target as ASGI would, but only where that cannot
        let through a path the app would route inside the prefix."""
        routes = self.guard.routes
        raw_match = routes.match(method, raw)
        if isinstance(raw_match, Denial):
            return raw
        if raw_match is None and routes.match(method, app_path) is None:
            return raw
        return PATH_MISMATCH

    def _resolve(
        self, work: Callable[[], Awaitable[CompiledToken | Denial]]
    ) -> CompiledToken | Denial:
        """A cache miss: the resolver's single-flight lookup, on the loop thread."""
        if self._closed:
            # After close() no change events arrive, so a store answer could go stale.
            return UNAVAILABLE
        try:
            loop = self._loop.loop()
        except RuntimeError:
            return UNAVAILABLE  # closed
        try:
            return _run_on(loop, work, self._resolve_wait)
        except (TimeoutError, asyncio.CancelledError):
            return UNAVAILABLE  # no answer in time, or the loop is closing

    def _read_body(self, environ: WSGIEnvironment) -> bytes | Denial:
        limit = self.guard.max_body_bytes
        stream = environ.get("wsgi.input") or io.BytesIO()
        length_text = environ.get("CONTENT_LENGTH", "")
        if length_text:
            if not length_text.isdigit():
                return BAD_LENGTH
            length = int(length_text)
            if length > limit:
                return body_too_large(limit)
        elif environ.get("wsgi.input_terminated"):
            length = limit + 1  # read to EOF, one byte past the limit tells "too large"
        else:
            return b""  # WSGI: no length and no terminated stream means no readable body
        chunks: list[bytes] = []
        size = 0
        # One read blocks as long as the server lets it (its socket timeout); between reads
        # the deadline is checked, so a trickling sender is cut off at body_timeout.
        deadline = time.monotonic() + self.guard.body_timeout
        while size < length:
            chunk = stream.read(min(_READ_CHUNK, length - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size < length and time.monotonic() > deadline:
                if self.guard.report_only is not None:
                    environ["wsgi.input"] = _Unread(b"".join(chunks), stream)
                return body_timed_out(self.guard.body_timeout)
        if size > limit or (length_text and size < length):
            if self.guard.report_only is not None:
                # A refusal report-only may let through: the app reads what the client sent.
                environ["wsgi.input"] = _Unread(b"".join(chunks), stream)
            return body_too_large(limit) if size > limit else CLIENT_GONE
        return b"".join(chunks)

    def _refuse(
        self, environ: WSGIEnvironment, start_response: StartResponse, denial: Denial,
        method: str, path: bytes,
    ) -> Iterable[bytes]:
        """Answer the refusal, or (report-only) pass the request on as it came."""
        mode = self.guard.report_only
        if mode is None or not self.guard.lets_through(method, path):
            return self._respond(environ, start_response, denial)
        if not mode.header:
            return self.app(environ, start_response)
        extra = (HEADER.decode("latin-1"), denial.code)

        def starting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, extra], exc_info)

        return self.app(environ, starting)

    def _respond(
        self, environ: WSGIEnvironment, start_response: StartResponse, denial: Denial
    ) -> Iterable[bytes]:
        """Answer ``denial`` (the Flask extension sends it through the app's hooks)."""
        _, status_line, headers, body = self._response(denial)
        start_response(status_line, list(headers))
        return [body]

    def _response(self, denial: Denial) -> _Response:
        """``denial``'s status, status line, WSGI headers and body.

        The default responder's answer is a pure function of the denial, so it is
        remembered by the denial (its JSON body, headers and status line cost ~45 k
        instructions a refusal, ~2 k a request on the mixed workload); the memo holds at
        most ``_RESPONSES_MEMO_SIZE`` denials for all requests and is cleared when full. A
        responder of the application's own runs on every refusal.
        """
        remembered = self.guard.deny_response is default_deny_response
        if remembered:
            try:
                known = _RESPONSES.get(denial)
            except TypeError:  # a denial built with unhashable headers: not remembered
                known, remembered = None, False
            if known is not None:
                return known
        status, headers, body = self.guard.deny_response(denial)
        response = (
            status,
            _status_line(status),
            tuple([(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]),
            body,
        )
        if remembered:
            if len(_RESPONSES) >= _RESPONSES_MEMO_SIZE:
                _RESPONSES.clear()
            _RESPONSES[denial] = response
        return response


_Response = tuple[int, str, tuple[tuple[str, str], ...], bytes]
_RESPONSES_MEMO_SIZE = 1024
# Denial -> the default responder's answer, WSGI-ready (see TokenGuardWSGI._response). One
# for the process: the default responder's answer depends on the denial alone.
_RESPONSES: dict[Denial, _Response] = {}


def _with_headers(
    start_response: StartResponse, headers: list[tuple[bytes, bytes]]
) -> StartResponse:
    """``start_response`` that adds ``headers`` to the app's."""
    extra = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]

    def wrapped(status: str, response_headers: list[tuple[str, str]],
                exc_info: Any = None) -> Callable[[bytes], object]:
        return start_response(status, [*response_headers, *extra], exc_info)

    return wrapped


class _Unread(io.RawIOBase):
    """The bytes the guard already read, then the rest of the client's stream."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        data = self._head.read(size)
        if size < 0:
            return data + bytes(self._rest.read())
        if len(data) < size:
            data += bytes(self._rest.read(size - len(data)))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(-1 if size is None else size)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        more = -1 if size is None or size < 0 else size - len(line)
        return line + bytes(self._rest.readline(more))


def _starter(guard: Guard) -> Callable[[], Coroutine[Any, Any, None]]:
    """What the loop runs first in each process: the resolver, then one read of the store,
    whose failure is logged then (WSGI has no start-up to fail), not only as 503s."""

    async def start() -> None:
        await guard.resolver.start()
        problem = await guard.probe("TokenGuardWSGI")
        if problem is not None:
            log.error("%s", problem)

    return start


def _before_executors_stop(finalizer: weakref.finalize[Any, Any]) -> None:
    """Run ``finalizer`` at interpreter exit before ``concurrent.futures`` refuses work.

    ``concurrent.futures`` stops its executors from a ``threading`` exit hook, which runs
    before ``atexit``: a finalizer left to ``atexit`` finds the store's executor gone ("cannot
    schedule new futures after shutdown") and loses the last usage batch. Threading's hooks
    run newest first, so one registered after ``concurrent.futures.thread`` was imported
    runs before it. ``weakref.finalize`` still covers interpreters without the hook.
    """
    register: Callable[[Callable[[], object]], None] | None = getattr(
        threading, "_register_atexit", None
    )
    if register is None or concurrent.futures.thread._shutdown:
        return
    with contextlib.suppress(RuntimeError):  # the interpreter is already shutting down
        register(finalizer)


def _closer(store: TokenReader) -> tuple[Callable[[], Awaitable[None]], ...]:
    close = getattr(store, "close", None)
    return (close,) if callable(close) else ()


async def _run(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def _run_on(loop: asyncio.AbstractEventLoop, work: Callable[[], Awaitable[T]],
            timeout: float) -> T:
    """Run ``work()`` on ``loop`` (another thread's) and wait for its result: its exception
    is raised here; ``TimeoutError`` (the work cancelled) after ``timeout`` seconds;
    ``CancelledError`` if the loop cancelled it or closed before it ran.

    A cache miss's hop: one task that releases a lock when done, where
    ``run_coroutine_threadsafe`` chains a concurrent Future to the task through a done
    callback (one more turn of the loop) and waits on its Condition: ~80 k instructions a
    hop under callgrind instead of ~170 k.
    """
    done = threading.Lock()
    done.acquire()
    box: list[Any] = [None, _NOTHING, None]  # the task, its result, its exception
    coroutine = _signalling(work, box, done)
    try:
        loop.call_soon_threadsafe(loop.create_task, coroutine)
    except RuntimeError as exc:  # closed since loop() answered
        coroutine.close()
        raise asyncio.CancelledError from exc
    if not done.acquire(True, timeout):
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(_cancel, box)
        raise TimeoutError(f"no answer from the guard's loop within {timeout:g} s")
    if box[2] is not None:
        raise box[2]
    if box[1] is _NOTHING:  # closed (GeneratorExit) before it finished
        raise asyncio.CancelledError
    result: T = box[1]
    return result


_NOTHING = object()


async def _signalling(work: Callable[[], Awaitable[T]], box: list[Any],
                      done: threading.Lock) -> None:
    """``work()``'s result or exception into ``box``, then ``done`` released."""
    box[0] = asyncio.current_task()
    try:
        box[1] = await work()
    except (Exception, asyncio.CancelledError) as exc:  # raised in the waiting thread
        box[2] = exc
    finally:
        box[0] = None  # no cycle through the task
        done.release()


def _cancel(box: list[Any]) -> None:
    task = box[0]
    if task is not None:
        task.cancel()


class _LoopThread:
    """One event loop in a daemon thread, started on first use (again in a forked child)."""

    def __init__(self, on_start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._on_start = on_start
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started now if needed); RuntimeError once stopped."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._closed:
                raise RuntimeError("the token guard was closed")
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="token_guard-wsgi", daemon=True
                )
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
                # Subscribes to store changes and starts the usage flusher on this loop.
                asyncio.run_coroutine_threadsafe(self._on_start(), loop).result(30)
            assert self._loop is not None
            return self._loop

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        """Run ``factory()`` on the loop and wait for its result."""

        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self.loop()).result(timeout)

    def stop(self, *closers: Callable[[], Awaitable[None]]) -> None:
        """Await ``closers`` in order on the loop, cancel what is left, stop the thread."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or self._pid != os.getpid() or loop.is_closed():
            return

        async def shutdown() -> None:
            try:
                for close in closers:
                    await close()
            finally:
                current = asyncio.current_task()
                rest = [t for t in asyncio.all_tasks() if t is not current]
                for task in rest:
                    task.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            if not thread.is_alive():
                loop.close()


# A parameter name holding a % escape: "&" + the query string, searched (see _may_name_token).
_ESCAPED_NAME = re.compile(r"&[^=&%]*%")


def _may_name_token(query: str) -> bool:
    """False when no parameter name in ``query`` (WSGI's latin-1 text of the query string)
    can read as ``access_token``: then ``redacted_query`` would return None, so
    ``_redact_environ`` need not run.

    ``redacted_query`` redacts a parameter whose name, ``+`` read as a space and escapes
    decoded, holds ``access_token`` in any case. Without a ``%`` escape or a non-ASCII
    byte in the name, that is the name itself, lower-cased, and it holds ``_t`` or ``_T``;
    so a query string that is ASCII, whose names hold no ``%`` (most ``%`` are in values:
    a SQL text, JSON parameters) and that holds no ``_t``/``_T`` (or lower-cased, no
    ``access_token``) names no token. Three str scans and, only with a ``%``, one regular
    expression search: a fraction of ``may_hold_token``'s four bytes searches plus
    ``redacted_query``'s decoding of every name (~16 k instructions a request on the mixed
    workload before). If ``redacted_query`` ever redacts other names, this must follow.
    """
    if not query.isascii():
        return True
    if "%" in query and _ESCAPED_NAME.search("&" + query) is not None:
        return True
    return ("_t" in query or "_T" in query) and "access_token" in query.lower()


def _redact_environ(environ: WSGIEnvironment, query_string: bytes) -> None:
    """Redact ``access_token`` in place where servers log from: QUERY_STRING and the raw URI
    (gunicorn's access log reads ``RAW_URI``/``QUERY_STRING``, paste's TransLogger these)."""
    redacted = redacted_query(query_string)
    if redacted is None:
        return
    text = redacted.decode("latin-1")
    environ["QUERY_STRING"] = text
    for key in ("REQUEST_URI", "RAW_URI"):
        uri = environ.get(key)
        if isinstance(uri, str) and "?" in uri:
            environ[key] = f"{uri.partition('?')[0]}?{text}"


def _raw_path(environ: WSGIEnvironment) -> tuple[bytes, bytes | None]:
    """The raw path the app's PATH_INFO came from, and None; or, when the raw URI decodes
    to something else, the raw path and PATH_INFO re-quoted; or, with no raw URI, PATH_INFO
    re-quoted and None."""
    path_info: str = environ.get("PATH_INFO", "")
    uri: str | None = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri and uri.startswith("/"):
        raw = uri.partition("?")[0]
        if _decodes_to(raw, path_info):
            return raw.encode("latin-1"), None
        script: str = environ.get("SCRIPT_NAME", "")
        relative = _strip_script(raw, script) if script else None
        if relative is not None and _decodes_to(relative, path_info):
            return relative.encode("latin-1") or b"/", None
        return raw.encode("latin-1"), _quoted(path_info)
    return _quoted(path_info), None


def _decodes_to(raw: str, wsgi_path: str) -> bool:
    """True if the raw path, percent-decoded, is ``wsgi_path`` (a WSGI latin-1 string)."""
    if raw == wsgi_path:
        return True
    return "%" in raw and unquote_to_bytes(raw).decode("latin-1") == wsgi_path


def _quoted(wsgi_path: str) -> bytes:
    return quote(wsgi_path.encode("latin-1"), safe=_PCHAR_SAFE).encode("ascii") or b"/"


def _strip_script(raw: str, script: str) -> str | None:
    """``raw`` without the leading segments that decode to ``script``, or None."""
    end = 0
    while True:
        end = raw.find("/", end + 1)
        head = raw if end < 0 else raw[:end]
        if _decodes_to(head, script):
            return "" if end < 0 else raw[end:]
        if end < 0:
            return None


def _authorization(value: str | None) -> tuple[bytes | None, bool]:
    """The Authorization header as bytes, and whether it held two different credentials."""
    if value is None:
        return None, False
    raw = value.encode("latin-1")
    if raw.find(b",") == -1:
        return raw, False
    parts = [p.strip() for p in raw.split(b",")]
    # Only a join of whole credentials ("Bearer a,Bearer b") is a repeated header; anything
    # else stays one (malformed) header, as ASGI would see it.
    if any(b" " not in p for p in parts):
        return raw, False
    first = parts[0]
    return first, any(p != first for p in parts)


def _path(environ: WSGIEnvironment) -> str:
    return str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is not None:
        return line
    try:
        line = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        line = f"{status} Denied"
    if 100 <= status < 600:  # at most 500 lines
        _STATUS_LINES[status] = line
    return line
