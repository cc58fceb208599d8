"""Machine-to-machine OAuth for the Tokens API: client credentials, signing keys, verification.

Security choices (the defaults are the safe ones):

* **Client credentials** (RFC 6749 §4.4). A client secret is 256 random bits, shown once at
  creation, stored only as its SHA-256 digest and compared with ``hmac.compare_digest``.
  A fast hash is enough here: the secret is machine-generated and high-entropy, so there is
  no dictionary to try; slow password hashes protect *guessable* secrets and would only cost
  CPU on every token request.
* **Access tokens** are JWTs signed with Ed25519 (``alg: EdDSA``), ``typ: at+jwt`` (RFC 9068)
  and a ``kid`` (the RFC 7638 thumbprint of the public key). Claims: ``iss``, ``aud``,
  ``sub`` = ``client_id``, ``scope`` (space-separated), ``iat``, ``nbf``, ``exp``, ``jti``.
* **Signing keys** live in a key file (JSON holding PEM private keys, mode 0600), not in the
  token store: the store protocol has no key table, and a key file can be deployed to every
  instance like any other secret. The file is created on first use. ``rotate`` adds a new
  active key and retires the old one; a retired key stays in the JWKS and keeps verifying
  until ``retired_at + token lifetime`` (the last token it signed has expired by then), after
  which the next rotation prunes it. Running servers re-read the file when it changes, so a
  rotation reaches them without a restart.
* **Verification** accepts only asymmetric algorithms and chooses the key from our own key
  ring (by ``kid``) or from a configured external issuer's JWKS (by ``iss``, then ``kid``).
  ``alg: none``, HMAC (the HS/RS confusion attack), an unknown ``kid``, a wrong ``iss`` or
  ``aud``, a missing or past ``exp`` are all refused. An API access token (``tgk_...``) is
  never accepted. A token from one of our own clients also stops working once the client is
  revoked (the store is asked on every management call; management is not a hot path).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import anyio.to_thread
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from token_guard.errors import ConfigurationError, TokenGuardError
from token_guard.records import OAuthClient
from token_guard.stores.base import TokenStore

READ_SCOPE = "read:tokens"
WRITE_SCOPE = "write:tokens"
SCOPES: tuple[str, ...] = (READ_SCOPE, WRITE_SCOPE)
DEFAULT_TOKEN_LIFETIME = 86_400  # seconds; the ``expires_in`` of an access token
SIGNING_ALGORITHM = "EdDSA"
ACCESS_TOKEN_TYPE = "at+jwt"
# Asymmetric only: accepting an HMAC algorithm would let anyone holding the *public* key
# (published in the JWKS) forge tokens.
EXTERNAL_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
)
CLIENT_ID_PREFIX = "tgc_"
CLIENT_SECRET_PREFIX = "tgcs_"
API_TOKEN_PREFIX = "tgk_"
_KEY_FILE_VERSION = 1


# -- errors --------------------------------------------------------------------------------


class OAuthError(TokenGuardError):
    """A refused ``POST /oauth/token`` request, shaped as RFC 6749 §5.2 says."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        """The RFC 6749 §5.2 error body."""
        return {"error": self.error, "error_description": self.description}


class AccessDenied(TokenGuardError):
    """A management call without a usable OAuth access token (401) or scope (403).

    ``code`` is ``missing_token``, ``invalid_token`` or ``insufficient_scope``;
    ``scope`` names the scope that was needed (for 403).
    """

    def __init__(
        self, message: str, hint: str, *, status: int = 401, code: str = "invalid_token",
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.code = code
        self.scope = scope

    def as_json(self) -> dict[str, str]:
        """The body ``{"error", "hint", "code"}``."""
        return {"error": self.message, "hint": self.hint, "code": self.code}

    def www_authenticate(self, realm: str = "token-guard") -> str:
        """The RFC 6750 ``WWW-Authenticate: Bearer`` challenge for this refusal."""
        if self.code == "missing_token":
            return f'Bearer realm="{realm}"'
        # The message may quote attacker-chosen claims (iss, kid): keep the header to
        # printable ASCII without quotes, so it can be neither broken nor unencodable.
        desc = "".join(
            ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in self.message
        )
        out = f'Bearer realm="{realm}", error="{self.code}", error_description="{desc}"'
        if self.scope:
            out += f', scope="{self.scope}"'
        return out


# -- clients -------------------------------------------------------------------------------


def new_client_id() -> str:
    """A fresh public client id, e.g. ``tgc_3fK9...``."""
    return CLIENT_ID_PREFIX + secrets.token_hex(10)


def new_client_secret() -> str:
    """A fresh client secret: 256 random bits, URL-safe, with a recognisable prefix."""
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_client_secret(secret: str) -> str:
    """The SHA-256 hex digest stored in place of a client secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scopes(text: str | Sequence[str]) -> tuple[str, ...]:
    """Split and check scopes (space-separated or a list); raise ValueError on an unknown one."""
    items = text.split() if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        for scope in item.replace(",", " ").split():
            if scope not in SCOPES:
                raise ValueError(
                    f"unknown scope {scope!r}; the scopes are {' and '.join(SCOPES)}"
                )
            if scope not in out:
                out.append(scope)
    return tuple(out)


