"""OAuth for the Tokens API: client secrets, the key ring, and every way a JWT is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from token_guard.core.errors import ConfigurationError
from token_guard.core.secret import new_secret
from token_guard.management.clients import (
    READ_SCOPE,
    WRITE_SCOPE,
    authenticate_client,
    create_client,
    hash_client_secret,
    parse_scopes,
    revoke_client,
)
from token_guard.management.grant import (
    OAuthError,
    client_credentials_grant,
    client_from_basic,
    issue_access_token,
)
from token_guard.management.keys import SigningKeys
from token_guard.management.verify import AccessDenied, AccessTokenVerifier, ExternalIssuer
from token_guard.stores import MemoryStore, SQLiteStore

ISSUER = "https://tokens.test"
AUDIENCE = "token-guard-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made_jwt(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(sign(head.encode()))


def _claims(client_id: str, **over: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    out: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": client_id, "client_id": client_id,
        "scope": "read:tokens write:tokens", "iat": now, "exp": now + 600,
    }
    out.update(over)
    return out


class _Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(str(tmp_path / "tokens.db"))
        self.keys = SigningKeys.open(tmp_path / "tokens.keys")
        self.verifier = AccessTokenVerifier(
            self.store, self.keys, issuer=ISSUER, audience=AUDIENCE
        )


# -- clients -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_client_secret_is_stored_only_as_its_sha256(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "t.db"))
    client, secret = await create_client(store, "ci", [READ_SCOPE], actor="cli:alice")
    found = await store.get_client(client.client_id)
    assert found is not None
    assert found[1] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (tmp_path / "t.db").read_bytes().decode("latin-1")
    audit = await store.list_audit()
    assert audit[0].action == "client.create" and audit[0].actor == "cli:alice"
    assert secret not in json.dumps(audit[0].detail)
    await store.close()


@pytest.mark.anyio
async def test_authenticate_client_accepts_only_the_right_secret_of_an_active_client() -> None:
    store = MemoryStore()
    client, secret = await create_client(store, "ci", [READ_SCOPE, WRITE_SCOPE], actor="t")
    assert await authenticate_client(store, client.client_id, secret) == client
    assert await authenticate_client(store, client.client_id, secret + "x") is None
    assert await authenticate_client(store, "tgc_unknown", secret) is None
    await revoke_client(store, client.client_id, actor="t")
    assert await authenticate_client(store, client.client_id, secret) is None


def test_unknown_scope_is_refused_with_the_list_of_scopes() -> None:
    with pytest.raises(ValueError, match="read:tokens and write:tokens"):
        parse_scopes("admin")
    assert parse_scopes("read:tokens,write:tokens read:tokens") == (READ_SCOPE, WRITE_SCOPE)


def test_basic_credentials_are_form_decoded() -> None:
    raw = base64.b64encode(b"my%3Aid:se+cret").decode()
    assert client_from_basic(f"Basic {raw}") == ("my:id", "se cret")
    assert client_from_basic("Bearer x") is None
    with pytest.raises(OAuthError) as info:
        client_from_basic("Basic !!!")
    assert info.value.error == "invalid_client" and info.value.status == 401


# -- the grant -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "error", "status"),
    [
        pytest.param({}, "invalid_request", 400, id="no-grant-type"),
        pytest.param({"grant_type": "password"}, "unsupported_grant_type", 400, id="password"),
        pytest.param({"grant_type": "client_credentials"}, "invalid_client", 401, id="no-creds"),
        pytest.param({"grant_type": "client_credentials", "client_secret": "WRONG"},
                     "invalid_client", 401, id="wrong-secret"),
        pytest.param({"grant_type": "client_credentials", "scope": "write:tokens"},
                     "invalid_scope", 400, id="scope-not-granted"),
        pytest.param({"grant_type": "client_credentials", "scope": "root"},
                     "invalid_scope", 400, id="unknown-scope"),
        pytest.param({"grant_type": "client_credentials", "audience": "other"},
                     "invalid_request", 400, id="other-audience"),
    ],
)
async def test_grant_errors_follow_rfc6749(
    params: dict[str, str], error: str, status: int
) -> None:
    store = MemoryStore()
    client, secret = await create_client(store, "reader", [READ_SCOPE], actor="t")
    full = dict(params)
    if full.get("grant_type") == "client_credentials" and params != {
        "grant_type": "client_credentials"
    }:
        full.setdefault("client_id", client.client_id)
        full.setdefault("client_secret", secret)
    with pytest.raises(OAuthError) as info:
        await client_credentials_grant(
            store, SigningKeys.ephemeral(), full, None, issuer=ISSUER, audience=AUDIENCE
        )
    assert (info.value.error, info.value.status) == (error, status)
    assert secret not in info.value.description


@pytest.mark.anyio
async def test_grant_refuses_credentials_in_header_and_body_at_once() -> None:
    store = MemoryStore()
    client, secret = await create_client(store, "c", [READ_SCOPE], actor="t")
    with pytest.raises(OAuthError, match="both"):
        await client_credentials_grant(
            store, SigningKeys.ephemeral(),
            {"grant_type": "client_credentials", "client_id": client.client_id},
            (client.client_id, secret), issuer=ISSUER, audience=AUDIENCE,
        )


@pytest.mark.anyio
async def test_issued_token_verifies_with_its_scopes_and_client(tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    client, secret = await create_client(s.store, "c", [READ_SCOPE, WRITE_SCOPE], actor="t")
    issued, _ = await client_credentials_grant(
        s.store, s.keys, {"grant_type": "client_credentials", "scope": "read:tokens"},
        (client.client_id, secret), issuer=ISSUER, audience=AUDIENCE,
    )
    assert issued.expires_in == 86_400
    header = jwt.get_unverified_header(issued.access_token)
    assert header["alg"] == "EdDSA" and header["kid"] == s.keys.active.kid
    claims = await s.verifier.verify(issued.access_token)
    assert claims.client_id == client.client_id
    assert claims.scopes == {READ_SCOPE}
    claims.require(READ_SCOPE)
    with pytest.raises(AccessDenied) as info:
        claims.require(WRITE_SCOPE)
    assert info.value.status == 403 and info.value.code == "insufficient_scope"
    assert 'error="insufficient_scope"' in info.value.www_authenticate()
    await s.store.close()


# -- refusals --------------------------------------------------------------------------------


def _public_pem(keys: SigningKeys) -> bytes:
    return keys.active.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _forge(kind: str, keys: SigningKeys, client_id: str) -> str:
    """A token that must be refused, made the way an attacker or a bug would make it."""
    kid = keys.active.kid
    own = keys.active.private_key
    head = {"kid": kid, "typ": "at+jwt"}
    now = int(datetime.now(UTC).timestamp())
    if kind == "expired":
        return jwt.encode(_claims(client_id, iat=now - 7200, exp=now - 3600), own, "EdDSA", head)
    if kind == "wrong-audience":
        return jwt.encode(_claims(client_id, aud="someone-else"), own, "EdDSA", head)
    if kind == "wrong-issuer":
        return jwt.encode(_claims(client_id, iss="https://evil.test"), own, "EdDSA", head)
    if kind == "no-exp":
        c = _claims(client_id)
        del c["exp"]
        return jwt.encode(c, own, "EdDSA", head)
    if kind == "alg-none":
        return _hand_made_jwt({"alg": "none", **head}, _claims(client_id), lambda _: b"")
    if kind == "hs256-with-public-key":
        pem = _public_pem(keys)
        return _hand_made_jwt(
            {"alg": "HS256", **head}, _claims(client_id),
            lambda msg: hmac.new(pem, msg, hashlib.sha256).digest(),
        )
    if kind == "unknown-kid":
        return jwt.encode(_claims(client_id), own, "EdDSA", {**head, "kid": "nope"})
    if kind == "foreign-key-same-kid":
        return jwt.encode(_claims(client_id), Ed25519PrivateKey.generate(), "EdDSA", head)
    if kind == "wrong-typ":
        return jwt.encode(_claims(client_id), own, "EdDSA", {**head, "typ": "JWT"})
    if kind == "api-access-token":
        return new_secret()
    if kind == "garbage":
        return "not.a.jwt"
    raise AssertionError(kind)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "says"),
    [
        pytest.param("expired", "expired", id="expired"),
        pytest.param("wrong-audience", "not meant for this API", id="wrong-audience"),
        pytest.param("wrong-issuer", "not trusted", id="wrong-issuer"),
        pytest.param("no-exp", "'exp'", id="no-exp"),
        pytest.param("alg-none", "'none' is not accepted", id="alg-none"),
        pytest.param("hs256-with-public-key", "'HS256' is not accepted", id="hs-rs-confusion"),
        pytest.param("unknown-kid", "key id 'nope' is unknown", id="unknown-kid"),
        pytest.param("foreign-key-same-kid", "signature", id="bad-signature"),
        pytest.param("wrong-typ", "type", id="wrong-typ"),
        pytest.param("api-access-token", "API access token cannot", id="api-token"),
        pytest.param("garbage", "not a JWT", id="garbage"),
    ],
)
async def test_verifier_refuses(kind: str, says: str, tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    client, _ = await create_client(s.store, "c", [READ_SCOPE, WRITE_SCOPE], actor="t")
    token = _forge(kind, s.keys, client.client_id)
    with pytest.raises(AccessDenied) as info:
        await s.verifier.verify(token)
    assert info.value.status == 401
    assert says in info.value.message
    assert token not in info.value.message + info.value.hint
    await s.store.close()


@pytest.mark.anyio
async def test_token_of_a_revoked_client_stops_working(tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    client, _ = await create_client(s.store, "c", [READ_SCOPE], actor="t")
    token = issue_access_token(
        s.keys, client.client_id, [READ_SCOPE], issuer=ISSUER, audience=AUDIENCE
    ).access_token
    await s.verifier.verify(token)
    await revoke_client(s.store, client.client_id, actor="t")
    with pytest.raises(AccessDenied, match="revoked"):
        await s.verifier.verify(token)
    await s.store.close()


# -- the key ring --------------------------------------------------------------------------


def test_key_file_is_created_private_and_reopens_with_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokens.keys"
    first = SigningKeys.open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKeys.open(path).active.kid == first.active.kid
    assert "PRIVATE KEY" in path.read_text()
    assert [k["kid"] for k in first.jwks()["keys"]] == [first.active.kid]
    assert "d" not in first.jwks()["keys"][0]  # never the private part


def test_open_without_create_says_how_to_make_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="keys rotate"):
        SigningKeys.open(tmp_path / "missing.keys", create=False)


@pytest.mark.anyio
async def test_rotation_keeps_old_tokens_verifying_until_they_expire(tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    client, _ = await create_client(s.store, "c", [READ_SCOPE], actor="t")
    old_kid = s.keys.active.kid
    old_token = issue_access_token(
        s.keys, client.client_id, [READ_SCOPE], issuer=ISSUER, audience=AUDIENCE
    ).access_token
    # Rotate through a second handle on the same file, as 'token-guard keys rotate' does
    # while a server runs: the server's ring must notice.
    new = SigningKeys.open(tmp_path / "tokens.keys").rotate(token_lifetime=3600)
    await s.verifier.verify(old_token)
    new_token = issue_access_token(
        s.keys, client.client_id, [READ_SCOPE], issuer=ISSUER, audience=AUDIENCE
    ).access_token
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid != old_kid
    assert {k["kid"] for k in s.keys.jwks()["keys"]} == {old_kid, new.kid}
    later = datetime.now(UTC) + timedelta(seconds=3601)
    assert {k["kid"] for k in s.keys.jwks(later)["keys"]} == {new.kid}
    # A rotation after the window prunes the old key: its tokens can no longer verify.
    s.keys.rotate(now=later)
    assert old_kid not in {k.kid for k in s.keys.keys}
    with pytest.raises(AccessDenied, match="unknown"):
        await s.verifier.verify(old_token)
    await s.store.close()


def test_a_key_file_with_two_active_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.keys"
    SigningKeys.open(path)
    data = json.loads(path.read_text())
    data["keys"].append(dict(data["keys"][0]))
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="exactly one active key"):
        SigningKeys.open(path)


# -- external issuer -------------------------------------------------------------------------


@pytest.fixture
def external_jwks(free_port: int) -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """A JWKS with one RSA key served by http.server on loopback."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "ext-1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{free_port}/jwks.json", key
    finally:
        server.shutdown()
        server.server_close()


