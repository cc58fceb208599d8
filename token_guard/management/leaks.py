"""Leaked secrets: "which token is this secret?" and the endpoint a secret scanner reports to.

* ``POST /v3/tokens/find`` with ``{"token": "tgk_..."}`` (``read:tokens``): the token the
  secret belongs to, found by its hash, with what this secret is now (``secret.current``
  false for a secret a rotation replaced; ``state`` is ``rotated`` once its grace is over).
  The secret travels in the body, never in a URL, and is never in the answer.
* ``POST /v3/secret-scanning/github``: GitHub's secret scanning partner programme. GitHub
  POSTs a JSON list ``[{"token", "type", "url", "source"}]`` signed with ECDSA (P-256,
  SHA-256): ``Github-Public-Key-Identifier`` names the key, ``Github-Public-Key-Signature`` is
  the base64 DER signature of the raw body. The keys are configured (GitHub publishes them at
  ``https://api.github.com/meta/public_keys/secret_scanning``); nothing is fetched here.

Security choices for the scanner endpoint: it takes no OAuth token, so the signature is its
only authentication: an unknown key id, a missing or bad signature is 401 before the body is
parsed; the body is bounded (``MAX_REPORT_BYTES``, ``MAX_REPORT_ITEMS``). A reported secret
that is a token's current secret revokes the token; one that a rotation replaced and that
still works ends that token's grace period (the current secret stays valid); both are
``true_positive``. Anything else (unknown, malformed, already revoked or past its grace) is
``false_positive``: it opens nothing. Every report is audited (``token.leak_reported``, with
the url and source, never the secret), and the answer lists each reported secret, as the
programme requires (``token_raw`` is GitHub's own data sent back to it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from token_guard.core.decision import INVALID_SIGNATURE, NOT_FOUND
from token_guard.core.errors import ConfigurationError
from token_guard.core.records import TokenRecord
from token_guard.core.secret import hash_secret, is_well_formed, secret_prefix
from token_guard.core.spec import format_datetime
from token_guard.management.api import MAX_BODY_BYTES, TokensApi, guarded
from token_guard.management.clients import READ_SCOPE
from token_guard.management.http import NO_STORE, BadRequest, error_response, read_body
from token_guard.management.verify import AccessTokenVerifier
from token_guard.stores.base import TokenStore

__all__ = ["GITHUB_SCANNING_PATH", "SCANNER_ACTOR", "LeakedSecrets", "load_scanning_keys"]

GITHUB_SCANNING_PATH = "/v3/secret-scanning/github"
SCANNER_ACTOR = "secret-scanning:github"
AUDIT_LEAK = "token.leak_reported"
MAX_REPORT_BYTES = 1024 * 1024
MAX_REPORT_ITEMS = 1000

ScanningKey = ec.EllipticCurvePublicKey


def load_scanning_keys(keys: Mapping[str, str | bytes]) -> dict[str, ScanningKey]:
    """Parse ``{key_identifier: PEM public key}`` once, at start-up (ECDSA keys only)."""
    out: dict[str, ScanningKey] = {}
    for key_id, pem in keys.items():
        try:
            key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
        except ValueError as exc:
            raise ConfigurationError(
                f"secret_scanning_keys[{key_id!r}] is not a PEM public key ({exc}); copy the "
                "'key' of https://api.github.com/meta/public_keys/secret_scanning"
            ) from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigurationError(
                f"secret_scanning_keys[{key_id!r}] is not an ECDSA public key; GitHub signs "
                "with ECDSA P-256"
            )
        out[key_id] = key
    return out


@dataclass(frozen=True, slots=True)
class _Reported:
    token: str
    type: str
    url: str
    source: str


class LeakedSecrets(TokensApi):
    """``POST /v3/tokens/find`` and, with keys configured, the GitHub scanner's endpoint."""

    def __init__(
        self, store: TokenStore, verifier: AccessTokenVerifier,
        scanning_keys: Mapping[str, str | bytes] | None = None,
    ) -> None:
        super().__init__(store, verifier)
        self.scanning_keys = load_scanning_keys(scanning_keys or {})

    def routes(self) -> list[Route]:
        """``/v3/tokens/find``, and the scanner's route only when keys are configured."""
        routes = [Route("/v3/tokens/find", guarded(self.find), methods=["POST"])]
        if self.scanning_keys:
            routes.append(Route(GITHUB_SCANNING_PATH, guarded(self.github), methods=["POST"]))
        return routes

    async def find(self, request: Request) -> Response:
        """``POST /v3/tokens/find`` with ``{"token": secret}``: which token is this?"""
        await self.caller(request, READ_SCOPE)
        raw = await read_body(request, MAX_BODY_BYTES)
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        secret = body.get("token") if isinstance(body, dict) else None
        if not isinstance(secret, str) or set(body) != {"token"}:
            raise BadRequest("token", "send the secret as {\"token\": \"tgk_...\"}",
                             "the body holds only the secret, never a URL parameter")
        if not is_well_formed(secret):
            raise BadRequest(
                "token", "this is not a token_guard secret (tgk_, 38 characters, checksum)",
                "check that the whole secret was copied",
            )
        record = await self.store.get_by_secret_hash(hash_secret(secret))
        if record is None:
            return error_response(
                404, NOT_FOUND, "no token has this secret",
                "it may belong to another token_guard installation, or was never issued",
            )
        return JSONResponse(found_json(record, datetime.now(UTC)), headers=NO_STORE)

    async def github(self, request: Request) -> Response:
        """``POST /v3/secret-scanning/github``: verify, revoke matches, answer per secret."""
        raw = await read_body(request, MAX_REPORT_BYTES)
        refusal = self._verify(request, raw)
        if refusal is not None:
            return refusal
        reports = _reports(raw)
        answer = []
        for item in reports:
            label = await self._handle(item)
            answer.append({"token_raw": item.token, "token_type": item.type, "label": label})
        return JSONResponse(answer, headers=NO_STORE)

    def _verify(self, request: Request, raw: bytes) -> Response | None:
        key_id = request.headers.get("github-public-key-identifier", "")
        signature = request.headers.get("github-public-key-signature", "")
        key = self.scanning_keys.get(key_id)
        if key is None or not signature:
            return error_response(
                401, INVALID_SIGNATURE, "the report is not signed by a configured key",
                "send Github-Public-Key-Identifier and Github-Public-Key-Signature; configure "
                "GitHub's current keys in secret_scanning_keys",
            )
        try:
            key.verify(base64.b64decode(signature, validate=True), raw, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            return error_response(
                401, INVALID_SIGNATURE, "the report's signature does not verify",
                "sign the exact body with the key Github-Public-Key-Identifier names",
            )
        return None

    async def _handle(self, item: _Reported) -> str:
        """Revoke (or end the grace of) a live leaked secret; audit the report."""
        label, token_id, outcome = "false_positive", None, "unknown"
        record = None
        if is_well_formed(item.token):
            record = await self.store.get_by_secret_hash(hash_secret(item.token))
        if record is not None:
            token_id = record.id
            state = record.state(datetime.now(UTC))
            if state in ("active", "disabled"):
                label = "true_positive"
                secret = record.secret
                if secret is not None and secret.expires_at is not None:
                    await self.store.end_rotation_grace(record.id, actor=SCANNER_ACTOR)
                    outcome = "grace_ended"
                else:
                    await self.store.revoke_token(record.id, actor=SCANNER_ACTOR)
                    outcome = "revoked"
            else:
                outcome = f"already_{state}"
        await self.store.add_audit(SCANNER_ACTOR, AUDIT_LEAK, token_id, {
            "url": item.url, "source": item.source, "type": item.type, "label": label,
            "outcome": outcome,
            "prefix": secret_prefix(item.token) if is_well_formed(item.token) else None,
        })
        return label


def _reports(raw: bytes) -> list[_Reported]:
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body", "the report is not valid JSON",
                         'send [{"token": ..., "type": ..., "url": ..., "source": ...}]') from None
    if not isinstance(body, list) or len(body) > MAX_REPORT_ITEMS:
        raise BadRequest("body", f"the report must be a JSON list of at most {MAX_REPORT_ITEMS}",
                         'send [{"token": ..., "type": ..., "url": ..., "source": ...}]')
    out = []
    for i, item in enumerate(body):
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise BadRequest(f"[{i}].token", f"item {i} has no token string",
                             'each item is {"token": ..., "type": ..., "url": ..., "source": ...}')
        out.append(_Reported(
            item["token"], str(item.get("type", "")), str(item.get("url", "")),
            str(item.get("source", "")),
        ))
    return out


def found_json(record: TokenRecord, now: datetime) -> dict[str, Any]:
    """A token found by one of its secrets, and what that secret is now."""
    out = record.as_json(now)
    secret = record.secret
    out["secret"] = {
        "prefix": None if secret is None else secret.prefix,
        "current": secret is None or secret.expires_at is None,
        "expires_at": None if secret is None else format_datetime(secret.expires_at),
        "rotated_at": None if secret is None else format_datetime(secret.rotated_at),
    }
    return out
