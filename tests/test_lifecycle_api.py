"""The Tokens API's lifecycle routes (rotate, end the grace, disable, enable), with the guard
in front of a data API deciding on the secrets: over real HTTP (uvicorn), one SQLite file."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import token_guard as tg
from tests.test_tokens_api import AUDIENCE, ISSUER, _new_client, _token, serving
from tests.tokens import BODY
from token_guard.core.secret import secret_prefix
from token_guard.management import READ_SCOPE, WRITE_SCOPE, create_client, create_management_app
from token_guard.stores import MemoryStore, SQLiteStore

CONNECTIONS = {"carto_dw": "bigquery"}
TABLE = "/v3/maps/carto_dw/table?name=carto-demo-data.demo_tables.retail_stores"


async def _ok(request: Any) -> JSONResponse:
    return JSONResponse({"ok": True})


def _data_app(db: Path) -> tuple[tg.TokenGuard, SQLiteStore]:
    """A data API behind the guard, on its own store instance of the same file (another
    instance: it hears changes only through the file's change feed)."""
    store = SQLiteStore(str(db), poll_interval=0.1)
    inner = Starlette(routes=[Route("/v3/maps/{conn}/table", _ok)])
    return tg.TokenGuard(inner, store=store, connections=CONNECTIONS), store


def _wait_status(http: httpx.Client, secret: str, status: int) -> httpx.Response:
    """The data API's answer for ``secret`` once it is ``status`` (the revocation bound)."""
    deadline = time.monotonic() + 10
    while True:
        r = http.get(TABLE, headers={"Authorization": f"Bearer {secret}",
                                     "Origin": "https://app.example.com"})
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rotate_and_disable_over_http_reach_the_guard_of_another_instance(
    tmp_path: Path, free_port: int
) -> None:
    db = tmp_path / "tokens.db"
    client_id, client_secret = _new_client(db, [READ_SCOPE, WRITE_SCOPE])
    store = SQLiteStore(str(db))
    guarded, data_store = _data_app(db)
    with (
        serving(create_management_app(store, issuer=ISSUER, audience=AUDIENCE), free_port) as api,
        serving(guarded, _port()) as data,  # type: ignore[arg-type]
        httpx.Client(base_url=api, timeout=10) as http,
        httpx.Client(base_url=data, timeout=10) as client,
    ):
        auth = {"Authorization": f"Bearer {_token(http, client_id, client_secret)}"}
        created = http.post("/v3/tokens", json=BODY, headers=auth).json()
        old, token_id = created["token"], created["id"]
        assert created["secret_prefix"] == secret_prefix(old)
        assert _wait_status(client, old, 200).status_code == 200

        rotated = http.post(f"/v3/tokens/{token_id}/rotate", json={"grace_seconds": 3600},
                            headers=auth)
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        answer = rotated.json()
        new = answer["token"]
        assert answer["id"] == token_id and new != old and answer["grace_seconds"] == 3600
        assert answer["secret_prefix"] == secret_prefix(new)
        assert answer["old_secret_expires_at"].endswith("Z")
        assert answer["grants"] == BODY["grants"]
        # Both secrets work through the grace period.
        assert _wait_status(client, new, 200).status_code == 200
        assert _wait_status(client, old, 200).status_code == 200
        listed = http.get("/v3/tokens", headers=auth)
        assert old not in listed.text and new not in listed.text
        assert listed.json()["tokens"][0]["secret_prefix"] == secret_prefix(new)

        ended = http.post(f"/v3/tokens/{token_id}/rotate/expire", headers=auth)
        assert ended.status_code == 200 and ended.json()["state"] == "active"
        refused = _wait_status(client, old, 401)
        assert refused.status_code == 401 and refused.json()["code"] == "token_rotated"
        assert "replaced by a rotation on" in refused.json()["hint"]
        assert old not in refused.text
        assert _wait_status(client, new, 200).status_code == 200

        disabled = http.post(f"/v3/tokens/{token_id}/disable", headers=auth)
        assert disabled.status_code == 200 and disabled.json()["state"] == "disabled"
        assert disabled.json()["disabled_at"] is not None
        refused = _wait_status(client, new, 401)
        assert refused.json()["code"] == "token_disabled"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        enabled = http.post(f"/v3/tokens/{token_id}/enable", headers=auth)
        assert enabled.status_code == 200 and enabled.json()["state"] == "active"
        assert _wait_status(client, new, 200).status_code == 200

        assert http.delete(f"/v3/tokens/{token_id}", headers=auth).status_code == 200
        for action in ("enable", "disable", "rotate"):
            r = http.post(f"/v3/tokens/{token_id}/{action}", headers=auth)
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "conflict" and "revocation is final" in r.json()["error"]

        audit = http.get("/v3/audit", params={"token_id": token_id}, headers=auth)
        assert {e["token_id"] for e in audit.json()["entries"]} == {token_id}
        mine = [e["action"] for e in audit.json()["entries"]]
        for action in ("token.rotate", "token.rotate.expire", "token.disable", "token.enable"):
            assert action in mine
        assert old not in audit.text and new not in audit.text
    asyncio.run(store.close())
    asyncio.run(data_store.close())


# -- ASGI: the answers' edges ----------------------------------------------------------------
@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, MemoryStore, dict[str, str]]]:
    store = MemoryStore()
    app = create_management_app(store, issuer=ISSUER, audience=AUDIENCE)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tg"
    ) as http:
        client, secret = await create_client(
            store, "c", [READ_SCOPE, WRITE_SCOPE], actor="t"
        )
        r = await http.post("/oauth/token", auth=(client.client_id, secret),
                            data={"grant_type": "client_credentials"})
        yield http, store, {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"grace_seconds": -1}, "grace_seconds", id="negative"),
        pytest.param({"grace_seconds": 31 * 86_400}, "grace_seconds", id="over-30-days"),
        pytest.param({"grace_seconds": "3600"}, "grace_seconds", id="text"),
        pytest.param({"grace_seconds": 1.5}, "grace_seconds", id="fraction"),
        pytest.param({"grace": 60}, "body", id="unknown-member"),
        pytest.param([60], "body", id="not-an-object"),
    ],
)
async def test_a_bad_grace_is_400_naming_the_field(
    api: tuple[httpx.AsyncClient, MemoryStore, dict[str, str]], body: Any, field: str
) -> None:
    http, store, auth = api
    issued = await store.create_token(BODY)
    r = await http.post(f"/v3/tokens/{issued.id}/rotate", json=body, headers=auth)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_request" and r.json()["field"] == field
    found = await store.get_token(issued.id)
    assert found is not None and found.secret == issued.record.secret  # nothing rotated