EXT_ISSUER = "https://idp.example.test/"
EXT_AUDIENCE = "https://tokens.example.test"


def _ext_claims(**over: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    out: dict[str, Any] = {
        "iss": EXT_ISSUER, "aud": EXT_AUDIENCE, "sub": "svc@clients", "azp": "svc",
        "scope": "read:tokens", "iat": now, "exp": now + 600,
    }
    out.update(over)
    return out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "says"),
    [
        pytest.param("ok", None, id="accepted"),
        pytest.param("wrong-audience", "not meant", id="wrong-audience"),
        pytest.param("expired", "expired", id="expired"),
        pytest.param("unknown-kid", "unknown to issuer", id="unknown-kid"),
        pytest.param("hs256-with-public-key", "'HS256'", id="hs-rs-confusion"),
        pytest.param("other-rsa-key", "signature", id="bad-signature"),
    ],
)
async def test_external_issuer_tokens(
    kind: str, says: str | None, external_jwks: tuple[str, rsa.RSAPrivateKey]
) -> None:
    url, key = external_jwks
    verifier = AccessTokenVerifier(
        MemoryStore(), SigningKeys.ephemeral(), issuer=ISSUER, audience=AUDIENCE,
        external_issuers=[ExternalIssuer(url, EXT_ISSUER, EXT_AUDIENCE)],
    )
    head = {"kid": "ext-1"}
    now = int(datetime.now(UTC).timestamp())
    if kind == "ok":
        token = jwt.encode(_ext_claims(), key, "RS256", head)
    elif kind == "wrong-audience":
        token = jwt.encode(_ext_claims(aud="https://other"), key, "RS256", head)
    elif kind == "expired":
        token = jwt.encode(_ext_claims(iat=now - 9000, exp=now - 4000), key, "RS256", head)
    elif kind == "unknown-kid":
        token = jwt.encode(_ext_claims(), key, "RS256", {"kid": "ext-2"})
    elif kind == "other-rsa-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(_ext_claims(), other, "RS256", head)
    else:
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token = _hand_made_jwt(
            {"alg": "HS256", **head}, _ext_claims(),
            lambda msg: hmac.new(pem, msg, hashlib.sha256).digest(),
        )
    if says is None:
        claims = await verifier.verify(token)
        assert (claims.client_id, claims.external) == ("svc", True)
        assert claims.scopes == frozenset({READ_SCOPE})
        return
    with pytest.raises(AccessDenied) as info:
        await verifier.verify(token)
    assert says in info.value.message


def test_external_issuer_cannot_allow_hmac() -> None:
    with pytest.raises(ConfigurationError, match="HS256"):
        ExternalIssuer("http://127.0.0.1:1/jwks", "x", "y", algorithms=("HS256",))


def test_verify_runs_in_a_plain_event_loop() -> None:
    # The verifier is usable from synchronous code through anyio.run (as the CLI does).
    store = MemoryStore()

    async def go() -> None:
        client, _ = await create_client(store, "c", [READ_SCOPE], actor="t")
        keys = SigningKeys.ephemeral()
        token = issue_access_token(
            keys, client.client_id, [READ_SCOPE], issuer=ISSUER, audience=AUDIENCE
        ).access_token
        v = AccessTokenVerifier(store, keys, issuer=ISSUER, audience=AUDIENCE)
        assert (await v.verify(token)).client_id == client.client_id

    anyio.run(go)


def test_hash_client_secret_is_sha256_hex() -> None:
    assert hash_client_secret("x") == hashlib.sha256(b"x").hexdigest()
