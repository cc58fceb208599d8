"""TokenGuardWSGI's written-out fast path decides, redacts and answers as the general one.

In process, over a real guard and a ``MemoryStore``: the redaction pre-test against
``redacted_query`` (hypothesis), the environ the app sees, the refusals remembered by
denial, and the loop thread: used on a cache miss only, its answer, exception, timeout and
cancellation.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters import wsgi
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core.decision import Denial
from token_guard.core.querystrings import may_hold_token, redacted_query
from token_guard.guard import default_deny_response
from token_guard.resolver import CacheSettings
from token_guard.stores import MemoryStore

TABLE = "/v3/maps/carto_dw/table"

# Pieces of query strings around the ways a name can read as access_token.
NAME_PARTS = ["access_token", "ACCESS_TOKEN", "aCcEss_tOkEn", "a%63cess_token", "access%5Ftoken",
              "%61ccess_token", "access_t%6Fken", "acc+ess_token", "+access_token", "access_",
              "token", "_t", "_T", "%", "%2", "%zz", "=", "&", "q", "name", "v", "tgk_",
              "\xe2\x84\xaa", "access_to\xe2\x84\xaaen", "\xff", ";", "?", "%20", "%3D", "%26"]


class Seen:
    """A WSGI app that remembers the environ it was called with and answers 200."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environ = dict(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def environ_for(path: str, query: str, headers: dict[str, str] | None = None
                ) -> dict[str, Any]:
    """The environ waitress builds (``REQUEST_URI`` the raw target)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "REQUEST_URI": f"{path}?{query}" if query else path, "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> Any:
        seen.append((status, headers))

    body = b"".join(app(environ, start_response))
    return seen[0][0], seen[0][1], body


@pytest.fixture
def guarded() -> Iterator[tuple[TokenGuardWSGI, Seen, str]]:
    seen = Seen()
    store = MemoryStore()
    guard = TokenGuardWSGI(seen, store=store, connections=CONNECTIONS)
    try:
        secret = guard.call(lambda: store.create_token(FULL)).token
        yield guard, seen, secret
    finally:
        guard.close()


# WSGI's query string: the latin-1 text of the request's bytes.
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=12)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(NAME_PARTS), LATIN1), max_size=8))
def test_the_pre_test_passes_every_query_string_redacted_query_would_change(
    parts: list[str],
) -> None:
    query = "".join(parts)
    if redacted_query(query.encode("latin-1")) is not None:
        assert wsgi._may_name_token(query), query


@pytest.mark.parametrize("query", [
    "access_token=SECRET", "ACCESS_TOKEN=SECRET", "aCcEss_tOkEn=SECRET&x=%20",
    "a%63cess_token=SECRET", "v=1&access%5Ftoken=SECRET", "+access_token=SECRET&q=%20",
    "q=SELECT%20a&access_token=SECRET", "access_token", "x=tgk_&access_to\xe2\x84\xaaen=SECRET",
    "name=proj.ds.stores&v=3.4", "q=%7B%22a%22%3A%201%7D&queryParameters=%7B%7D&v=3.4",
    "name=proj.ds.table_1&access=1", "name=SECRET%20x&token=1", "%zz=1", "a=1;b=2",
])
def test_the_environ_is_redacted_exactly_as_before(
    guarded: tuple[TokenGuardWSGI, Seen, str], query: str
) -> None:
    guard, seen, _ = guarded
    environ = environ_for("/health", query)
    environ["RAW_URI"] = environ["REQUEST_URI"]
    call(guard, environ)  # outside the prefix: passed, still redacted
    raw = query.encode("latin-1")
    redacted = redacted_query(raw) if may_hold_token(raw) else None
    expected = query if redacted is None else redacted.decode("latin-1")
    assert seen.environ is not None
    assert seen.environ["QUERY_STRING"] == expected
    assert seen.environ["REQUEST_URI"] == seen.environ["RAW_URI"] == f"/health?{expected}"
    assert ("SECRET" in expected) == ("SECRET" in query and redacted is None)


def test_a_warm_request_is_decided_without_the_loop_thread(
    guarded: tuple[TokenGuardWSGI, Seen, str],
) -> None:
    guard, seen, secret = guarded
    headers = {"Authorization": f"Bearer {secret}"}
    first = call(guard, environ_for(TABLE, "name=proj.ds.stores", headers))  # a miss
    assert first[0] == "200 OK"
    release = threading.Event()
    blocked = threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(30)

    # The loop thread, blocked: a request that hopped to it now would wait, then be 503.
    guard._loop.loop().call_soon_threadsafe(block)
    assert blocked.wait(5)
    try:
        for z in range(3):  # distinct requests of the cached token
            environ = environ_for(TABLE, f"name=proj.ds.stores&z={z}", headers)
            assert call(guard, environ)[0] == "200 OK"
            assert seen.environ is not None
            assert seen.environ[wsgi.ENVIRON_KEY].name == "full"
    finally:
        release.set()


def test_refusals_of_the_default_responder_are_remembered_and_each_answered_whole(
    guarded: tuple[TokenGuardWSGI, Seen, str],
) -> None:
    guard, seen, _ = guarded
    assert guard.guard.deny_response is default_deny_response
    answers = [call(guard, environ_for(TABLE, f"name=proj.ds.stores&z={z}")) for z in range(3)]
    assert seen.environ is None  # never reached the app
    status, headers, body = answers[0]
    assert status == "401 Unauthorized" and b"missing_token" in body
    assert all(answer == answers[0] for answer in answers)
    headers.append(("X-Changed", "by a server"))  # a server may extend the list it got
    assert call(guard, environ_for(TABLE, "name=proj.ds.stores"))[1] == answers[1][1]
    assert len(wsgi._RESPONSES) <= wsgi._RESPONSES_MEMO_SIZE


def test_an_applications_responder_runs_on_every_refusal() -> None:
    calls: list[Denial] = []

    def respond(denial: Denial) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        calls.append(denial)
        return denial.status, [(b"x-refusal", str(len(calls)).encode())], b"no"

    guard = TokenGuardWSGI(Seen(), store=MemoryStore(), connections=CONNECTIONS,
                           deny_response=respond)
    try:
        answers = [call(guard, environ_for(TABLE, "name=proj.ds.stores")) for _ in range(2)]
    finally:
        guard.close()
    assert [a[1] for a in answers] == [[("x-refusal", "1")], [("x-refusal", "2")]]
    assert answers[0][0] == "401 Unauthorized" and len(calls) == 2


def test_a_miss_with_the_store_down_is_503() -> None:
    class Down(MemoryStore):
        async def get_by_secret_hash(self, secret_hash: str) -> Any:
            raise ConnectionError("down")

    store = Down()
    guard = TokenGuardWSGI(Seen(), store=store, connections=CONNECTIONS,
                           cache=CacheSettings(lookup_timeout=1.0))
    try:
        secret = guard.call(lambda: store.create_token(FULL)).token
        environ = environ_for(TABLE, "name=proj.ds.stores", {"Authorization": f"Bearer {secret}"})
        status, _, body = call(guard, environ)
    finally:
        guard.close()
    assert status == "503 Service Unavailable" and b"store_unavailable" in body


class TestLoopHop:
    """``_run_on``: a coroutine on the guard's loop thread, from a request thread."""

    @pytest.fixture
    def loop(self) -> Iterator[asyncio.AbstractEventLoop]:
        async def nothing() -> None:
            return None

        thread = wsgi._LoopThread(nothing)
        try:
            yield thread.loop()
        finally:
            thread.stop()

    def test_answer(self, loop: asyncio.AbstractEventLoop) -> None:
        async def work() -> tuple[bool, int]:
            await asyncio.sleep(0)
            return asyncio.get_running_loop() is loop, threading.get_ident()

        on_loop, thread = wsgi._run_on(loop, work, 10.0)
        assert on_loop and thread != threading.get_ident()

    def test_exception(self, loop: asyncio.AbstractEventLoop) -> None:
        async def work() -> None:
            raise LookupError("from the store")

        with pytest.raises(LookupError, match="from the store"):
            wsgi._run_on(loop, work, 10.0)

    def test_timeout_cancels_the_work(self, loop: asyncio.AbstractEventLoop) -> None:
        cancelled = threading.Event()

        async def work() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(TimeoutError):
            wsgi._run_on(loop, work, 0.2)
        assert cancelled.wait(10)

    def test_cancelled_work(self, loop: asyncio.AbstractEventLoop) -> None:
        async def work() -> None:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)

        with pytest.raises(asyncio.CancelledError):
            wsgi._run_on(loop, work, 10.0)

    def test_closed_loop(self) -> None:
        loop = asyncio.new_event_loop()
        loop.close()

        async def work() -> None:
            return None

        with pytest.raises(asyncio.CancelledError):
            wsgi._run_on(loop, work, 10.0)
