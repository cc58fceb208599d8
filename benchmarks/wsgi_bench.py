"""Section 3: a Flask app bare and wrapped in TokenGuardWSGI, per request, in process.

Both apps are identical Flask apps; the wrapped one has ``app.wsgi_app = TokenGuardWSGI(...)``
(the documented setup). Each request is a fresh copy of a prebuilt environ, as a server
would pass, and the response iterable is consumed and closed.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Flask

from benchmarks.inprocess import CONNECTIONS, ORIGIN, TABLE_PATH, TABLE_QUERY, TOKEN_BODY
from benchmarks.instructions import check_statuses
from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import interleaved, median
from benchmarks.workloads import Request, take, workloads
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.stores.memory import MemoryStore

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

SECTION = "3. WSGI (Flask), in-process per request"


def flask_app() -> Flask:
    """The app both variants run: the table route answering ``ok``."""
    app = Flask("benchmark")

    @app.get("/v3/maps/<conn>/table")
    def table(conn: str) -> str:
        return "ok"

    @app.get("/v3/maps/<conn>/<endpoint>/<int:z>/<int:x>/<int:y>")
    def tile(conn: str, endpoint: str, z: int, x: int, y: int) -> str:
        return "ok"

    @app.get("/v3/sql/<conn>/query")
    def query(conn: str) -> str:
        return "ok"

    @app.get("/v3/lds/geocoding/geocode")
    def geocode() -> str:
        return "ok"

    return app


def mix_batch(app: WSGIApplication, stream: Iterator[Request], check: bool
              ) -> Callable[[int], float]:
    """A timing batch of the next ``n`` requests of the realistic mix (environs built first)."""

    def batch(n: int) -> float:
        requests = take(stream, n)
        environs = [r.environ() for r in requests]
        seen: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                           ) -> Any:
            seen.append(status)

        started = time.thread_time()
        for environ in environs:
            _consume(app(environ, start_response))
        elapsed = time.thread_time() - started
        if check:
            check_statuses(requests, [int(s[:3]) for s in seen])
        return elapsed

    return batch


def environ_for(token: str) -> dict[str, Any]:
    """A GET environ as waitress builds it (with REQUEST_URI, the raw target)."""
    query = TABLE_QUERY.decode("ascii")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": TABLE_PATH,
        "QUERY_STRING": query,
        "REQUEST_URI": f"{TABLE_PATH}?{query}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_ACCEPT": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ORIGIN": ORIGIN,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def respond(app: WSGIApplication, environ: dict[str, Any]) -> tuple[str, bytes]:
    """Status line and body of one request."""
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(status)

    body = _consume(app(dict(environ), start_response))
    return seen[0], body


def _consume(out: Iterable[bytes]) -> bytes:
    body = b"".join(out)
    close = getattr(out, "close", None)
    if close is not None:
        close()
    return body


def batch_of(app: WSGIApplication, environ: dict[str, Any]) -> Callable[[int], float]:
    """A timing batch: ``n`` requests (CPU time of this thread)."""

    def batch(n: int) -> float:
        started = time.thread_time()
        for _ in range(n):
            _consume(app(dict(environ), _start_response))
        return time.thread_time() - started

    return batch


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Bare vs wrapped Flask, interleaved; rows, the target and the guardrail."""
    bare = flask_app()
    wrapped = flask_app()
    store = MemoryStore()
    guard = TokenGuardWSGI(wrapped.wsgi_app, store=store, connections=CONNECTIONS)
    wrapped.wsgi_app = guard  # type: ignore[method-assign]
    try:
        token = guard.call(lambda: store.create_token(TOKEN_BODY)).token
        environ = environ_for(token)
        for name, app in (("bare", bare), ("wrapped", wrapped)):
            answer = respond(app, environ)
            if answer != ("200 OK", b"ok"):
                raise RuntimeError(f"the {name} Flask app answered {answer}, not 200 ok")
        mixed = workloads(mixed_tokens=50 if budget.mode == "smoke" else 1000)["mixed"]
        secrets = [guard.call(lambda b=plan.body: store.create_token(b)).token  # type: ignore[misc]
                   for plan in mixed.plans]
        for r in mixed.warmup(secrets):
            answer = respond(wrapped, r.environ())
            if answer[0] != "200 OK":
                raise RuntimeError(f"warm-up {r.target()} answered {answer}")
        samples = interleaved(
            {"bare": batch_of(bare, environ), "wrapped": batch_of(wrapped, environ),
             "mix/bare": mix_batch(bare, mixed.requests(secrets), False),
             "mix/wrapped": mix_batch(wrapped, mixed.requests(secrets), True)},
            rounds=budget.rounds, batch_seconds=budget.batch_seconds,
        )
    finally:
        guard.close()
    us = {name: median(s) * 1e6 for name, s in samples.items()}
    ratio = us["wrapped"] / us["bare"]
    mix_ratio = us["mix/wrapped"] / us["mix/bare"]
    rows = [
        Row(SECTION, "bare Flask: per request", us["bare"], "µs"),
        Row(SECTION, "Flask + TokenGuardWSGI: per request", us["wrapped"], "µs",
            "warm cache: token + API + table + origin"),
        Row(SECTION, "TokenGuardWSGI overhead over bare", us["wrapped"] - us["bare"], "µs"),
        Row(SECTION, "ratio: wrapped / bare", ratio, "x"),
        Row(SECTION, "realistic mix, bare Flask: per request", us["mix/bare"], "µs",
            "the mixed workload: 1,000 tokens, maps/sql/lds, ~5 % refusals, fresh requests"),
        Row(SECTION, "realistic mix, Flask + TokenGuardWSGI: per request", us["mix/wrapped"],
            "µs"),
        Row(SECTION, "realistic mix: ratio wrapped / bare", mix_ratio, "x"),
    ]
    return rows, [
        Threshold("Flask wrapped / bare per request", ratio, 1.10, True, "x"),
        Threshold("Flask wrapped / bare per request, realistic mix", mix_ratio, 1.10, True,
                  "x"),
        Threshold("Flask ratio <= 2.0", ratio, 2.0, True, "x"),
    ]
