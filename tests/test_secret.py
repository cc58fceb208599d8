"""Token secrets: prefix, entropy, checksum; only the SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import string
import zlib

from hypothesis import given
from hypothesis import strategies as st

from token_guard.core.secret import (
    TOKEN_LENGTH,
    TOKEN_PREFIX,
    hash_secret,
    is_well_formed,
    new_secret,
    new_token_id,
    secret_from_body,
)


def test_new_secrets_are_well_formed_and_distinct() -> None:
    secrets = {new_secret() for _ in range(2000)}
    assert len(secrets) == 2000
    for secret in secrets:
        assert secret.startswith(TOKEN_PREFIX) and len(secret) == TOKEN_LENGTH
        assert is_well_formed(secret)


def test_one_changed_character_fails_the_checksum() -> None:
    secret = new_secret()
    for i in range(len(TOKEN_PREFIX), len(secret)):
        swapped = "A" if secret[i] != "A" else "B"
        assert not is_well_formed(secret[:i] + swapped + secret[i + 1 :])


@given(st.text(max_size=60))
def test_random_text_is_not_well_formed(text: str) -> None:
    assert not is_well_formed(text) or text.startswith(TOKEN_PREFIX)


def test_hash_is_sha256_and_ids_are_not_secrets() -> None:
    secret = new_secret()
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    token_id = new_token_id()
    assert token_id.startswith("tok_") and not is_well_formed(token_id)


def test_ascii_letters_and_digits_are_exactly_the_alphabet() -> None:
    # is_well_formed reads the alphabet as str.isascii() and str.isalnum().
    alphabet = {chr(c) for c in range(128) if chr(c).isalnum()}
    assert alphabet == set(string.digits + string.ascii_letters)


def _reference_checksum(head: str) -> str:
    # The checksum as first written: CRC32 in base62, six digits, most significant first.
    number = zlib.crc32(head.encode("ascii"))
    digits = ""
    for _ in range(6):
        number, rest = divmod(number, 62)
        digits = ALPHABET[rest] + digits
    return digits


def _reference_is_well_formed(token: str) -> bool:
    if len(token) != TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        return False
    if not set(token[len(TOKEN_PREFIX):]) <= set(ALPHABET):
        return False
    return _reference_checksum(token[:-6]) == token[-6:]


ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_TOKEN_CHARS = st.sampled_from(ALPHABET + "_-.é٣²\x00 ")


@given(st.text(ALPHABET, min_size=32, max_size=32))
def test_the_checksum_is_the_crc32_in_six_base62_digits(body: str) -> None:
    head = TOKEN_PREFIX + body
    assert secret_from_body(body) == head + _reference_checksum(head)
    assert is_well_formed(secret_from_body(body))


@given(st.one_of(
    st.text(_TOKEN_CHARS, min_size=38, max_size=38).map(lambda rest: TOKEN_PREFIX + rest),
    st.text(ALPHABET, min_size=32, max_size=32).map(
        lambda body: secret_from_body(body)[:-1] + "0"),
    st.text(max_size=50),
))
def test_is_well_formed_agrees_with_the_reference(token: str) -> None:
    assert is_well_formed(token) == _reference_is_well_formed(token)