async def create_client(
    store: TokenStore, name: str, scopes: Sequence[str], *, actor: str
) -> tuple[OAuthClient, str]:
    """Create an OAuth client; return it and its secret (the only time the secret exists)."""
    checked = parse_scopes(scopes)
    if not checked:
        raise ValueError(f"a client needs at least one scope: {' or '.join(SCOPES)}")
    secret = new_client_secret()
    client = await store.create_client(
        new_client_id(), hash_client_secret(secret), name, checked
    )
    await store.add_audit(
        actor, "client.create", None,
        {"client_id": client.client_id, "name": name, "scopes": list(checked)},
    )
    return client, secret


async def revoke_client(store: TokenStore, client_id: str, *, actor: str) -> OAuthClient:
    """Revoke a client (its access tokens stop working at once); raise NotFound if unknown."""
    client = await store.revoke_client(client_id)
    await store.add_audit(actor, "client.revoke", None, {"client_id": client_id})
    return client


# A digest of a secret nobody has: compared against when the client id is unknown, so an
# unknown id and a wrong secret take the same path.
_NO_CLIENT_HASH = hash_client_secret(secrets.token_urlsafe(32))


async def authenticate_client(
    store: TokenStore, client_id: str, client_secret: str
) -> OAuthClient | None:
    """The active client whose secret matches, or None (unknown, wrong secret or revoked)."""
    found = await store.get_client(client_id)
    stored = found[1] if found is not None else _NO_CLIENT_HASH
    ok = hmac.compare_digest(hash_client_secret(client_secret), stored)
    if not ok or found is None or found[0].revoked_at is not None:
        return None
    return found[0]


