"""Leaked secrets: the secret pattern scanners register, ``POST /v3/tokens/find``, and the
GitHub secret scanning partner endpoint, verified with an ECDSA key pair made here (GitHub's
real keys are configured the same way; nothing is fetched)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.test_tokens_api import AUDIENCE, ISSUER
from tests.tokens import BODY
from token_guard.core.errors import ConfigurationError
from token_guard.core.secret import SECRET_PATTERN, hash_secret, new_secret, secret_prefix
from token_guard.management import READ_SCOPE, WRITE_SCOPE, create_client, create_management_app
from token_guard.management.leaks import GITHUB_SCANNING_PATH, load_scanning_keys
from token_guard.stores import MemoryStore

pytestmark = pytest.mark.anyio
KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass
class Site:
    http: httpx.AsyncClient
    store: MemoryStore
    reader: dict[str, str]
    writer: dict[str, str]
    key: ec.EllipticCurvePrivateKey

    def signed(self, payload: Any, key: ec.EllipticCurvePrivateKey | None = None,
               key_id: str = KEY_ID) -> tuple[bytes, dict[str, str]]:
        raw = json.dumps(payload).encode()
        signature = (key or self.key).sign(raw, ec.ECDSA(hashes.SHA256()))
        return raw, {
            "Github-Public-Key-Identifier": key_id,
            "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
            "Content-Type": "application/json",
        }


async def _bearer(http: httpx.AsyncClient, store: MemoryStore, scopes: list[str]) -> dict[str, str]:
    client, secret = await create_client(store, "c", scopes, actor="t")
    r = await http.post("/oauth/token", auth=(client.client_id, secret),
                        data={"grant_type": "client_credentials"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    store = MemoryStore()
    key = ec.generate_private_key(ec.SECP256R1())
    app = create_management_app(store, issuer=ISSUER, audience=AUDIENCE,
                                secret_scanning_keys={KEY_ID: _pem(key)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tg"
    ) as http:
        yield Site(http, store, await _bearer(http, store, [READ_SCOPE]),
                   await _bearer(http, store, [WRITE_SCOPE]), key)


# -- the pattern ----------------------------------------------------------------------------
def test_the_registered_pattern_finds_secrets_and_nothing_longer() -> None:
    secret = new_secret()
    text = f"config: TOKEN={secret}\nother=tgk_short {secret}x"
    assert re.findall(SECRET_PATTERN, text) == [secret]
    assert secret_prefix(secret) == secret[:12] and secret_prefix(secret).startswith("tgk_")


# -- which token is this? -------------------------------------------------------------------
async def test_find_names_the_token_of_a_current_or_replaced_secret(site: Site) -> None:
    issued = await site.store.create_token(BODY)
    r = await site.http.post("/v3/tokens/find", json={"token": issued.token}, headers=site.reader)
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["id"] == issued.id and found["state"] == "active"
    assert found["secret"]["current"] is True and issued.token not in r.text
    assert found["secret"]["prefix"] == secret_prefix(issued.token)
    rotated = await site.store.rotate_token(issued.id, grace_seconds=3600)
    r = await site.http.post("/v3/tokens/find", json={"token": issued.token}, headers=site.reader)
    assert r.json()["secret"]["current"] is False and r.json()["state"] == "active"
    assert r.json()["secret"]["expires_at"] is not None
    await site.store.end_rotation_grace(issued.id)
    r = await site.http.post("/v3/tokens/find", json={"token": issued.token}, headers=site.reader)
    assert r.json()["state"] == "rotated" and r.json()["id"] == issued.id
    r = await site.http.post("/v3/tokens/find", json={"token": rotated.token}, headers=site.reader)
    assert r.json()["secret"]["current"] is True and r.json()["state"] == "active"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"token": new_secret()}, 404, id="unknown"),
        pytest.param({"token": "tgk_" + "a" * 38}, 400, id="bad-checksum"),
        pytest.param({"token": 42}, 400, id="not-text"),
        pytest.param({"secret": "x"}, 400, id="wrong-member"),
        pytest.param(["tgk_x"], 400, id="not-an-object"),
    ],
)
async def test_find_refuses_what_is_no_secret_of_ours(site: Site, body: Any, status: int) -> None:
    r = await site.http.post("/v3/tokens/find", json=body, headers=site.reader)
    assert r.status_code == status, r.text
    assert r.json()["code"] == ("not_found" if status == 404 else "invalid_request")


async def test_find_needs_read_scope(site: Site) -> None:
    issued = await site.store.create_token(BODY)
    r = await site.http.post("/v3/tokens/find", json={"token": issued.token}, headers=site.writer)
    assert r.status_code == 403
    r = await site.http.post("/v3/tokens/find", json={"token": issued.token})
    assert r.status_code == 401 and issued.token not in r.text


# -- GitHub secret scanning -----------------------------------------------------------------
async def test_a_signed_report_revokes_live_secrets_and_labels_each(site: Site) -> None:
    leaked = await site.store.create_token(BODY)
    rotated_token = await site.store.create_token(BODY)
    rotated = await site.store.rotate_token(rotated_token.id, grace_seconds=3600)
    gone = await site.store.create_token(BODY)
    await site.store.revoke_token(gone.id)
    unknown = new_secret()
    report = [
        {"token": leaked.token, "type": "token_guard_api_token",
         "url": "https://github.com/o/r/blob/abc/config.py", "source": "content"},
        {"token": rotated_token.token, "type": "token_guard_api_token", "url": "u2",
         "source": "commit"},
        {"token": gone.token, "type": "token_guard_api_token", "url": "u3", "source": "content"},
        {"token": unknown, "type": "token_guard_api_token", "url": "u4", "source": "issue"},
        {"token": "tgk_not-a-secret", "type": "token_guard_api_token", "url": "u5",
         "source": "content"},
    ]
    raw, headers = site.signed(report)
    r = await site.http.post(GITHUB_SCANNING_PATH, content=raw, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"token_raw": item["token"], "token_type": "token_guard_api_token", "label": label}
        for item, label in zip(report, ["true_positive", "true_positive", "false_positive",
                                        "false_positive", "false_positive"], strict=True)
    ]
    now = datetime.now(UTC)
    record = await site.store.get_token(leaked.id)
    assert record is not None and record.state(now) == "revoked"
    # The leaked secret was one a rotation replaced: its grace ends; the new one still works.
    record = await site.store.get_token(rotated_token.id)
    assert record is not None and record.state(now) == "active"
    old = await site.store.get_by_secret_hash(hash_secret(rotated_token.token))
    assert old is not None and old.state(now) == "rotated"
    entries = [e for e in await site.store.list_audit() if e.actor == "secret-scanning:github"]
    reports = [e for e in entries if e.action == "token.leak_reported"]
    assert len(reports) == 5
    first = next(e for e in reports if e.token_id == leaked.id)
    assert first.detail["url"] == "https://github.com/o/r/blob/abc/config.py"
    assert first.detail["outcome"] == "revoked" and first.detail["label"] == "true_positive"
    assert {e.action for e in entries} >= {"token.revoke", "token.rotate.expire"}
    for entry in entries:
        for secret in (leaked.token, rotated_token.token, rotated.token, unknown):
            assert secret not in repr(entry)


@pytest.mark.parametrize("attack", ["unknown-key", "no-signature", "tampered", "other-key",
                                    "not-base64"])
async def test_an_unverified_report_revokes_nothing(site: Site, attack: str) -> None:
    issued = await site.store.create_token(BODY)
    raw, headers = site.signed([{"token": issued.token, "type": "t", "url": "u", "source": "s"}])
    if attack == "unknown-key":
        headers["Github-Public-Key-Identifier"] = "someone-else"
    elif attack == "no-signature":
        del headers["Github-Public-Key-Signature"]
    elif attack == "tampered":
        raw = raw.replace(b'"u"', b'"v"')
    elif attack == "other-key":
        raw, headers = site.signed(json.loads(raw), key=ec.generate_private_key(ec.SECP256R1()))
    else:
        headers["Github-Public-Key-Signature"] = "%%%not base64%%%"
    r = await site.http.post(GITHUB_SCANNING_PATH, content=raw, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
    record = await site.store.get_token(issued.id)
    assert record is not None and record.revoked_at is None
    assert not [e for e in await site.store.list_audit() if e.action == "token.leak_reported"]


async def test_a_signed_report_that_is_no_list_is_400(site: Site) -> None:
    raw, headers = site.signed({"token": "x"})
    r = await site.http.post(GITHUB_SCANNING_PATH, content=raw, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


async def test_without_keys_the_scanner_route_does_not_exist() -> None:
    app = create_management_app(MemoryStore(), issuer=ISSUER, audience=AUDIENCE)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tg"
    ) as http:
        assert (await http.post(GITHUB_SCANNING_PATH, content=b"[]")).status_code == 404


def test_a_bad_scanning_key_fails_at_start_up_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="secret_scanning_keys\\['k1'\\]"):
        load_scanning_keys({"k1": "not a pem"})
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigurationError, match="not an ECDSA public key"):
        load_scanning_keys({"k2": ed})
