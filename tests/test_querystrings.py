"""token_guard.core.querystrings: one strict reading of query strings and form bodies."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
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


# -- the log-redaction pre-test ------------------------------------------------------------
_QUERY_BYTES = st.lists(
    st.sampled_from([b"a", b"c", b"C", b"e", b"E", b"s", b"_", b"t", b"o", b"k", b"n", b"N",
                     b"%", b"5", b"F", b"f", b"6", b"3", b"4", b"=", b"&", b"+", b"x", b"\xff",
                     b"access_token", b"ACCESS", b"%5F", b"%5f", b"%61", b"%41", b"_token"]),
    max_size=30,
).map(b"".join)


@given(_QUERY_BYTES)
@settings(max_examples=3000)
def test_the_redaction_pretest_never_misses_a_name_redaction_would_change(query: bytes) -> None:
    """``may_hold_token`` False must mean ``redacted_query`` changes nothing: the adapters
    skip redaction on its word, and a missed name would print a token in the access log."""
    from token_guard.core.querystrings import may_hold_token, redacted_query

    if redacted_query(query) is not None:
        assert may_hold_token(query), query


@given(st.one_of(_QUERY_BYTES, st.binary(max_size=24)))
@settings(max_examples=3000)
def test_plain_names_stands_for_both_name_searches(query: bytes) -> None:
    """``plain_names`` True (the ASGI adapter hands it to ``Guard.check``) must mean what the
    two searches it replaces would say: no name ``may_hold_token`` fires on, so nothing to
    redact and no query token to read, and no name with an escape or a ``+``, so
    ``wanted_pieces`` answers as if it had searched the names itself."""
    from token_guard.core.querystrings import (
        may_hold_token,
        plain_names,
        redacted_query,
        wanted_pattern,
        wanted_pieces,
    )

    if plain_names(query):
        assert not may_hold_token(query), query
        assert redacted_query(query) is None, query
        pattern = wanted_pattern(NAMES)
        assert wanted_pieces(query, pattern, True) == wanted_pieces(query, pattern), query


@pytest.mark.parametrize(("query", "plain"), [
    (b"q=SELECT%20*%20FROM%20t&queryParameters=%7B%22a_b%22%3A1%7D&v=3.4", True),
    (b"name=proj.ds1.table_1&v=3.4&client=deckgl-carto", True), (b"", True), (b"a", True),
    (b"access_token=1", False), (b"na%6De=x", False), (b"n+ame=a", False), (b"x=1&_=2", False),
    (b"x&a_b", False), (b"x=1&&y_z=", False),
])
def test_plain_names_examples(query: bytes, plain: bool) -> None:
    from token_guard.core.querystrings import plain_names

    assert plain_names(query) is plain


@pytest.mark.parametrize("query", [
    b"access_token=tgk_x", b"ACCESS_TOKEN=1", b"aCcEss_tOkEn=1", b"a%63cess_token=1",
    b"access%5Ftoken=1", b"access%5ftoken=1", b"%61ccess_token=1", b"x=1&a%63cess%5Ftoken=2",
    b"access_token", b"q=%20&access_token=1", b"name=a_b&Access_Token=1",
])
def test_the_redaction_pretest_fires_on_every_spelling_the_guard_reads(query: bytes) -> None:
    from token_guard.core.querystrings import may_hold_token, redacted_query

    assert may_hold_token(query)
    assert redacted_query(query) is not None


@pytest.mark.parametrize("query", [
    b"q=SELECT%20*%20FROM%20t&queryParameters=%7B%22a%22%3A1%7D&v=3.4",
    b"name=proj.ds1.table_1&v=3.4&client=deckgl-carto", b"address=1%20Main%20St", b"",
])
def test_the_redaction_pretest_skips_escapes_and_underscores_in_values(query: bytes) -> None:
    from token_guard.core.querystrings import may_hold_token

    assert not may_hold_token(query)


@given(st.lists(st.sampled_from([b"%", b"a", b"F", b"0", b"9", b"g", b"G", b"x", b" ", b"&",
                                 b"=", b"\xff", b"%2", b"%41", b"%%"]), max_size=12).map(b"".join))
@settings(max_examples=3000)
def test_valid_escapes_agrees_with_the_escape_grammar(data: bytes) -> None:
    """``valid_escapes`` (a translate and substring searches) says what a regex of the
    grammar says: every '%' followed by two hex digits."""
    import re

    from token_guard.core.querystrings import valid_escapes

    expected = re.search(rb"%(?![0-9A-Fa-f]{2})", data) is None
    assert valid_escapes(data) is expected, data


_PIECES = st.lists(
    st.sampled_from([b"name", b"q", b"qq", b"nam", b"v", b"=", b"&", b"%", b"%6E", b"%71", b"+",
                     b";", b"a", b"%2", b"%zz", b"\xc3\xa9", b"%C3%A9", b"x=1", b"name=t",
                     b"q=SELECT+1"]),
    max_size=10,
).map(b"".join)


@given(_PIECES, st.sampled_from([NAMES, frozenset()]))
@settings(max_examples=4000)
def test_wanted_pieces_decide_as_the_whole_query_string(
    query: bytes, names: frozenset[str]
) -> None:
    """What ``wanted_pieces`` keeps is all ``parse_wanted`` reads: parsing the pieces alone
    gives the answer the whole query string gives (refusals included), so a memo keyed on
    them answers any query string with the same pieces rightly; for a route that reads no
    parameter, too."""
    from token_guard.core.querystrings import wanted_pattern, wanted_pieces

    pieces = wanted_pieces(query, wanted_pattern(names))
    if pieces is not None:
        assert parse_wanted(pieces, names) == parse_wanted(query, names), (query, pieces)


@pytest.mark.parametrize(("query", "expected"), [
    (b"name=t&v=3.4", b"name=t"), (b"q=SELECT%201&queryParameters=%7B%7D", b"q=SELECT%201"),
    (b"v=1&q&name=a", b"q&name=a"), (b"qq=1&nam=2", b""), (b"name=a&name=b", b"name=a&name=b"),
    (b"na%6De=x", None), (b"x=1;name=b", None), (b"x=%zz&name=a", None), (b"n+ame=a", None),
    (b"name=\xc3\xa9", None), (b"", b""),
])
def test_wanted_pieces_examples(query: bytes, expected: bytes | None) -> None:
    from token_guard.core.querystrings import wanted_pattern, wanted_pieces

    assert wanted_pieces(query, wanted_pattern(NAMES)) == expected