@pytest.mark.anyio
async def test_rotate_without_a_body_gives_a_day_of_grace(
    api: tuple[httpx.AsyncClient, MemoryStore, dict[str, str]],
) -> None:
    http, store, auth = api
    issued = await store.create_token(BODY)
    r = await http.post(f"/v3/tokens/{issued.id}/rotate", headers=auth)
    assert r.status_code == 200 and r.json()["grace_seconds"] == 86_400


@pytest.mark.anyio
async def test_lifecycle_routes_need_write_scope_and_a_known_id(
    api: tuple[httpx.AsyncClient, MemoryStore, dict[str, str]],
) -> None:
    http, store, auth = api
    issued = await store.create_token(BODY)
    client, secret = await create_client(store, "r", [READ_SCOPE], actor="t")
    r = await http.post("/oauth/token", auth=(client.client_id, secret),
                        data={"grant_type": "client_credentials"})
    reader = {"Authorization": f"Bearer {r.json()['access_token']}"}
    for action in ("rotate", "rotate/expire", "disable", "enable"):
        r = await http.post(f"/v3/tokens/{issued.id}/{action}", headers=reader)
        assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
        r = await http.post(f"/v3/tokens/{issued.id}/{action}",
                            headers={"Authorization": f"Bearer {issued.token}"})
        assert r.status_code == 401
        r = await http.post(f"/v3/tokens/tok_nope/{action}", headers=auth)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    found = await store.get_token(issued.id)
    assert found == issued.record
