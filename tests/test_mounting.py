"""The guard classifies exactly the path the app beneath it routes, in every mounting form.

Over real HTTP (uvicorn on loopback) through Starlette's and FastAPI's real routers: a guard
inside ``Mount("/api", ...)``, inside a FastAPI sub-app mounted at ``/api``, and under
``uvicorn --root-path /api``; then the reconciliation of ``path``, ``root_path`` and
``raw_path`` on hand-built scopes, where servers differ.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

import token_guard as tg
from tests.servers import ServerThread, serve
from tests.tokens import CONNECTIONS
from token_guard.adapters.asgi import TokenGuard, get_token, route_path
from token_guard.stores.memory import MemoryStore

ALLOWED = {
    "name": "allowed table only",
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.allowed"}],
    "referers": [],
    "allowed_apis": ["maps"],
}
SECRET_URL = "/v3/maps/carto_dw/table?name=proj.ds.secret"
ALLOWED_URL = "/v3/maps/carto_dw/table?name=proj.ds.allowed"


async def table(request: Request) -> Response:
    token = get_token(request.scope)
    return JSONResponse({"token": token.name if token else None})


async def health(request: Request) -> Response:
    return PlainTextResponse("open")


def inner() -> Starlette:
    return Starlette(
        routes=[Route("/v3/maps/{conn}/table", table), Route("/health", health)]
    )


def guard(app: Any, store: MemoryStore, **options: Any) -> TokenGuard:
    return TokenGuard(app, store=store, connections=CONNECTIONS, **options)


def starlette_mount(store: MemoryStore) -> Any:
    """``Starlette(routes=[Mount("/api", app=TokenGuard(inner))])``."""
    return Starlette(routes=[Mount("/api", app=guard(inner(), store))])


def fastapi_mount(store: MemoryStore) -> Any:
    """A FastAPI sub-app with the guard added, mounted at ``/api`` on the main app."""
    sub = FastAPI()

    @sub.get("/v3/maps/{conn}/table")
    async def sub_table(request: Request) -> dict[str, Any]:
        token = get_token(request.scope)
        return {"token": token.name if token else None}

    @sub.get("/health")
    async def sub_health() -> str:
        return "open"

    sub.add_middleware(TokenGuard, store=store, connections=CONNECTIONS)
    main = FastAPI()
    main.mount("/api", sub)
    return main


def nested_mounts(store: MemoryStore) -> Any:
    """Two levels: ``Mount("/api", Mount("/geo", TokenGuard(inner)))``."""
    return Starlette(
        routes=[Mount("/api", routes=[Mount("/geo", app=guard(inner(), store))])]
    )


MOUNTED: list[Any] = [
    pytest.param(starlette_mount, "/api", id="starlette-Mount"),
    pytest.param(fastapi_mount, "/api", id="fastapi-mount"),
    pytest.param(nested_mounts, "/api/geo", id="nested-Mount"),
]


def get(server: ServerThread, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.url + path, headers=headers, timeout=10)


@pytest.mark.parametrize(("factory", "base"), MOUNTED)
def test_mounted_guard_refuses_without_token(
    factory: Callable[[MemoryStore], Any], base: str
) -> None:
    store = MemoryStore()
    with serve(factory(store)) as server:
        r = get(server, base + SECRET_URL)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "missing_token"


@pytest.mark.parametrize(("factory", "base"), MOUNTED)
def test_mounted_guard_checks_grants_and_passes_outside_prefix(
    factory: Callable[[MemoryStore], Any], base: str
) -> None:
    store = MemoryStore()
    with serve(factory(store)) as server:
        issued = server.call(lambda: store.create_token(ALLOWED))
        allowed = get(server, base + ALLOWED_URL, issued.token)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json() == {"token": "allowed table only"}
        secret = get(server, base + SECRET_URL, issued.token)
        assert secret.status_code == 403, secret.text
        assert secret.json()["code"] == "source_not_granted"
        assert get(server, base + "/health").status_code == 200


@pytest.mark.parametrize(("factory", "base"), MOUNTED)
@pytest.mark.parametrize(
    ("trick", "status", "code"),
    [
        pytest.param("/v3/maps/carto_dw/%74able?name=proj.ds.secret", 401, "missing_token",
                     id="encoded-letter"),
        pytest.param("/V3/maps/carto_dw/table?name=proj.ds.secret", 403, "unknown_route",
                     id="upper-prefix"),
        pytest.param("/v3/maps/carto_dw/table/?name=proj.ds.secret", 400, "malformed_request",
                     id="trailing-slash"),
        pytest.param("/v3;x/maps/carto_dw/table?name=proj.ds.secret", 400, "malformed_request",
                     id="matrix-param"),
    ],
)
def test_path_tricks_under_a_mount_never_pass(
    factory: Callable[[MemoryStore], Any], base: str, trick: str, status: int, code: str
) -> None:
    store = MemoryStore()
    with serve(factory(store)) as server:
        r = get(server, base + trick)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text


def test_uvicorn_root_path() -> None:
    """``uvicorn --root-path /api`` behind a proxy that strips ``/api``: the app routes
    ``/v3/...``, and so does the guard."""
    store = MemoryStore()
    with serve(guard(inner(), store), root_path="/api") as server:
        r = get(server, SECRET_URL)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "missing_token"
        issued = server.call(lambda: store.create_token(ALLOWED))
        assert get(server, ALLOWED_URL, issued.token).status_code == 200
        denied = get(server, SECRET_URL, issued.token)
        assert denied.status_code == 403
        assert denied.json()["code"] == "source_not_granted"
        assert get(server, "/health").text == "open"


def test_prefix_is_relative_to_the_mount_point() -> None:
    store = MemoryStore()
    app = Starlette(
        routes=[Mount("/api", app=guard(
            Starlette(routes=[Route("/data/maps/{conn}/table", table)]), store,
            prefix="/data/",
            routes=[tg.Route("maps", "/data/maps/{connection}/table", source_param="name")],
            include_default_routes=False,
        ))]
    )
    with serve(app) as server:
        r = get(server, "/api/data/maps/carto_dw/table?name=proj.ds.secret")
        assert r.status_code == 401, r.text


# -- scopes as servers build them ---------------------------------------------------------
def scope(path: str, root_path: str, raw_path: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "http", "path": path, "root_path": root_path}
    if raw_path is not None:
        out["raw_path"] = raw_path
    return out


@pytest.mark.parametrize(
    ("path", "root", "raw", "expected"),
    [
        pytest.param("/api/v3/x", "/api", b"/api/v3/x", b"/v3/x", id="uvicorn-and-starlette"),
        pytest.param("/api/v3/x", "/api", b"/v3/x", b"/v3/x", id="raw-without-mount-point"),
        pytest.param("/api/v3/x", "/api", None, b"/v3/x", id="no-raw-path"),
        pytest.param("/café/v3/x", "/café", b"/caf%C3%A9/v3/x", b"/v3/x", id="encoded-mount"),
        pytest.param("/api/v3/t", "/api", b"/api/v3/%74", b"/v3/%74", id="keeps-escapes"),
        pytest.param("/api//v3/x", "/api/", b"/api//v3/x", b"/v3/x", id="root-trailing-slash"),
        pytest.param("/apiv3/x", "/api", b"/apiv3/x", b"/apiv3/x", id="not-a-segment-boundary"),
        pytest.param("/v3/x", "/api", b"/v3/x", None, id="path-outside-root"),
        pytest.param("/api/v3/x", "/api", b"/api/v3/y", None, id="raw-disagrees"),
        pytest.param("/api/v3/x", "/api", b"/other/v3/x", None, id="raw-other-mount"),
        pytest.param("/api/v3/a/b", "/api", b"/api/v3/a%2Fb", b"/v3/a%2Fb", id="encoded-slash"),
    ],
)
def test_route_path_reconciles_path_root_and_raw(
    path: str, root: str, raw: bytes | None, expected: bytes | None
) -> None:
    built = scope(path, root, raw)
    assert route_path(built, raw if raw is not None else path.encode("utf-8")) == expected


@pytest.mark.anyio
async def test_scope_outside_its_root_path_is_refused() -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    built = scope("/v3/maps/carto_dw/table", "/api", b"/v3/maps/carto_dw/table")
    built.update(method="GET", query_string=b"name=proj.ds.secret", headers=[])
    await guard(app, MemoryStore())(built, receive, send)
    assert reached == []
    assert sent[0]["status"] == 400
    assert b"mount point" in sent[1]["body"]
