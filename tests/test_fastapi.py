"""FastAPI integration: the ``api_token`` dependencies, end to end through uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from tests.servers import ServerThread, serve
from tests.tokens import CONNECTIONS
from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.fastapi import ApiToken, OptionalApiToken
from token_guard.stores import MemoryStore

FULL: dict[str, Any] = {
    "name": "full",
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
    "referers": [],
    "allowed_apis": ["maps"],
}
TABLE = "/v3/maps/carto_dw/table?name=proj.ds.stores"


def make_app(store: MemoryStore | None) -> FastAPI:
    """A FastAPI app; guarded (CORS outside the guard) when a store is given."""
    app = FastAPI()
    if store is not None:
        app.add_middleware(TokenGuard, store=store, connections=CONNECTIONS)
        app.add_middleware(CORSMiddleware, allow_origins=["https://app.example.com"],
                           allow_headers=["*"])

    @app.get("/v3/maps/{connection}/table")
    def table(connection: str, name: str, token: ApiToken) -> dict[str, str]:
        return {"token_id": token.id, "token_name": token.name, "name": name}

    @app.get("/health")
    def health(token: OptionalApiToken) -> dict[str, str | None]:
        return {"token": token.name if token else None}

    return app


@pytest.fixture
def guarded() -> Iterator[tuple[ServerThread, MemoryStore]]:
    store = MemoryStore()
    with serve(make_app(store)) as server:
        yield server, store


def test_handler_receives_the_token_through_depends(
    guarded: tuple[ServerThread, MemoryStore],
) -> None:
    server, store = guarded
    issued = server.call(lambda: store.create_token(FULL))
    r = httpx.get(server.url + TABLE, headers={"Authorization": f"Bearer {issued.token}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"token_id": issued.id, "token_name": "full", "name": "proj.ds.stores"}


def test_guard_refuses_before_the_dependency_runs(
    guarded: tuple[ServerThread, MemoryStore],
) -> None:
    server, _ = guarded
    r = httpx.get(server.url + TABLE, headers={"Origin": "https://app.example.com"})
    assert r.status_code == 401
    assert r.json()["code"] == "missing_token"
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"


def test_optional_token_is_none_outside_the_prefix(
    guarded: tuple[ServerThread, MemoryStore],
) -> None:
    server, _ = guarded
    assert httpx.get(server.url + "/health").json() == {"token": None}


def test_api_token_without_the_guard_is_401_never_none() -> None:
    """Forgetting the middleware must not serve the handler anonymously."""
    with serve(make_app(None)) as server:
        r = httpx.get(server.url + TABLE)
        assert r.status_code == 401
        assert "TokenGuard" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_openapi_declares_the_bearer_scheme_and_each_guarded_operation_requires_it() -> None:
    with serve(make_app(MemoryStore())) as server:
        schema = httpx.get(server.url + "/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["TokenGuard"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert schema["paths"]["/v3/maps/{connection}/table"]["get"]["security"] == [
        {"TokenGuard": []}
    ]
    assert "security" not in schema["paths"]["/health"]["get"]  # optional: not required


def test_the_docs_authorize_button_header_is_what_the_guard_reads(
    guarded: tuple[ServerThread, MemoryStore],
) -> None:
    """Swagger UI sends exactly ``Authorization: Bearer <what was pasted>``."""
    server, store = guarded
    issued = server.call(lambda: store.create_token(FULL))
    assert "swagger-ui" in httpx.get(server.url + "/docs").text
    r = httpx.get(server.url + TABLE, headers={"Authorization": f"Bearer {issued.token}"})
    assert r.status_code == 200, r.text


ORIGIN = "https://app.example.com"


def test_a_browsers_cross_origin_call_can_read_the_refusal(
    guarded: tuple[ServerThread, MemoryStore],
) -> None:
    """What a browser does: a preflight (answered by CORS), then the call with a bad token."""
    server, _ = guarded
    preflight = httpx.options(server.url + TABLE, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    })
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(server.url + TABLE, headers={
        "Origin": ORIGIN, "Authorization": "Bearer tgk_not-a-real-token",
    })
    assert r.status_code == 401 and r.json()["code"] == "malformed_token"
    assert r.headers["access-control-allow-origin"] == ORIGIN  # the page can read the body


def test_starlettes_order_in_add_middleware_hides_refusals_from_browsers() -> None:
    """CORS added FIRST is innermost in FastAPI: the guard's 401 then lacks CORS headers."""
    app = make_app(None)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_headers=["*"])
    app.add_middleware(TokenGuard, store=MemoryStore(), connections=CONNECTIONS)
    with serve(app) as server:
        r = httpx.get(server.url + TABLE, headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert "access-control-allow-origin" not in r.headers
