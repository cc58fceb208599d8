"""Token secrets: a fixed prefix, 190 random bits and a CRC32 checksum, stored only as SHA-256.

The format follows GitHub's tokens (``ghp_`` + base62 + CRC32): a secret scanner can find
a leaked ``tgk_`` token by its shape, and a mistyped or forged token is refused by its
checksum before any store lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

TOKEN_PREFIX = "tgk_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 32  # 32 * log2(62) = 190.5 bits of entropy
_CHECK_LEN = 6  # 62**6 > 2**32: every CRC32 fits
TOKEN_LENGTH = len(TOKEN_PREFIX) + _BODY_LEN + _CHECK_LEN
_ALPHABET_SET = frozenset(_ALPHABET)


# Every pair of base62 digits, by value: a CRC32 (< 62**6) is three of them, so a checksum
# is three divisions and three look-ups. Every unknown token a request sends (a flood of
# made-up ones) has its checksum checked; digit by digit in a loop, is_well_formed cost
# twice as many instructions.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
_PAIR = len(_PAIRS)  # 62 ** 2
_PAIR2 = _PAIR * _PAIR
_PREFIX_LEN = len(TOKEN_PREFIX)
_crc32 = zlib.crc32
_compare = secrets.compare_digest


def _checksum(prefix_and_body: str) -> str:
    n = _crc32(prefix_and_body.encode("ascii"))
    return _PAIRS[n // _PAIR2] + _PAIRS[n // _PAIR % _PAIR] + _PAIRS[n % _PAIR]


def new_secret() -> str:
    """A fresh token secret, e.g. ``tgk_`` + 32 base62 characters + a 6-character checksum."""
    return secret_from_body("".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN)))


def secret_from_body(body: str) -> str:
    """The secret with this 32-character base62 body: prefix, body and checksum."""
    if len(body) != _BODY_LEN or not _ALPHABET_SET.issuperset(body):
        raise ValueError(f"a secret body is {_BODY_LEN} base62 characters")
    head = TOKEN_PREFIX + body
    return head + _checksum(head)


def is_well_formed(token: str) -> bool:
    """True if ``token`` has the prefix, length, alphabet and a matching checksum."""
    if len(token) != TOKEN_LENGTH or token[:_PREFIX_LEN] != TOKEN_PREFIX:
        return False
    rest = token[_PREFIX_LEN:]
    # ASCII letters and digits are exactly the base62 alphabet (tests/test_secret.py).
    if not (rest.isascii() and rest.isalnum()):
        return False
    n = _crc32(token[:-_CHECK_LEN].encode("ascii"))  # _checksum, written out
    return _compare(_PAIRS[n // _PAIR2] + _PAIRS[n // _PAIR % _PAIR] + _PAIRS[n % _PAIR],
                    token[-_CHECK_LEN:])


PREFIX_BODY_CHARS = 8
"""Body characters kept in the clear as a secret's prefix (``tgk_`` + 8, as Unkey shows a
key's start): 8 * log2(62) = 47.6 bits are shown, so 24 body characters (142.9 bits, past
the 128 bits no search reaches) stay secret. The checksum is a function of the body and
is never part of the prefix."""

#: The secret's shape for secret scanners (GitHub's partner programme registers a regex).
SECRET_PATTERN = rf"\b{TOKEN_PREFIX}[0-9A-Za-z]{{{_BODY_LEN + _CHECK_LEN}}}\b"


def secret_prefix(token: str) -> str:
    """The non-secret start of ``token`` that lists show: ``tgk_`` and 8 characters."""
    return token[: len(TOKEN_PREFIX) + PREFIX_BODY_CHARS]


def hash_secret(token: str) -> str:
    """The SHA-256 hex digest stored in place of the secret."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_id() -> str:
    """A public token id (not secret): names the token in management and logs."""
    return "tok_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))