# -- signing keys --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_thumbprint(key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint of an Ed25519 public key (used as its ``kid``)."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_public_raw(key))},
        separators=(",", ":"), sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One Ed25519 key. ``retired_at`` set = no longer signs; verifies until ``verify_until``."""

    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)
    created_at: datetime
    retired_at: datetime | None = None
    verify_until: datetime | None = None

    @classmethod
    def generate(cls, now: datetime | None = None) -> SigningKey:
        """A fresh active key."""
        private = Ed25519PrivateKey.generate()
        return cls(key_thumbprint(private.public_key()), private, now or datetime.now(UTC))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()

    def verifies_at(self, now: datetime) -> bool:
        """True while tokens it signed may still be unexpired."""
        return self.verify_until is None or now < self.verify_until

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037)."""
        return {
            "kty": "OKP", "crv": "Ed25519", "x": _b64url(_public_raw(self.public_key)),
            "kid": self.kid, "alg": SIGNING_ALGORITHM, "use": "sig",
        }

    def _as_file_entry(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {
            "kid": self.kid,
            "created_at": self.created_at.isoformat(),
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
            "verify_until": self.verify_until.isoformat() if self.verify_until else None,
            "private_key": pem,
        }

    @classmethod
    def _from_file_entry(cls, entry: Mapping[str, Any], path: Path) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(
                str(entry["private_key"]).encode("ascii"), password=None
            )
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            retired, until = entry.get("retired_at"), entry.get("verify_until")
            return cls(
                kid=key_thumbprint(private.public_key()),
                private_key=private,
                created_at=datetime.fromisoformat(str(entry["created_at"])),
                retired_at=datetime.fromisoformat(retired) if retired else None,
                verify_until=datetime.fromisoformat(until) if until else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"key file {path}: an entry is unreadable ({exc}); restore the file from a "
                "backup or delete it to start over (outstanding OAuth tokens then stop working)"
            ) from None


class SigningKeys:
    """The key ring: one active Ed25519 key that signs, retired ones that still verify.

    Backed by a key file (``SigningKeys.open(path)``) or held in memory
    (``SigningKeys.ephemeral()``, for tests). A file-backed ring re-reads the file when its
    modification time changes, so ``token-guard keys rotate`` reaches running servers.
    """

    def __init__(self, keys: Sequence[SigningKey], path: Path | None = None) -> None:
        active = [k for k in keys if k.retired_at is None]
        if len(active) != 1:
            raise ConfigurationError(
                f"a key ring needs exactly one active key, found {len(active)}"
                + (f" in {path}; run 'token-guard keys rotate' to repair it" if path else "")
            )
        self._keys = tuple(keys)
        self._path = path
        self._stamp = _file_stamp(path) if path is not None else None

    @classmethod
    def ephemeral(cls) -> SigningKeys:
        """An in-memory ring with one fresh key (tokens die with the process)."""
        return cls([SigningKey.generate()])

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> SigningKeys:
        """Load the key file at ``path``; create it (mode 0600, one fresh key) if absent."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise ConfigurationError(
                    f"no key file at {p}; run 'token-guard serve' or 'token-guard keys rotate' "
                    "once to create it"
                )
            _write_key_file(p, [SigningKey.generate()], exclusive=True)
        return cls(_read_key_file(p), p)

    @property
    def path(self) -> Path | None:
        """The key file, or None for an in-memory ring."""
        return self._path

    def refresh(self) -> None:
        """Re-read the key file if it changed since it was loaded."""
        if self._path is None:
            return
        try:
            stamp = _file_stamp(self._path)
        except OSError:
            return  # keep serving with the keys already loaded
        if stamp != self._stamp:
            keys = _read_key_file(self._path)
            SigningKeys(keys)  # validates: exactly one active key
            self._keys, self._stamp = tuple(keys), stamp

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key in the ring, oldest first."""
        return self._keys

    @property
    def active(self) -> SigningKey:
        """The key that signs new tokens."""
        return next(k for k in self._keys if k.retired_at is None)

    def verifying(self, now: datetime) -> dict[str, SigningKey]:
        """Keys that still verify at ``now``, by kid."""
        return {k.kid: k for k in self._keys if k.verifies_at(now)}

    def jwks(self, now: datetime | None = None) -> dict[str, Any]:
        """The public JWK Set served at ``/.well-known/jwks.json``."""
        at = now or datetime.now(UTC)
        return {"keys": [k.public_jwk() for k in self.verifying(at).values()]}

    def rotate(
        self, *, token_lifetime: int = DEFAULT_TOKEN_LIFETIME, now: datetime | None = None
    ) -> SigningKey:
        """Add a new active key, retire the old one, prune keys past their verify window."""
        at = now or datetime.now(UTC)
        self.refresh()
        kept = [
            replace(k, retired_at=at, verify_until=at + timedelta(seconds=token_lifetime))
            if k.retired_at is None else k
            for k in self._keys
            if k.verifies_at(at)
        ]
        new = SigningKey.generate(at)
        keys = [*kept, new]
        if self._path is not None:
            _write_key_file(self._path, keys, exclusive=False)
            self._stamp = _file_stamp(self._path)
        self._keys = tuple(keys)
        return new


def _file_stamp(path: Path) -> tuple[int, int, int]:
    # The inode changes on every atomic rewrite, so a rotation is seen even when the
    # filesystem's mtime granularity is coarser than the time between two writes.
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_key_file(path: Path) -> list[SigningKey]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != _KEY_FILE_VERSION:
        raise ConfigurationError(
            f"key file {path} is not a token-guard key file (version {_KEY_FILE_VERSION})"
        )
    return [SigningKey._from_file_entry(e, path) for e in data.get("keys", [])]


def _write_key_file(path: Path, keys: Sequence[SigningKey], *, exclusive: bool) -> None:
    """Write atomically with mode 0600; ``exclusive`` fails quietly if another wrote first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(
        {"version": _KEY_FILE_VERSION, "keys": [k._as_file_entry() for k in keys]}, indent=2
    )
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            # link() fails if the path exists: two servers starting at once agree on one file.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
            tmp = ""
    finally:
        if tmp:
            os.unlink(tmp)


# -- issuing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    """The answer to a client-credentials grant."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 token response body."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": " ".join(self.scope),
        }


