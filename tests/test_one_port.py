"""``tg.one_port``: the Tokens API and a guarded API on one port, over real uvicorn, at the
root, under ``uvicorn --root-path`` and inside a Starlette ``Mount``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import token_guard as tg
from tests.servers import ServerThread, serve
from tests.tokens import CONNECTIONS, FULL
from token_guard.management import SCOPES, OnePort, create_client
from token_guard.management.one_port import is_management_path
from token_guard.stores import MemoryStore

ISSUER = "https://tokens.test"
AUDIENCE = "token-guard-api"
LDS = {**FULL, "allowed_apis": ["lds"]}
ORIGIN = "https://app.example.com"


async def geocode(request: Request) -> JSONResponse:
    token = tg.get_token(request.scope)
    return JSONResponse({"token": token.id if token else None})


def build(store: MemoryStore) -> OnePort:
    """The documented one-port app: management beside CORS + TokenGuard + the data API."""
    data = Starlette(routes=[Route("/v3/lds/geocoding/geocode", geocode)])
    guarded = CORSMiddleware(
        tg.TokenGuard(data, store=store, connections=CONNECTIONS),
        allow_origins=[ORIGIN], allow_headers=["Authorization"],
    )
    management = tg.create_management_app(store, issuer=ISSUER, audience=AUDIENCE)
    return tg.one_port(guarded=guarded, management=management)


@contextmanager
def running(**kwargs: str) -> Iterator[tuple[ServerThread, MemoryStore]]:
    store = MemoryStore()
    with serve(build(store), **kwargs) as server:
        yield server, store


def _check_one_port(server: ServerThread, store: MemoryStore, base: str) -> None:
    """Every management path reaches the management app; everything else the guard."""
    client, secret = server.call(lambda: create_client(store, "ci", SCOPES, actor="test"))
    api = server.call(lambda: store.create_token(LDS))
    with httpx.Client(base_url=server.url + base, timeout=10) as http:
        issued = http.post("/oauth/token", auth=(client.client_id, secret),
                           data={"grant_type": "client_credentials"})
        assert issued.status_code == 200, issued.text
        bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        listed = http.get("/v3/tokens", headers=bearer)
        assert listed.status_code == 200, listed.text
        assert [t["id"] for t in listed.json()["tokens"]] == [api.id]
        assert http.get(f"/v3/tokens/{api.id}", headers=bearer).status_code == 200
        assert http.get("/v3/audit", headers=bearer).status_code == 200
        assert http.get("/.well-known/jwks.json").json()["keys"]
        assert "/v3/tokens" in http.get("/openapi.json").json()["paths"]
        assert http.get("/developers").status_code == 200
        # The guarded side: tokens checked, CORS outside the guard, the Tokens API's
        # OAuth token is not an API token.
        ok = http.get(
            "/v3/lds/geocoding/geocode", headers={"Authorization": f"Bearer {api.token}"}
        )
        assert ok.status_code == 200 and ok.json() == {"token": api.id}
        refused = http.get("/v3/lds/geocoding/geocode", headers={"Origin": ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ORIGIN
        # Segment-exact: a look-alike path is the guard's, and refused by it.
        lookalike = http.get("/v3/tokensX", headers={"Authorization": f"Bearer {api.token}"})
        assert (lookalike.status_code, lookalike.json()["code"]) == (403, "unknown_route")
        assert "one_port" in lookalike.json()["hint"]
        tricky = http.get("/v3/tokens/%2e%2e/lds/geocoding/geocode")
        assert tricky.status_code == 400


def test_one_port_at_the_root() -> None:
    with running() as (server, store):
        _check_one_port(server, store, "")


def test_one_port_under_uvicorn_root_path() -> None:
    """``uvicorn --root-path /api`` behind a proxy that strips ``/api``."""
    with running(root_path="/api") as (server, store):
        _check_one_port(server, store, "")


def test_one_port_inside_a_starlette_mount() -> None:
    store = MemoryStore()
    app = Starlette(routes=[Mount("/api", app=build(store))])
    with serve(app) as server:
        _check_one_port(server, store, "/api")
        # Outside the mount, nothing of it answers.
        assert httpx.get(server.url + "/v3/tokens").status_code == 404


@pytest.mark.parametrize(
    ("path", "management"),
    [
        pytest.param(b"/v3/tokens", True, id="tokens"),
        pytest.param(b"/v3/tokens/tok_1", True, id="token"),
        pytest.param(b"/oauth/token", True, id="oauth"),
        pytest.param(b"/v3/tokensX", False, id="lookalike"),
        pytest.param(b"/v3/sql/c/query", False, id="data"),
        pytest.param(b"/v3/token", False, id="shorter"),
    ],
)
def test_management_paths_are_segment_exact(path: bytes, management: bool) -> None:
    assert is_management_path(path) is management
