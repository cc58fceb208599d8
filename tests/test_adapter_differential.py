"""Same request, same decision: TokenGuard (ASGI) and TokenGuardWSGI, driven in process over
generated requests (hypothesis), must answer every one with the same status and code.

The WSGI side gets the environ a server builds from the same bytes: repeated headers
joined with "," or ", " (as wsgiref, werkzeug and gunicorn do), ``PATH_INFO``
percent-decoded as latin-1, ``REQUEST_URI`` raw. Headers, paths, query strings, tokens
(with and without referers) and bodies vary; tables in test_transports.py pin the expected
answers, this test pins that the two adapters never disagree.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator, MutableMapping
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core.secret import new_secret
from token_guard.stores import MemoryStore

SITE = "https://app.example.com"


async def asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 ``{"code": "ok"}``."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"code": "ok"}'})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """The WSGI twin of ``asgi_app``."""
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"code": "ok"}']


class Pair:
    """Both adapters over one store, the ASGI one on its own event loop."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.loop = asyncio.new_event_loop()
        self.asgi = TokenGuard(asgi_app, store=self.store, connections=CONNECTIONS)
        self.wsgi = TokenGuardWSGI(wsgi_app, store=self.store, connections=CONNECTIONS)
        self.tokens = self.loop.run_until_complete(self._tokens())

    async def _tokens(self) -> dict[str, str]:
        plain = await self.store.create_token(FULL)
        site = await self.store.create_token(dict(FULL, name="site", referers=[SITE]))
        revoked = await self.store.create_token(FULL)
        await self.store.revoke_token(revoked.id)
        return {"plain": plain.token, "site": site.token, "revoked": revoked.token,
                "unknown": new_secret(), "malformed": "tgk_nope"}

    def close(self) -> None:
        self.loop.run_until_complete(self.asgi.guard.resolver.close())
        self.wsgi.close()
        self.loop.close()

    def via_asgi(self, method: str, raw: str, query: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, str]:
        scope = {
            "type": "http", "method": method, "root_path": "",
            "path": unquote(raw), "raw_path": raw.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.asgi(scope, receive, send))
        payload = b"".join(m.get("body", b"") for m in sent[1:])
        return int(sent[0]["status"]), json.loads(payload)["code"]

    def via_wsgi(self, method: str, raw: str, query: str, headers: list[tuple[str, str]],
                 body: bytes, joiner: str) -> tuple[int, str]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(raw).decode("latin-1"),
            "REQUEST_URI": raw + (f"?{query}" if query else ""), "QUERY_STRING": query,
            "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in headers:
            key = "HTTP_" + name.upper().replace("-", "_")
            if name.lower() == "content-type":
                key = "CONTENT_TYPE"
            environ[key] = f"{environ[key]}{joiner}{value}" if key in environ else value
        statuses: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
            statuses.append(status)
            return None

        payload = b"".join(self.wsgi(environ, start_response))
        return int(statuses[0].split()[0]), json.loads(payload)["code"]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """The two adapters for the module."""
    both = Pair()
    yield both
    both.close()


PATHS = [
    "/v3/maps/carto_dw/table", "/v3/sql/carto_dw/query", "/v3/lds/geocoding/geocode",
    "/v3/maps/carto_dw/table/1/2/3", "/v3/maps/other/table", "/v3/nothing", "/health",
    "/v3/maps/carto_dw/../table", "/v3//maps/carto_dw/table", "/v3/maps/carto%2Fdw/table",
    "/v3/maps/carto_dw/t%61ble", "/v3/sql/carto_dw/query%2F", "/v3/maps/carto_dw/table/",
]
QUERY_PARTS = [
    "name=proj.ds.stores", "name=proj.secret.t", "name=proj.shared.x", "name=",
    "q=" + quote("SELECT * FROM proj.ds.stores"), "q=" + quote("SELECT * FROM proj.secret.t"),
    "q=" + quote("DROP TABLE proj.ds.stores"), "v=3.4", "client=deck",
]
ORIGINS = [SITE, "https://evil.example.org", "null", "not a url", f"{SITE}, {SITE}",
           f"{SITE}, https://evil.example.org", "http://app.example.com"]
REFERERS = [f"{SITE}/map", "https://evil.example.org/x", f"{SITE}/a,b",
            f"{SITE}/a, https://evil.example.org/b", f"{SITE}/a, {SITE}/a", "garbage"]
BODIES = [b"", b'{"name": "proj.ds.stores"}', b'{"name": "proj.secret.t"}', b"not json",
          b'{"q": "SELECT * FROM proj.ds.stores"}']


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One request: method, raw path, query string, raw headers, body, WSGI join."""
    headers: list[tuple[str, str]] = []
    for kind in draw(st.lists(st.sampled_from(
        ["plain", "site", "revoked", "unknown", "malformed", "basic", "plain", "site"]
    ), max_size=2)):
        headers.append(("Authorization", "Basic eDp5" if kind == "basic" else f"Bearer {kind}"))
    headers += [("Origin", o) for o in draw(st.lists(st.sampled_from(ORIGINS), max_size=2))]
    headers += [("Referer", r) for r in draw(st.lists(st.sampled_from(REFERERS), max_size=2))]
    method = draw(st.sampled_from(["GET", "GET", "POST", "OPTIONS"]))
    body = draw(st.sampled_from(BODIES)) if method == "POST" else b""
    if method == "POST":
        headers.append(("Content-Type", "application/json"))
    if method == "OPTIONS" and draw(st.booleans()):
        headers.append(("Access-Control-Request-Method", "GET"))
    draw(st.randoms()).shuffle(headers)
    query = "&".join(draw(st.lists(st.sampled_from(QUERY_PARTS), max_size=3)))
    return {"method": method, "raw": draw(st.sampled_from(PATHS)), "query": query,
            "headers": headers, "body": body, "joiner": draw(st.sampled_from([",", ", "]))}


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_both_adapters_decide_every_request_alike(pair: Pair, request: dict[str, Any]) -> None:
    headers = [
        (name, f"Bearer {pair.tokens[value[7:]]}" if value.startswith("Bearer ") else value)
        for name, value in request["headers"]
    ]
    args = (request["method"], request["raw"], request["query"], headers, request["body"])
    asgi = pair.via_asgi(*args)
    wsgi = pair.via_wsgi(*args, request["joiner"])
    assert asgi == wsgi, (request, asgi, wsgi)


@pytest.mark.parametrize(
    ("token", "headers", "expected"),
    [
        pytest.param("plain", [("Referer", f"{SITE}/a, https://evil.example.org/b")],
                     (400, "ambiguous_request"), id="one-referer-joining-two-urls"),
        pytest.param("site", [("Referer", f"{SITE}/a,b")], (200, "ok"),
                     id="one-referer-with-a-comma-in-its-path"),
        pytest.param("plain", [("Origin", SITE), ("Origin", "https://evil.example.org")],
                     (400, "ambiguous_request"), id="two-origins-no-referers-still-refused"),
        pytest.param("plain", [("Origin", f"{SITE}, {SITE}")], (200, "ok"),
                     id="a-pair-of-equal-origins-is-one"),
    ],
)
def test_pinned_header_cases(
    pair: Pair, token: str, headers: list[tuple[str, str]], expected: tuple[int, str]
) -> None:
    full = [("Authorization", f"Bearer {pair.tokens[token]}"), *headers]
    args = ("GET", "/v3/maps/carto_dw/table", "name=proj.ds.stores", full, b"")
    assert pair.via_asgi(*args) == expected
    assert pair.via_wsgi(*args, ", ") == expected
