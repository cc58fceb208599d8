"""token_guard.core.querystrings: one strict reading of query strings and form bodies."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from token_guard.core.decision import Denial
from token_guard.core.querystrings import parse_all, parse_wanted, redact, values_of
from token_guard.core.secret import new_secret

NAMES = frozenset({"name", "q"})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(b"", {}, id="empty"),
        pytest.param(b"name=a.b.c&v=3", {"name": "a.b.c"}, id="plain"),
        pytest.param(b"na%6De=x", {"name": "x"}, id="encoded-key"),
        pytest.param(b"q=SELECT+1%2B1", {"q": "SELECT 1+1"}, id="plus-is-space"),
        pytest.param(b"q=%C3%A9", {"q": "é"}, id="utf8"),
        pytest.param(b"name=a&&x=1&", {"name": "a"}, id="empty-pieces"),
        pytest.param(b"other=%ff", {}, id="unwanted-not-utf8-ignored"),
    ],
)
def test_wanted_parameters_are_decoded(query: bytes, expected: dict[str, str]) -> None:
    assert parse_wanted(query, NAMES) == expected


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param(b"name=a&name=a", "ambiguous_request", id="twice-equal"),
        pytest.param(b"name=a&na%6De=b", "ambiguous_request", id="twice-encoded"),
        pytest.param(b"x=%zz&name=a", "malformed_request", id="bad-escape-anywhere"),
        pytest.param(b"x=1;name=b", "malformed_request", id="semicolon"),
        pytest.param(b"name=%ff", "malformed_request", id="wanted-not-utf8"),
    ],
)
def test_ambiguous_or_unreadable_query_strings_are_refused(query: bytes, code: str) -> None:
    refused = parse_wanted(query, NAMES)
    assert isinstance(refused, Denial) and refused.code == code


def test_parse_all_reads_every_key_and_refuses_any_repeat() -> None:
    assert parse_all(b"a=1&b=%20&c") == {"a": "1", "b": " ", "c": ""}
    refused = parse_all(b"a=1&b=2&a=3")
    assert isinstance(refused, Denial) and refused.code == "ambiguous_request"


def test_values_of_finds_every_encoding_of_the_key() -> None:
    assert values_of(b"access_token=a&access%5Ftoken=b&x=c", "access_token") == ["a", "b"]


@given(
    key=st.sampled_from(["access_token", "access%5Ftoken", "ACCESS_TOKEN", "Access_Token",
                         "%61ccess_token"]),
    encode=st.booleans(),
    before=st.text(alphabet="abcxyz=&", max_size=8),
)
def test_redact_never_leaves_a_secret(key: str, encode: bool, before: str) -> None:
    secret = new_secret()
    value = quote(secret, safe="") if encode else secret
    query = f"{before}&{key}={value}&v=3".encode()
    out = redact(query)
    assert secret not in out
    assert value not in out
