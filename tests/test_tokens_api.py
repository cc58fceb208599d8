"""The Tokens REST API and /oauth/token: main flows over real HTTP (uvicorn), the rest via ASGI."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from starlette.applications import Starlette

from tests.tokens import BODY
from token_guard.management import (
    READ_SCOPE,
    WRITE_SCOPE,
    SigningKeys,
    create_client,
    create_management_app,
)
from token_guard.stores import MemoryStore, SQLiteStore

ISSUER = "https://tokens.test"
AUDIENCE = "token-guard-api"


@contextmanager
def serving(app: Starlette, port: int) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on 127.0.0.1:``port`` for the duration."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def _new_client(db: Path, scopes: list[str]) -> tuple[str, str]:
    """Create an OAuth client in the SQLite file the way an operator would (own process)."""

    async def go() -> tuple[str, str]:
        store = SQLiteStore(str(db))
        try:
            client, secret = await create_client(store, "test client", scopes, actor="cli:test")
            return client.client_id, secret
        finally:
            await store.close()

    return asyncio.run(go())


def _token(http: httpx.Client, client_id: str, secret: str, **form: str) -> str:
    r = http.post(
        "/oauth/token", auth=(client_id, secret), data={"grant_type": "client_credentials", **form}
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return str(r.json()["access_token"])


# -- real HTTP -------------------------------------------------------------------------------


def test_token_lifecycle_over_http(tmp_path: Path, free_port: int) -> None:
    db = tmp_path / "tokens.db"
    client_id, secret = _new_client(db, [READ_SCOPE, WRITE_SCOPE])
    store = SQLiteStore(str(db))
    app = create_management_app(
        store, issuer=ISSUER, audience=AUDIENCE, keys=SigningKeys.open(tmp_path / "t.keys")
    )
    with serving(app, free_port) as base, httpx.Client(base_url=base, timeout=10) as http:
        # Client credentials in the form body this time (Basic is used by _token).
        r = http.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret, "audience": AUDIENCE,
        })
        assert r.status_code == 200
        body = r.json()
        assert (body["token_type"], body["expires_in"]) == ("Bearer", 86_400)
        assert body["scope"] == "read:tokens write:tokens"
        auth = {"Authorization": f"Bearer {body['access_token']}"}

        created = http.post("/v3/tokens", json=BODY, headers=auth)
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        tok = created.json()
        api_secret, token_id = tok["token"], tok["id"]
        assert api_secret.startswith("tgk_") and tok["state"] == "active"
        assert created.headers["location"] == f"/v3/tokens/{token_id}"

        listed = http.get("/v3/tokens", headers=auth)
        shown = http.get(f"/v3/tokens/{token_id}", headers=auth)
        assert listed.status_code == shown.status_code == 200
        assert [t["id"] for t in listed.json()["tokens"]] == [token_id]
        assert shown.json()["grants"] == BODY["grants"]
        for r in (listed, shown):
            assert api_secret not in r.text and "token" not in r.json()

        patched = http.patch(
            f"/v3/tokens/{token_id}", json={"name": "renamed", "referers": []}, headers=auth
        )
        assert patched.status_code == 200
        assert (patched.json()["name"], patched.json()["referers"]) == ("renamed", [])
        refused = http.patch(
            f"/v3/tokens/{token_id}", json={"expiration_date": "2999-01-01T00:00:00Z"},
            headers=auth,
        )
        assert refused.status_code == 400
        assert refused.json()["field"] == "expiration_date"
        assert "only at creation" in refused.json()["error"]

        revoked = http.delete(f"/v3/tokens/{token_id}", headers=auth)
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"

        audit = http.get("/v3/audit", headers=auth)
        assert audit.status_code == 200
        entries = audit.json()["entries"]
        mine = [(e["action"], e["token_id"]) for e in entries if e["actor"] == client_id]
        assert ("token.create", token_id) in mine
        assert ("token.update", token_id) in mine
        assert ("token.revoke", token_id) in mine
        assert api_secret not in audit.text and secret not in audit.text

        jwks = http.get("/.well-known/jwks.json").json()
        assert [k["kid"] for k in jwks["keys"]] == [
            jwt.get_unverified_header(auth["Authorization"][7:])["kid"]
        ]
    asyncio.run(store.close())


def test_writes_while_the_store_is_locked_are_503_and_not_made(
    tmp_path: Path, free_port: int
) -> None:
    db = tmp_path / "tokens.db"
    client_id, secret = _new_client(db, [READ_SCOPE, WRITE_SCOPE])
    store = SQLiteStore(str(db), busy_timeout=0.3)
    app = create_management_app(
        store, issuer=ISSUER, audience=AUDIENCE, keys=SigningKeys.open(tmp_path / "t.keys")
    )
    with serving(app, free_port) as base, httpx.Client(base_url=base, timeout=10) as http:
        auth = {"Authorization": f"Bearer {_token(http, client_id, secret)}"}
        token_id = http.post("/v3/tokens", json=BODY, headers=auth).json()["id"]
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's long write
        try:
            answers = [
                http.delete(f"/v3/tokens/{token_id}", headers=auth),
                http.patch(f"/v3/tokens/{token_id}", json={"name": "x"}, headers=auth),
                http.post("/v3/tokens", json=BODY, headers=auth),
            ]
            shown = http.get(f"/v3/tokens/{token_id}", headers=auth)  # reads still work
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "store_unavailable"
            assert "nothing was changed" in r.json()["error"]
        assert shown.status_code == 200 and shown.json()["state"] == "active"
        listed = http.get("/v3/tokens", headers=auth).json()["tokens"]
        assert [(t["id"], t["name"], t["state"]) for t in listed] == [
            (token_id, BODY["name"], "active")
        ]
    asyncio.run(store.close())


def test_pagination_over_http(tmp_path: Path, free_port: int) -> None:
    db = tmp_path / "tokens.db"
    client_id, secret = _new_client(db, [READ_SCOPE, WRITE_SCOPE])
    store = SQLiteStore(str(db))
    app = create_management_app(store, issuer=ISSUER, audience=AUDIENCE)
    with serving(app, free_port) as base, httpx.Client(base_url=base, timeout=10) as http:
        auth = {"Authorization": f"Bearer {_token(http, client_id, secret)}"}
        made = {http.post("/v3/tokens", json=BODY, headers=auth).json()["id"] for _ in range(5)}
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["after"] = cursor
            page = http.get("/v3/tokens", params=params, headers=auth).json()
            pages += 1
            seen += [t["id"] for t in page["tokens"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert pages == 3 and seen == sorted(made)
        last = http.get("/v3/tokens", params={"limit": 5}, headers=auth).json()
        assert last["next"] is None and len(last["tokens"]) == 5
    asyncio.run(store.close())


# -- ASGI ------------------------------------------------------------------------------------


class _Api:
    def __init__(self, http: httpx.AsyncClient, store: MemoryStore) -> None:
        self.http = http
        self.store = store

    async def token_for(self, scopes: list[str]) -> tuple[str, str]:
        client, secret = await create_client(self.store, "c", scopes, actor="t")
        r = await self.http.post("/oauth/token", auth=(client.client_id, secret),
                                 data={"grant_type": "client_credentials"})
        assert r.status_code == 200
        return str(r.json()["access_token"]), client.client_id


@pytest.fixture
async def api() -> AsyncIterator[_Api]:
    store = MemoryStore()
    app = create_management_app(store, issuer=ISSUER, audience=AUDIENCE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tg") as http:
        yield _Api(http, store)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_api_access_token_can_never_call_the_tokens_api(api: _Api) -> None:
    issued = await api.store.create_token(BODY)
    for method, path in [("GET", "/v3/tokens"), ("POST", "/v3/tokens"),
                         ("DELETE", f"/v3/tokens/{issued.id}")]:
        r = await api.http.request(method, path, headers=_bearer(issued.token), json=BODY)
        assert r.status_code == 401
        assert "API access token cannot call the Tokens API" in r.json()["error"]
        assert "OAuth access token" in r.json()["hint"]
        assert r.headers["www-authenticate"].startswith('Bearer realm="token-guard"')
        assert issued.token not in r.text
    assert (await api.store.get_token(issued.id)).revoked_at is None  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_missing_token_is_a_bare_bearer_challenge(api: _Api) -> None:
    r = await api.http.get("/v3/tokens")
    assert r.status_code == 401 and r.json()["code"] == "missing_token"
    assert r.headers["www-authenticate"] == 'Bearer realm="token-guard"'
    r = await api.http.get("/v3/tokens", headers={"Authorization": "Basic eDp5"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


@pytest.mark.anyio
async def test_read_only_token_cannot_change_anything(api: _Api) -> None:
    issued = await api.store.create_token(BODY)
    token, _ = await api.token_for([READ_SCOPE])
    before = (await api.http.get("/v3/tokens", headers=_bearer(token))).json()
    attempts = [
        ("POST", "/v3/tokens", BODY),
        ("PATCH", f"/v3/tokens/{issued.id}", {"name": "pwned"}),
        ("DELETE", f"/v3/tokens/{issued.id}", None),
    ]
    for method, path, body in attempts:
        r = await api.http.request(method, path, headers=_bearer(token), json=body)
        assert r.status_code == 403, (method, r.text)
        assert r.json()["code"] == "insufficient_scope"
        challenge = r.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and 'scope="write:tokens"' in challenge
    after = (await api.http.get("/v3/tokens", headers=_bearer(token))).json()
    assert after == before


@pytest.mark.anyio
async def test_write_only_token_cannot_read(api: _Api) -> None:
    token, _ = await api.token_for([WRITE_SCOPE])
    r = await api.http.get("/v3/tokens", headers=_bearer(token))
    assert r.status_code == 403 and 'scope="read:tokens"' in r.headers["www-authenticate"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**BODY, "allowed_apis": ["maps", "ftp"]}, "allowed_apis", id="unknown-api"),
        pytest.param({**BODY, "grants": [{"connection_name": "c", "source": "proj.*"}]},
                     "grants[0].source", id="short-wildcard"),
        pytest.param({**BODY, "colour": "red"}, "colour", id="unknown-field"),
        pytest.param({"name": "x"}, "allowed_apis", id="no-apis"),
        pytest.param({**BODY, "expiration_date": "2000-01-01T00:00:00Z"}, "expiration_date",
                     id="past-expiration"),
        pytest.param({**BODY, "referers": ["not a url"]}, "referers[0]", id="bad-referer"),
        pytest.param([1, 2], "body", id="not-an-object"),
    ],
)
async def test_validation_errors_name_the_field(api: _Api, body: Any, field: str) -> None:
    token, _ = await api.token_for([READ_SCOPE, WRITE_SCOPE])
    r = await api.http.post("/v3/tokens", json=body, headers=_bearer(token))
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["field"] == field and out["error"] and out["hint"] and out["code"]


@pytest.mark.anyio
async def test_invalid_json_and_bad_page_parameters_are_400(api: _Api) -> None:
    token, _ = await api.token_for([READ_SCOPE, WRITE_SCOPE])
    r = await api.http.post("/v3/tokens", content=b"{nope", headers=_bearer(token))
    assert r.status_code == 400 and r.json()["field"] == "body"
    for query in ("limit=0", "limit=501", "limit=abc", "limit=1&limit=2"):
        r = await api.http.get(f"/v3/tokens?{query}", headers=_bearer(token))
        assert r.status_code == 400 and r.json()["field"] == "limit", query
    r = await api.http.get("/v3/audit?before=-1", headers=_bearer(token))
    assert r.status_code == 400 and r.json()["field"] == "before"


@pytest.mark.anyio
async def test_unknown_id_is_404(api: _Api) -> None:
    token, _ = await api.token_for([READ_SCOPE, WRITE_SCOPE])
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        r = await api.http.request(
            method, "/v3/tokens/tok_missing", json=body, headers=_bearer(token)
        )
        assert r.status_code == 404 and r.json()["code"] == "not_found", method


@pytest.mark.anyio
async def test_creation_returns_warnings_and_audit_names_the_client(api: _Api) -> None:
    token, client_id = await api.token_for([READ_SCOPE, WRITE_SCOPE])
    body = {"allowed_apis": ["sql"], "grants": [{"connection_name": "c", "source": "*"}]}
    r = await api.http.post("/v3/tokens", json=body, headers=_bearer(token))
    assert r.status_code == 201
    assert any("'*'" in w for w in r.json()["warnings"])
    audit = (await api.http.get("/v3/audit?limit=1", headers=_bearer(token))).json()
    entry = audit["entries"][0]
    assert (entry["actor"], entry["action"], entry["token_id"]) == (
        client_id, "token.create", r.json()["id"]
    )
    assert audit["next"] is not None  # the oauth.token entries are older


@pytest.mark.anyio
async def test_oauth_endpoint_errors_are_rfc6749(api: _Api) -> None:
    client, secret = await create_client(api.store, "c", [READ_SCOPE], actor="t")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"auth": (client.client_id, "wrong"), "data": {"grant_type": "client_credentials"}},
         401, "invalid_client"),
        ({"data": {"grant_type": "client_credentials"}}, 401, "invalid_client"),
        ({"auth": (client.client_id, secret), "data": {"grant_type": "authorization_code"}},
         400, "unsupported_grant_type"),
        ({"auth": (client.client_id, secret),
          "data": {"grant_type": "client_credentials", "scope": "write:tokens"}},
         400, "invalid_scope"),
        ({"auth": (client.client_id, secret), "json": {"grant_type": "client_credentials"}},
         400, "invalid_request"),
        ({"auth": (client.client_id, secret),
          "content": b"grant_type=client_credentials&grant_type=client_credentials",
          "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         400, "invalid_request"),
    ]
    for kwargs, status, error in cases:
        r = await api.http.post("/oauth/token", **kwargs)
        assert (r.status_code, r.json()["error"]) == (status, error), kwargs
        assert r.json()["error_description"]
        assert r.headers["cache-control"] == "no-store"
        assert secret not in r.text
        if status == 401:
            assert r.headers["www-authenticate"] == 'Basic realm="token-guard"'


@pytest.mark.anyio
async def test_basic_auth_credentials_are_url_decoded(api: _Api) -> None:
    client, secret = await create_client(api.store, "c", [READ_SCOPE], actor="t")
    raw = base64.b64encode(f"{client.client_id}:{secret}".replace("-", "%2D").encode()).decode()
    r = await api.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {raw}"},
    )
    assert r.status_code == 200, r.text


@pytest.mark.anyio
async def test_expired_access_token_is_refused_by_the_api() -> None:
    store = MemoryStore()
    keys = SigningKeys.ephemeral()
    app = create_management_app(store, issuer=ISSUER, audience=AUDIENCE, keys=keys)
    client, _ = await create_client(store, "c", [READ_SCOPE], actor="t")
    now = datetime.now(UTC)
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "client_id": client.client_id, "scope": READ_SCOPE,
         "iat": int((now - timedelta(hours=2)).timestamp()),
         "exp": int((now - timedelta(hours=1)).timestamp())},
        keys.active.private_key, "EdDSA", {"kid": keys.active.kid, "typ": "at+jwt"},
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as h:
        r = await h.get("/v3/tokens", headers=_bearer(token))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.anyio
async def test_openapi_schema_is_served(api: _Api) -> None:
    r = await api.http.get("/openapi.json")
    schema = json.loads(r.text)
    assert schema["openapi"].startswith("3.1")
    assert set(schema["paths"]) >= {"/v3/tokens", "/v3/tokens/{token_id}", "/oauth/token"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header_claims",
    [
        pytest.param({"iss": "https://evil\r\nSet-Cookie: x=1"}, id="crlf-issuer"),
        pytest.param({"iss": "https://☃.test"}, id="unicode-issuer"),
        pytest.param({"kid": "ké\"y\\"}, id="odd-kid"),
        pytest.param({"alg": "HS256\r\n"}, id="odd-alg"),
    ],
)
async def test_hostile_jwt_fields_get_a_clean_401(
    api: _Api, header_claims: dict[str, str]
) -> None:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": "k"}
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "exp": 4_000_000_000}
    for key, value in header_claims.items():
        (claims if key == "iss" else header)[key] = value
    token = f"{b64(header)}.{b64(claims)}.c2ln"
    r = await api.http.get("/v3/tokens", headers=_bearer(token))
    assert r.status_code == 401, r.text
    challenge = r.headers["www-authenticate"]
    assert challenge.isascii() and "\r" not in challenge and "\n" not in challenge


def test_external_issuer_token_manages_tokens_over_http(
    tmp_path: Path, free_port: int
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives.asymmetric import ec

    from token_guard.management import ExternalIssuer

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "ES256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: Any) -> None:
            pass

    idp = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    idp_url = f"http://127.0.0.1:{idp.server_address[1]}/.well-known/jwks.json"
    store = SQLiteStore(str(tmp_path / "tokens.db"))
    app = create_management_app(
        store, issuer=ISSUER, audience=AUDIENCE,
        external_issuers=[ExternalIssuer(idp_url, "https://idp.test/", "tokens-api")],
    )
    now = int(time.time())
    claims = {"iss": "https://idp.test/", "aud": "tokens-api", "azp": "deploy-bot",
              "scp": ["read:tokens", "write:tokens"], "iat": now, "exp": now + 300}
    good = jwt.encode(claims, key, "ES256", {"kid": "idp-1"})
    wrong_aud = jwt.encode({**claims, "aud": AUDIENCE}, key, "ES256", {"kid": "idp-1"})
    try:
        with serving(app, free_port) as base, httpx.Client(base_url=base, timeout=10) as http:
            r = http.post("/v3/tokens", json=BODY, headers=_bearer(good))
            assert r.status_code == 201, r.text
            audit = http.get("/v3/audit", headers=_bearer(good)).json()["entries"]
            assert (audit[0]["actor"], audit[0]["action"]) == ("deploy-bot", "token.create")
            refused = http.get("/v3/tokens", headers=_bearer(wrong_aud))
            assert refused.status_code == 401 and "not meant" in refused.json()["error"]
    finally:
        idp.shutdown()
        idp.server_close()
        asyncio.run(store.close())


@pytest.mark.anyio
async def test_limits_are_created_patched_listed_and_validated(api: _Api) -> None:
    token, _ = await api.token_for([READ_SCOPE, WRITE_SCOPE])
    limits = {"rate": [{"requests": 600, "per": "minute", "api": "sql"}],
              "quota": {"requests": 1000000, "per": "month"}}
    r = await api.http.post("/v3/tokens", json={**BODY, "limits": limits}, headers=_bearer(token))
    assert r.status_code == 201 and r.json()["limits"] == limits
    tid = r.json()["id"]
    lowered = {"rate": [{"requests": 10, "per": "minute"}]}
    r = await api.http.patch(f"/v3/tokens/{tid}", json={"limits": lowered},
                             headers=_bearer(token))
    assert r.status_code == 200 and r.json()["limits"] == lowered
    listed = (await api.http.get("/v3/tokens", headers=_bearer(token))).json()["tokens"]
    assert [t["limits"] for t in listed if t["id"] == tid] == [lowered]
    r = await api.http.patch(f"/v3/tokens/{tid}", json={"limits": {"rate": [
        {"requests": 10, "per": "fortnight"}]}}, headers=_bearer(token))
    assert r.status_code == 400 and r.json()["field"] == "limits.rate[0].per"
    schema = (await api.http.get("/openapi.json")).json()["components"]["schemas"]
    assert "limits" in schema["TokenCreate"]["properties"]
    assert "limits" in schema["TokenUpdate"]["properties"]


@pytest.mark.anyio
async def test_usage_endpoint_reports_hours_and_days_and_checks_its_parameters(
    api: _Api
) -> None:
    from datetime import timedelta

    from token_guard.core.records import UsageRow

    token, _ = await api.token_for([READ_SCOPE])
    issued = await api.store.create_token(BODY)
    h = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    await api.store.add_usage([
        UsageRow(issued.id, h, "maps", "", 7), UsageRow(issued.id, h, "sql", "", 2),
        UsageRow(issued.id, h, "maps", "rate_limited", 3),
        UsageRow(issued.id, h + timedelta(hours=1), "maps", "origin_not_allowed", 1),
    ])
    r = await api.http.get(f"/v3/tokens/{issued.id}/usage?from=2026-11-01&to=2026-12-02",
                           headers=_bearer(token))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["days"] == [
        {"day": "2026-11-30", "allowed": 9, "refused": {"rate_limited": 3}},
        {"day": "2026-12-01", "allowed": 0, "refused": {"origin_not_allowed": 1}},
    ]
    assert out["hours"][0] == {"hour": "2026-11-30T23:00:00Z", "api": "maps", "allowed": 7,
                               "refused": {"rate_limited": 3}}
    for query, field in (("from=yesterday", "from"), ("from=2026-12-02&to=2026-12-01", "from"),
                         ("to=1&to=2", "to")):
        r = await api.http.get(f"/v3/tokens/{issued.id}/usage?{query}", headers=_bearer(token))
        assert r.status_code == 400 and r.json()["field"] == field, query
    r = await api.http.get("/v3/tokens/tok_nope/usage", headers=_bearer(token))
    assert r.status_code == 404
    assert "/v3/tokens/{token_id}/usage" in (await api.http.get("/openapi.json")).json()["paths"]


@pytest.mark.anyio
async def test_an_invalid_body_lists_every_field_error_at_once(api: _Api) -> None:
    token, _ = await api.token_for([WRITE_SCOPE])
    bad = {"name": 7, "allowed_apis": ["maps", "ftp"], "referers": ["nope"],
           "grants": [{"connection_name": "c", "source": "a.b.c"},
                      {"connection_name": "c", "source": "proj.*"}]}
    r = await api.http.post("/v3/tokens", json=bad, headers=_bearer(token))
    assert r.status_code == 400 and r.json()["code"] == "invalid_token_spec"
    fields = [e["field"] for e in r.json()["errors"]]
    assert r.json()["field"] in fields
    assert set(fields) == {"name", "allowed_apis", "referers[0]", "grants[1].source"}
    issued = await api.store.create_token(BODY)
    r = await api.http.patch(f"/v3/tokens/{issued.id}", headers=_bearer(token),
                             json={"name": 1, "expiration_date": "2030-01-01T00:00:00Z"})
    assert {e["field"] for e in r.json()["errors"]} == {"name", "expiration_date"}


# -- grants checked against the app's configuration ------------------------------------------

_CONFIGURED = """
[connections]
carto_dw = "bigquery"
demo = "sqlite"
"""


@pytest.fixture
async def configured_api(tmp_path: Path) -> AsyncIterator[_Api]:
    config = tmp_path / "token_guard.toml"
    config.write_text(_CONFIGURED, "utf-8")
    store = MemoryStore()
    app = create_management_app(store, issuer=ISSUER, audience=AUDIENCE, config=config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tg") as http:
        yield _Api(http, store)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("grants", "field", "says"),
    [
        pytest.param([{"connection_name": "carto_dwh", "source": "p.d.t"}],
                     "grants[0].connection_name", "did you mean 'carto_dw'", id="unknown-conn"),
        pytest.param([{"connection_name": "carto_dw", "source": "p.d.t"},
                      {"connection_name": "carto_dw", "source": "stores"}],
                     "grants[1].source", "not fully qualified", id="unqualified"),
        pytest.param([{"connection_name": "carto_dw", "source": "SELECT * FROM"}],
                     "grants[0].source", "does not parse", id="bad-query"),
        pytest.param([{"connection_name": "demo", "source": "a.b.c"}],
                     "grants[0].source", "sqlite", id="too-deep-for-sqlite"),
    ],
)
async def test_a_grant_the_app_cannot_serve_is_refused_at_creation(
    configured_api: _Api, grants: list[dict[str, str]], field: str, says: str
) -> None:
    token, _ = await configured_api.token_for([READ_SCOPE, WRITE_SCOPE])
    r = await configured_api.http.post("/v3/tokens", json={**BODY, "grants": grants},
                                       headers=_bearer(token))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and says in r.json()["error"], r.json()
    assert await configured_api.store.list_tokens() == []
    # ... and on update
    issued = await configured_api.store.create_token(BODY)
    r = await configured_api.http.patch(f"/v3/tokens/{issued.id}", json={"grants": grants},
                                        headers=_bearer(token))
    assert r.status_code == 400 and r.json()["field"] == field, r.text


@pytest.mark.anyio
async def test_servable_grants_are_created_with_a_config(configured_api: _Api) -> None:
    token, _ = await configured_api.token_for([READ_SCOPE, WRITE_SCOPE])
    body = {**BODY, "grants": [*BODY["grants"], {"connection_name": "demo", "source": "stores"}]}
    r = await configured_api.http.post("/v3/tokens", json=body, headers=_bearer(token))
    assert r.status_code == 201, r.text


@pytest.mark.anyio
async def test_without_a_config_any_connection_is_accepted_as_before(api: _Api) -> None:
    token, _ = await api.token_for([READ_SCOPE, WRITE_SCOPE])
    body = {**BODY, "grants": [{"connection_name": "nowhere", "source": "stores"}]}
    r = await api.http.post("/v3/tokens", json=body, headers=_bearer(token))
    assert r.status_code == 201, r.text


@pytest.mark.anyio
async def test_openapi_lists_the_configured_connections(configured_api: _Api,
                                                        api: _Api) -> None:
    def names(doc: dict[str, Any], schema: str) -> Any:
        grant = doc["components"]["schemas"][schema]["properties"]["grants"]["items"]
        return grant["properties"]["connection_name"].get("enum")

    doc = (await configured_api.http.get("/openapi.json")).json()
    assert names(doc, "TokenCreate") == ["carto_dw", "demo"]
    assert names(doc, "TokenUpdate") == ["carto_dw", "demo"]
    assert names((await api.http.get("/openapi.json")).json(), "TokenCreate") is None
