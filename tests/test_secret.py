"""Token secrets: prefix, entropy, checksum; only the SHA-256 is ever stored."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from token_guard.core.secret import (
    TOKEN_LENGTH,
    TOKEN_PREFIX,
    hash_secret,
    is_well_formed,
    new_secret,
    new_token_id,
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
