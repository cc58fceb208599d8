"""Bodies are read as the application reads them: by Content-Type (token_guard.core.bodies)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from werkzeug.serving import make_server

from tests.servers import serve
from tests.tokens import CONNECTIONS
from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core.bodies import CONFLICTING_TYPES, one_content_type, parse_body
from token_guard.core.decision import Denial
from token_guard.stores.memory import MemoryStore

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        pytest.param(b'{"name": "a"}', "application/json", {"name": "a"}, id="json"),
        pytest.param(b'{"name": "a"}', "application/json; charset=UTF-8", {"name": "a"},
                     id="json-utf8"),
        pytest.param(b'{"name": "a"}', "application/vnd.carto+json", {"name": "a"},
                     id="plus-json"),
        pytest.param(b'{"name": "a"}', None, {"name": "a"}, id="no-type-as-json"),
        pytest.param(b'{"name": "a"}', "text/plain;charset=UTF-8", {"name": "a"},
                     id="fetch-string-body"),
        pytest.param(b"name=a+b&q=%C3%A9", FORM, {"name": "a b", "q": "é"}, id="form"),
        pytest.param(b"name=a&&x=", FORM, {"name": "a", "x": ""}, id="form-empty-parts"),
        pytest.param(b'{"name":"a","x":"&name=proj.ds.secret"}', FORM,
                     {'{"name":"a","x":"': "", 'name': 'proj.ds.secret"}'},
                     id="json-text-sent-as-form-is-a-form"),
        pytest.param(b"", FORM, None, id="empty-form"),
        pytest.param(b"  ", "application/json", None, id="empty-json"),
    ],
)
def test_body_is_read_by_its_content_type(
    raw: bytes, content_type: str | None, expected: Any
) -> None:
    assert parse_body(raw, content_type) == expected


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        pytest.param(b"name=a&name=b", FORM, 400, "malformed_request", id="form-twice"),
        pytest.param(b"name=a;name=b", FORM, 400, "malformed_request", id="form-semicolon"),
        pytest.param(b"name=%zz", FORM, 400, "malformed_request", id="form-bad-escape"),
        pytest.param(b"name=%ff", FORM, 400, "malformed_request", id="form-not-utf8"),
        pytest.param(b"--b\r\n", "multipart/form-data; boundary=b", 415,
                     "unsupported_media_type", id="multipart"),
        pytest.param(b'{"name":"a"}', "application/json; charset=utf-16", 415,
                     "unsupported_media_type", id="json-utf16"),
        pytest.param(b"name=a", f"{FORM}; charset=latin-1", 415, "unsupported_media_type",
                     id="form-latin1"),
        pytest.param(b'{"name":"a"}', CONFLICTING_TYPES, 400, "ambiguous_request",
                     id="two-types"),
        pytest.param(b'{"q": 1, "q": 2}', "application/json", 400, "malformed_request",
                     id="json-duplicate-key"),
        pytest.param(b"[1]", "application/json", 400, "malformed_request", id="json-array"),
        pytest.param(b"name=a", "application/json", 400, "malformed_request",
                     id="form-text-sent-as-json"),
    ],
)
def test_bodies_the_guard_cannot_read_alike_are_refused(
    raw: bytes, content_type: str, status: int, code: str
) -> None:
    refused = parse_body(raw, content_type)
    assert isinstance(refused, Denial)
    assert (refused.status, refused.code) == (status, code)


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    raw = b'{"q": "SELECT 1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused = parse_body(raw, "application/json")
    assert isinstance(refused, Denial) and refused.code == "malformed_request"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param(["application/json"], "application/json", id="one"),
        pytest.param(["application/json", "application/json"], "application/json",
                     id="repeated-equal"),
        pytest.param(["application/json", FORM], CONFLICTING_TYPES, id="two-asgi"),
        pytest.param([f"application/json, {FORM}"], CONFLICTING_TYPES, id="two-joined-wsgi"),
    ],
)
def test_one_content_type(values: list[str], expected: str | None) -> None:
    assert one_content_type(values) == expected


# -- end to end: what the app reads is what the guard checked ------------------------------
STORES_ONLY = {
    "name": "stores only",
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
    "referers": [],
    "allowed_apis": ["maps"],
}
SMUGGLE = b'{"name":"proj.ds.stores","x":"&name=proj.ds.secret"}'


async def starlette_table(request: Request) -> Response:
    kind = request.headers.get("content-type", "")
    if kind.startswith(FORM):
        form = await request.form()
        name = form.get("name")
    else:
        name = (await request.json()).get("name")
    return JSONResponse({"name": name})


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.post("/v3/maps/<conn>/table")
    def table(conn: str) -> Any:
        if request.is_json:
            return jsonify(name=(request.get_json() or {}).get("name"))
        return jsonify(name=request.values.get("name"))

    return app


@contextmanager
def servers(store: MemoryStore) -> Iterator[dict[str, str]]:
    asgi = TokenGuard(
        Starlette(routes=[Route("/v3/maps/{conn}/table", starlette_table, methods=["POST"])]),
        store=store, connections=CONNECTIONS,
    )
    wsgi_app = flask_app()
    guard = TokenGuardWSGI(wsgi_app.wsgi_app, store=store, connections=CONNECTIONS)
    wsgi_app.wsgi_app = guard  # type: ignore[method-assign]
    wsgi = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=wsgi.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        with serve(asgi) as server:
            yield {"asgi": server.url, "wsgi": f"http://127.0.0.1:{wsgi.server_port}"}
    finally:
        wsgi.shutdown()
        thread.join(5)
        guard.close()


@pytest.fixture(scope="module")
def secret_and_urls() -> Iterator[tuple[str, dict[str, str]]]:
    import asyncio

    store = MemoryStore()
    issued = asyncio.run(store.create_token(STORES_ONLY))
    with servers(store) as urls:
        yield issued.token, urls


def post(url: str, secret: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        url + "/v3/maps/carto_dw/table", content=body, timeout=10,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": content_type},
    )


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_json_smuggled_as_a_form_never_reads_the_secret_table(
    secret_and_urls: tuple[str, dict[str, str]], adapter: str
) -> None:
    secret, urls = secret_and_urls
    r = post(urls[adapter], secret, SMUGGLE, FORM)
    assert (r.status_code, r.json()["code"]) == (403, "source_not_granted"), r.text
    assert secret not in r.text


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"name=proj.ds.stores", FORM, id="form"),
        pytest.param(b'{"name": "proj.ds.stores"}', "application/json", id="json"),
    ],
)
def test_granted_source_in_either_body_type_reaches_the_app(
    secret_and_urls: tuple[str, dict[str, str]], adapter: str, body: bytes, content_type: str
) -> None:
    secret, urls = secret_and_urls
    r = post(urls[adapter], secret, body, content_type)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "proj.ds.stores"}


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_ungranted_source_in_a_form_is_refused(
    secret_and_urls: tuple[str, dict[str, str]], adapter: str
) -> None:
    secret, urls = secret_and_urls
    r = post(urls[adapter], secret, b"name=proj.ds.secret", FORM)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "source_not_granted"


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_multipart_on_a_source_route_is_415(
    secret_and_urls: tuple[str, dict[str, str]], adapter: str
) -> None:
    secret, urls = secret_and_urls
    files = {"name": (None, "proj.ds.secret")}
    r = httpx.post(urls[adapter] + "/v3/maps/carto_dw/table", files=files, timeout=10,
                   headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 415, r.text
    assert r.json()["code"] == "unsupported_media_type"
