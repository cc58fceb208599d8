"""The signing key ring of our OAuth access tokens: Ed25519 keys, the key file, the JWKS.

Security choices:

* **Signing keys** live in a key file (JSON holding PEM private keys, mode 0600), not in the
  token store: the store protocol has no key table, and a key file can be deployed to every
  instance like any other secret. The file is created on first use. ``rotate`` adds a new
  active key and retires the old one; a retired key stays in the JWKS and keeps verifying
  until ``retired_at + token lifetime`` (the last token it signed has expired by then), after
  which the next rotation prunes it. Running servers re-read the file when it changes, so a
  rotation reaches them without a restart.
* A key's ``kid`` is the RFC 7638 thumbprint of its public key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from token_guard.core.errors import ConfigurationError

DEFAULT_TOKEN_LIFETIME = 86_400  # seconds; the ``expires_in`` of an access token
SIGNING_ALGORITHM = "EdDSA"
_KEY_FILE_VERSION = 1



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