def issue_access_token(
    keys: SigningKeys, client_id: str, scopes: Sequence[str], *, issuer: str, audience: str,
    lifetime: int = DEFAULT_TOKEN_LIFETIME, now: datetime | None = None,
) -> IssuedAccessToken:
    """Sign an access token for ``client_id`` with the active key."""
    at = now or datetime.now(UTC)
    keys.refresh()
    key = keys.active
    iat = int(at.timestamp())
    claims = {
        "iss": issuer, "aud": audience, "sub": client_id, "client_id": client_id,
        "scope": " ".join(scopes), "iat": iat, "nbf": iat, "exp": iat + lifetime,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(
        claims, key.private_key, algorithm=SIGNING_ALGORITHM,
        headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    return IssuedAccessToken(token, lifetime, tuple(scopes))


async def client_credentials_grant(
    store: TokenStore, keys: SigningKeys, params: Mapping[str, str],
    basic: tuple[str, str] | None, *, issuer: str, audience: str,
    lifetime: int = DEFAULT_TOKEN_LIFETIME,
) -> tuple[IssuedAccessToken, OAuthClient]:
    """Run RFC 6749 §4.4 on the request parameters; raise OAuthError per §5.2."""
    grant_type = params.get("grant_type")
    if not grant_type:
        raise OAuthError(
            "invalid_request", "grant_type is missing; send grant_type=client_credentials"
        )
    if grant_type != "client_credentials":
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type {grant_type!r} is not supported; use client_credentials",
        )
    in_body = "client_id" in params or "client_secret" in params
    if basic is not None and in_body:
        raise OAuthError(
            "invalid_request",
            "client credentials were sent both in the Authorization header and in the body; "
            "use one of them",
        )
    client_id, client_secret = basic if basic is not None else (
        params.get("client_id", ""), params.get("client_secret", "")
    )
    if not client_id or not client_secret:
        raise OAuthError(
            "invalid_client",
            "client authentication is missing; send client_id and client_secret in the form "
            "body or with HTTP Basic",
            status=401,
        )
    requested_audience = params.get("audience")
    if requested_audience is not None and requested_audience != audience:
        raise OAuthError(
            "invalid_request",
            f"audience {requested_audience!r} is not served here; omit it or use {audience!r}",
        )
    client = await authenticate_client(store, client_id, client_secret)
    if client is None:
        raise OAuthError(
            "invalid_client",
            "client authentication failed: unknown client, wrong secret or revoked client",
            status=401,
        )
    if "scope" in params:
        try:
            wanted = parse_scopes(params["scope"])
        except ValueError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        extra = [s for s in wanted if s not in client.scopes]
        if extra:
            raise OAuthError(
                "invalid_scope",
                f"this client may not request {' '.join(extra)}; its scopes are "
                f"{' '.join(client.scopes) or '(none)'}",
            )
        if not wanted:
            raise OAuthError("invalid_scope", f"scope is empty; ask for {' or '.join(SCOPES)}")
    else:
        wanted = client.scopes
    issued = issue_access_token(
        keys, client.client_id, wanted, issuer=issuer, audience=audience, lifetime=lifetime
    )
    return issued, client


# -- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalIssuer:
    """Another authorization server whose JWTs the Tokens API accepts.

    ``scope`` comes from the ``scope`` claim (space-separated) or ``scp`` (a list); the
    actor recorded in the audit is ``client_id``, else ``azp``, else ``sub``.
    """

    jwks_url: str
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = EXTERNAL_ALGORITHMS
    jwks_cache_seconds: float = 300.0

    def __post_init__(self) -> None:
        bad = [a for a in self.algorithms if a not in EXTERNAL_ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigurationError(
                f"external issuer {self.issuer!r}: algorithms {bad or '[]'} are not allowed; "
                f"choose among {', '.join(EXTERNAL_ALGORITHMS)}"
            )


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified management caller: who, which scopes, from which issuer."""

    client_id: str
    scopes: frozenset[str]
    issuer: str
    expires_at: datetime
    external: bool = False

    def require(self, scope: str) -> None:
        """Raise a 403 ``AccessDenied`` unless the token carries ``scope``."""
        if scope not in self.scopes:
            raise AccessDenied(
                f"this access token lacks the {scope} scope",
                f"request a token with scope={scope} from a client allowed that scope",
                status=403, code="insufficient_scope", scope=scope,
            )


_REISSUE_HINT = "get a new access token from POST /oauth/token"


def _invalid(message: str, hint: str = _REISSUE_HINT) -> AccessDenied:
    return AccessDenied(message, hint)


class AccessTokenVerifier:
    """Verify Tokens API bearer tokens: our own JWTs and configured external issuers'."""

    def __init__(
        self, store: TokenStore, keys: SigningKeys, *, issuer: str, audience: str,
        external_issuers: Sequence[ExternalIssuer] = (), leeway: float = 30.0,
    ) -> None:
        self._store = store
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._external: dict[str, tuple[ExternalIssuer, jwt.PyJWKClient]] = {}
        for ext in external_issuers:
            if ext.issuer == issuer or ext.issuer in self._external:
                raise ConfigurationError(
                    f"issuer {ext.issuer!r} is configured twice; give each issuer once"
                )
            client = jwt.PyJWKClient(ext.jwks_url, lifespan=ext.jwks_cache_seconds, timeout=5)
            self._external[ext.issuer] = (ext, client)

    async def verify(self, token: str) -> AccessClaims:
        """The verified caller, or raise ``AccessDenied`` (401) saying what was wrong."""
        if token.startswith(API_TOKEN_PREFIX):
            raise AccessDenied(
                "an API access token cannot call the Tokens API",
                "use an OAuth access token: POST /oauth/token with "
                "grant_type=client_credentials and your client id and secret",
            )
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in EXTERNAL_ALGORITHMS:
            raise _invalid(
                f"JWT algorithm {alg!r} is not accepted; tokens must be signed with an "
                "asymmetric key"
            )
        iss = unverified.get("iss")
        if iss == self._issuer:
            return await self._verify_own(token, header)
        if isinstance(iss, str) and iss in self._external:
            return await self._verify_external(token, *self._external[iss])
        raise _invalid(f"JWT issuer {iss!r} is not trusted here")

    async def _verify_own(self, token: str, header: Mapping[str, Any]) -> AccessClaims:
        self._keys.refresh()
        now = datetime.now(UTC)
        kid = header.get("kid")
        key = self._keys.verifying(now).get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid(f"JWT key id {kid!r} is unknown (the key may have been retired)")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise _invalid(f"JWT type must be {ACCESS_TOKEN_TYPE!r}")
        claims = self._decode(
            token, key.public_key, [SIGNING_ALGORITHM], self._issuer, self._audience
        )
        client_id = claims.get("client_id")
        if not isinstance(client_id, str):
            raise _invalid("JWT has no client_id")
        found = await self._store.get_client(client_id)
        if found is None or found[0].revoked_at is not None:
            raise _invalid(
                "the OAuth client of this access token was revoked",
                "ask an administrator for an active client ('token-guard clients create')",
            )
        return AccessClaims(
            client_id, _scopes_of(claims), self._issuer,
            datetime.fromtimestamp(claims["exp"], UTC),
        )

    async def _verify_external(
        self, token: str, ext: ExternalIssuer, client: jwt.PyJWKClient
    ) -> AccessClaims:
        try:
            # PyJWKClient fetches over blocking urllib; keep it off the event loop.
            signing_key = await anyio.to_thread.run_sync(client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError:
            raise _invalid(
                f"the JWKS of issuer {ext.issuer!r} cannot be fetched now",
                "retry later; the issuer's key set is unreachable",
            ) from None
        except jwt.PyJWTError:
            raise _invalid(f"JWT key id is unknown to issuer {ext.issuer!r}") from None
        claims = self._decode(
            token, signing_key.key, list(ext.algorithms), ext.issuer, ext.audience
        )
        actor = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not isinstance(actor, str) or not actor:
            raise _invalid("JWT names no client (client_id, azp or sub)")
        return AccessClaims(
            actor, _scopes_of(claims), ext.issuer,
            datetime.fromtimestamp(claims["exp"], UTC), external=True,
        )

    def _decode(
        self, token: str, key: Any, algorithms: list[str], issuer: str, audience: str
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=algorithms, audience=audience, issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise _invalid(
                f"the access token is not meant for this API (audience {audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise _invalid(f"the access token's issuer is not {issuer!r}") from None
        except jwt.InvalidAlgorithmError:
            raise _invalid(
                f"JWT algorithm is not accepted; expected {', '.join(algorithms)}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"the access token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # TypeError/ValueError: a key of the wrong type for the header's algorithm.
            raise _invalid("the access token's signature does not verify") from None
        return claims


def _scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    return frozenset()


def client_from_basic(header_value: str) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic`` client credentials (form-urlencoded, RFC 6749 §2.3.1).

    Returns None when the header is not Basic; raises OAuthError when it is malformed.
    """
    scheme, _, value = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", "the Basic credentials are not valid base64 of id:secret",
            status=401,
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(
            "invalid_client", "the Basic credentials need the form client_id:client_secret",
            status=401,
        )
    return unquote_plus(client_id), unquote_plus(secret)
