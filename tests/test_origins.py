"""Origin patterns and the Origin/Referer check: tables of cases, attacks, and oracles."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_guard.core.origins import (
    MAX_HEADER_LENGTH,
    OriginMatcher,
    OriginPattern,
    parse_origin_pattern,
    read_site,
)

DEFAULT_PORTS = {"http": 80, "https": 443}

# -- patterns ---------------------------------------------------------------------------

VALID_PATTERNS = [
    pytest.param("https://example.com", "https://example.com", id="plain"),
    pytest.param("HTTPS://EXAMPLE.COM", "https://example.com", id="uppercase"),
    pytest.param("  https://example.com\n", "https://example.com", id="outer-whitespace"),
    pytest.param("https://example.com:443", "https://example.com", id="https-default-port"),
    pytest.param("http://example.com:80", "http://example.com", id="http-default-port"),
    pytest.param("http://example.com:443", "http://example.com:443", id="other-default-kept"),
    pytest.param("https://example.com:0443", "https://example.com", id="port-leading-zero"),
    pytest.param("https://example.com/", "https://example.com", id="root-path-is-none"),
    pytest.param("https://example.com/app/", "https://example.com/app", id="trailing-slash"),
    pytest.param("https://example.com/a/b", "https://example.com/a/b", id="two-segments"),
    pytest.param("https://example.com/ap%70", "https://example.com/app", id="pct-unreserved"),
    pytest.param("https://example.com/a%20b", "https://example.com/a%20b", id="pct-space"),
    pytest.param("https://example.com/café", "https://example.com/caf%C3%A9", id="unicode-path"),
    pytest.param("https://example.com/caf%c3%a9", "https://example.com/caf%C3%A9", id="pct-case"),
    pytest.param("https://example.com/a:b@c", "https://example.com/a:b@c", id="at-in-path"),
    pytest.param("https://*.example.com", "https://*.example.com", id="wildcard"),
    pytest.param("https://*.EXAMPLE.com:*", "https://*.example.com:*", id="wildcard-any-port"),
    pytest.param("https://*.co.uk", "https://*.co.uk", id="wildcard-two-labels"),
    pytest.param("http://localhost:*", "http://localhost:*", id="any-port"),
    pytest.param("http://localhost:8080", "http://localhost:8080", id="port"),
    pytest.param("https://bücher.example", "https://xn--bcher-kva.example", id="idna"),
    pytest.param("https://BÜCHER.example", "https://xn--bcher-kva.example", id="idna-upper"),
    pytest.param("https://*.bücher.example", "https://*.xn--bcher-kva.example", id="idna-wild"),
    pytest.param("https://xn--bcher-kva.example", "https://xn--bcher-kva.example", id="punycode"),
    pytest.param("https://example.com.", "https://example.com", id="trailing-dot"),
    pytest.param("http://[::1]:8080", "http://[::1]:8080", id="ipv6"),
    pytest.param("http://[0:0::1]", "http://[::1]", id="ipv6-compressed"),
    pytest.param("http://[::FFFF:127.0.0.1]", "http://[::ffff:7f00:1]", id="ipv6-mapped"),
    pytest.param("http://127.0.0.1:3000", "http://127.0.0.1:3000", id="ipv4"),
    pytest.param("https://my_host.example.com", "https://my_host.example.com", id="underscore"),
]

INVALID_PATTERNS = [
    pytest.param("", "an origin pattern is empty", id="empty"),
    pytest.param(
        "example.com", "'example.com' has no scheme; write 'https://example.com'", id="no-scheme"
    ),
    pytest.param(
        "*.example.com", "write 'https://*.example.com'", id="no-scheme-wildcard"
    ),
    pytest.param("localhost:8080", "write 'https://localhost:8080'", id="no-scheme-port"),
    pytest.param("//example.com", "write 'https://example.com'", id="scheme-relative"),
    pytest.param("https:example.com", "needs '//' after the scheme", id="no-slashes"),
    pytest.param("ftp://example.com", "has scheme 'ftp'", id="ftp"),
    pytest.param("chrome-extension://abc", "has scheme 'chrome-extension'", id="extension"),
    pytest.param("ht tp://example.com", "whitespace or a control character", id="space-scheme"),
    pytest.param("https://", "has no host", id="no-host"),
    pytest.param("https:///app", "has no host", id="no-host-path"),
    pytest.param("https://*", "matches every website", id="star"),
    pytest.param("https://*.com", "too broad", id="wildcard-tld"),
    pytest.param("https://a.*.example.com", "'*' inside the host", id="star-middle"),
    pytest.param("https://*example.com", "'*' inside the host", id="star-glued"),
    pytest.param("https://*.*.example.com", "'*' inside the host", id="star-twice"),
    pytest.param("https://*.127.0.0.1", "wildcard on an IP address", id="wildcard-ip"),
    pytest.param("https://example.com:99999", "invalid port", id="port-too-big"),
    pytest.param("https://example.com:65536", "invalid port", id="port-65536"),
    pytest.param("https://example.com:0", "invalid port", id="port-zero"),
    pytest.param("https://example.com:", "invalid port", id="port-empty"),
    pytest.param("https://example.com:-1", "invalid port", id="port-negative"),
    pytest.param("https://example.com:+443", "invalid port", id="port-plus"),
    pytest.param("https://example.com:*x", "invalid port", id="port-star-x"),
    pytest.param("https://example.com:80:80", "invalid port", id="port-twice"),
    pytest.param("https://user@example.com", "userinfo", id="userinfo"),
    pytest.param("https://good.com@evil.com", "userinfo", id="userinfo-host"),
    pytest.param("https://evil.com\\@good.com", "backslash", id="backslash"),
    pytest.param("https://example.com\\app", "backslash", id="backslash-path"),
    pytest.param("https://example.com/app?x=1", "query or fragment", id="query"),
    pytest.param("https://example.com/app#x", "query or fragment", id="fragment"),
    pytest.param("https://example.com/a//b", "empty path segment", id="empty-segment"),
    pytest.param("https://example.com/app/../admin", "'..' path segment", id="dotdot"),
    pytest.param("https://example.com/./app", "'..' path segment", id="dot"),
    pytest.param("https://example.com/app%2F..", "encoded '/'", id="pct-slash"),
    pytest.param("https://example.com/%2e%2e/app", "'..' path segment", id="pct-dotdot"),
    pytest.param("https://example.com/a%5Cb", "encoded '/', '\\'", id="pct-backslash"),
    pytest.param("https://example.com/a%252e", "'%'", id="pct-double"),
    pytest.param("https://example.com/a%ff", "invalid percent-encoding", id="pct-invalid-utf8"),
    pytest.param("https://example.com/a%00", "percent-encoding", id="pct-nul"),
    pytest.param("https://example.com/app/*", "'*' in its path", id="star-path"),
    pytest.param("https://exa mple.com", "whitespace or a control character", id="space"),
    pytest.param("https://exa\tmple.com", "whitespace or a control character", id="tab"),
    pytest.param("https://example.com\x00", "control character", id="nul"),
    pytest.param("https://exa$mple.com", "invalid host name", id="bad-char"),
    pytest.param("https://a..b.com", "invalid host name", id="empty-label"),
    pytest.param("https://.example.com", "invalid host name", id="leading-dot"),
    pytest.param("https://example.com..", "invalid host name", id="two-trailing-dots"),
    pytest.param("https://" + "a" * 64 + ".com", "invalid host name", id="long-label"),
    pytest.param("https://faß.de", "IDNA changes", id="idna-sharp-s"),
    pytest.param("https://ｅxample.com", "IDNA changes", id="fullwidth"),
    pytest.param("https://example。com", "IDNA changes", id="ideographic-dot"),
    pytest.param("http://0x7f.0.0.1", "IPv4", id="ipv4-hex"),
    pytest.param("http://127.1", "IPv4", id="ipv4-short"),
    pytest.param("http://2130706433", "IPv4", id="ipv4-integer"),
    pytest.param("http://127.0.0.01", "IPv4", id="ipv4-leading-zero"),
    pytest.param("http://256.0.0.1", "IPv4", id="ipv4-out-of-range"),
    pytest.param("http://foo.123", "IPv4", id="numeric-last-label"),
    pytest.param("http://[::1", "unclosed '['", id="ipv6-unclosed"),
    pytest.param("http://[::g]", "invalid IPv6", id="ipv6-bad"),
    pytest.param("http://[fe80::1%25eth0]", "zone id", id="ipv6-zone"),
    pytest.param("http://[::1]x", "text after its IPv6 host", id="ipv6-tail"),
    pytest.param("https://" + "a" * 5000, f"the limit is {MAX_HEADER_LENGTH}", id="too-long"),
]


@pytest.mark.parametrize(("text", "canonical"), VALID_PATTERNS)
def test_valid_pattern_normalises(text: str, canonical: str) -> None:
    assert str(parse_origin_pattern(text)) == canonical


@pytest.mark.parametrize(("text", "canonical"), VALID_PATTERNS)
def test_pattern_round_trips_through_str(text: str, canonical: str) -> None:
    pattern = parse_origin_pattern(text)
    assert parse_origin_pattern(str(pattern)) == pattern


@pytest.mark.parametrize(("text", "message"), INVALID_PATTERNS)
def test_invalid_pattern_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_origin_pattern(text)


def test_pattern_fields() -> None:
    assert parse_origin_pattern("https://*.Example.com:8443/App/") == OriginPattern(
        scheme="https", host="*.example.com", port=8443, any_port=False, path_prefix="/App"
    )
    assert parse_origin_pattern("http://localhost:*") == OriginPattern(
        scheme="http", host="localhost", port=None, any_port=True, path_prefix=""
    )


# -- matching ---------------------------------------------------------------------------

SITE = ["https://example.com"]
WILD = ["https://*.example.com"]
APP = ["https://example.com/app"]
LOCAL = ["http://localhost:*"]
V6 = ["http://[::1]:8080"]
V4 = ["http://127.0.0.1"]
IDN = ["https://bücher.example"]

ALLOWED = [
    pytest.param(SITE, "https://example.com", None, id="exact"),
    pytest.param(SITE, "https://example.com:443", None, id="explicit-default-port"),
    pytest.param(["https://example.com:443"], "https://example.com", None, id="pattern-port"),
    pytest.param(SITE, "HTTPS://EXAMPLE.COM", None, id="uppercase-header"),
    pytest.param(SITE, "https://example.com.", None, id="trailing-dot-header"),
    pytest.param(SITE, None, "https://example.com/page?q=1", id="referer-only"),
    pytest.param(SITE, None, "https://example.com", id="referer-without-path"),
    pytest.param(SITE, "https://example.com", "https://example.com/x", id="both-agree"),
    pytest.param(SITE, "https://example.com", "https://example.com:443/", id="both-port"),
    pytest.param(WILD, "https://a.example.com", None, id="wildcard-one-level"),
    pytest.param(WILD, "https://a.b.c.example.com", None, id="wildcard-deep"),
    pytest.param(WILD, "https://A.Example.COM", None, id="wildcard-case"),
    pytest.param(["https://*.example.com:*"], "https://a.example.com:9", None, id="wild-port"),
    pytest.param(LOCAL, "http://localhost:3000", None, id="any-port"),
    pytest.param(LOCAL, "http://localhost", None, id="any-port-default"),
    pytest.param(V6, "http://[::1]:8080", None, id="ipv6"),
    pytest.param(V6, "http://[0:0:0:0:0:0:0:1]:8080", None, id="ipv6-long-form"),
    pytest.param(V4, "http://127.0.0.1", None, id="ipv4"),
    pytest.param(IDN, "https://xn--bcher-kva.example", None, id="idna-pattern"),
    pytest.param(["https://xn--bcher-kva.example"], "https://bücher.example", None, id="idna-hdr"),
    pytest.param(APP, None, "https://example.com/app", id="path-exact"),
    pytest.param(APP, None, "https://example.com/app/", id="path-slash"),
    pytest.param(APP, None, "https://example.com/app/x/y", id="path-below"),
    pytest.param(APP, None, "https://example.com/app?next=/admin", id="path-query"),
    pytest.param(APP, None, "https://example.com/app#x", id="path-fragment"),
    pytest.param(APP, None, "https://example.com/ap%70/x", id="path-pct-unreserved"),
    pytest.param(APP, "https://example.com", "https://example.com/app/x", id="path-both"),
    pytest.param(["https://example.com/café"], None, "https://example.com/caf%C3%A9/", id="utf8"),
    pytest.param(["https://*.example.com/app"], None, "https://a.example.com/app", id="wild-path"),
    pytest.param(SITE + APP, "https://example.com", None, id="site-covers-path"),
]


@pytest.mark.parametrize(("patterns", "origin", "referer"), ALLOWED)
def test_allowed(patterns: list[str], origin: str | None, referer: str | None) -> None:
    assert OriginMatcher(patterns).check(origin, referer) is None


DENIED = [
    # missing, null, unparseable
    pytest.param(SITE, None, None, "no Origin or Referer header", id="no-headers"),
    pytest.param(SITE, "null", None, "Origin is 'null'", id="origin-null"),
    pytest.param(SITE, "null", "https://example.com/", "Origin is 'null'", id="null-with-ref"),
    pytest.param(SITE, "", None, "not a URL", id="origin-empty"),
    pytest.param(SITE, None, "", "not a URL", id="referer-empty"),
    pytest.param(SITE, "example.com", None, "not a URL", id="no-scheme"),
    pytest.param(SITE, "https:/example.com", None, "not a URL", id="one-slash"),
    pytest.param(SITE, "https://", None, "has no host", id="no-host"),
    pytest.param(SITE, "https://example.com/", None, "has a path", id="origin-with-path"),
    pytest.param(SITE, "https://example.com?", None, "has a path", id="origin-with-query"),
    pytest.param(SITE, "https://example.com", "not a url", "Referer header", id="bad-referer"),
    pytest.param(SITE, "\x00conflict", None, "control character", id="duplicate-marker"),
    # look-alikes
    pytest.param(SITE, "https://example.com.evil.com", None, "not in", id="suffix-append"),
    pytest.param(SITE, "https://evilexample.com", None, "not in", id="prefix-glued"),
    pytest.param(SITE, "https://example.co", None, "not in", id="truncated"),
    pytest.param(SITE, "https://www.example.com", None, "not in", id="exact-not-sub"),
    pytest.param(WILD, "https://example.com", None, "not in", id="wildcard-not-apex"),
    pytest.param(WILD, "https://example.com.evil.com", None, "not in", id="wild-suffix-append"),
    pytest.param(WILD, "https://evilexample.com", None, "not in", id="wild-prefix-glued"),
    pytest.param(WILD, "https://a.example.com.", "https://b.example.com/", "different", id="mix"),
    pytest.param(WILD, "https://*.example.com", None, "'*' in its host", id="star-in-header"),
    pytest.param(SITE, "https://ｅxample.com", None, "IDNA changes", id="fullwidth"),
    pytest.param(SITE, "https://example。com", None, "IDNA changes", id="ideographic-dot"),
    # scheme and port
    pytest.param(SITE, "http://example.com", None, "not in", id="wrong-scheme"),
    pytest.param(SITE, "https://example.com:8443", None, "not in", id="wrong-port"),
    pytest.param(["http://example.com"], "http://example.com:443", None, "not in", id="port-x"),
    pytest.param(SITE, "https://example.com:0", None, "invalid port", id="port-zero"),
    pytest.param(SITE, "https://example.com:65536", None, "invalid port", id="port-big"),
    pytest.param(SITE, "https://example.com:4430000", None, "invalid port", id="port-long"),
    pytest.param(SITE, "https://example.com:", None, "invalid port", id="port-empty"),
    pytest.param(SITE, "https://example.com:-443", None, "invalid port", id="port-negative"),
    pytest.param(LOCAL, "http://localhost:*", None, "invalid port", id="star-port-header"),
    pytest.param(SITE, "file://", None, "scheme 'file'", id="file"),
    pytest.param(SITE, "chrome-extension://abcdef", None, "scheme", id="extension"),
    pytest.param(SITE, "ftp://example.com", None, "scheme 'ftp'", id="ftp"),
    pytest.param(SITE, "javascript://example.com", None, "scheme", id="javascript"),
    pytest.param(SITE, None, "android-app://com.example/", "scheme", id="android-referer"),
    # userinfo and backslashes: the real host is the one after '@' or before '\'
    pytest.param(SITE, "https://example.com@evil.com", None, "userinfo", id="userinfo"),
    pytest.param(SITE, "https://example.com:443@evil.com", None, "userinfo", id="userinfo-port"),
    pytest.param(SITE, None, "https://example.com@evil.com/", "userinfo", id="userinfo-referer"),
    pytest.param(SITE, "https://evil.com\\@example.com", None, "backslash", id="backslash"),
    pytest.param(SITE, None, "https://evil.com\\@example.com/", "backslash", id="backslash-ref"),
    pytest.param(SITE, None, "https://evil.com\\.example.com/", "backslash", id="backslash-dot"),
    # whitespace and control characters
    pytest.param(SITE, "https://exa\tmple.com", None, "whitespace", id="tab-inside"),
    pytest.param(SITE, "https://example.com ", None, "whitespace", id="trailing-space"),
    pytest.param(SITE, "https://example.com\r\nX-Evil: 1", None, "control", id="crlf"),
    pytest.param(SITE, "https://example.com https://evil.com", None, "whitespace", id="list"),
    pytest.param(SITE, "https://example.com\u00a0", None, "whitespace", id="nbsp"),
    # IP literals
    pytest.param(V4, "http://2130706433", None, "IPv4", id="ipv4-integer"),
    pytest.param(V4, "http://0x7f.0.0.1", None, "IPv4", id="ipv4-hex"),
    pytest.param(V4, "http://127.1", None, "IPv4", id="ipv4-short"),
    pytest.param(V4, "http://127.0.0.01", None, "IPv4", id="ipv4-octal"),
    pytest.param(V6, "http://[::1]", None, "not in", id="ipv6-wrong-port"),
    pytest.param(V6, "http://[::1", None, "unclosed", id="ipv6-unclosed"),
    pytest.param(V6, "http://[fe80::1%25eth0]:8080", None, "zone id", id="ipv6-zone"),
    pytest.param(V6, "http://::1:8080", None, "has no host", id="ipv6-no-brackets"),
    # two headers that disagree
    pytest.param(SITE, "https://example.com", "https://evil.com/", "different", id="conflict"),
    pytest.param(SITE, "https://evil.com", "https://example.com/", "different", id="conflict-2"),
    pytest.param(SITE, "https://example.com", "http://example.com/", "different", id="scheme-x"),
    # path prefixes: only a full Referer can prove them, and only segment by segment
    pytest.param(APP, "https://example.com", None, "only an Origin header", id="origin-only"),
    pytest.param(APP, None, "https://example.com/", "not under", id="root"),
    pytest.param(APP, None, "https://example.com/application", "not under", id="not-segment"),
    pytest.param(APP, None, "https://example.com/APP", "not under", id="case"),
    pytest.param(APP, None, "https://example.com//app", "not under", id="double-slash"),
    pytest.param(APP, None, "https://example.com/app;x=1", "not under", id="matrix-param"),
    pytest.param(APP, None, "https://example.com/admin?/app", "not under", id="query-lure"),
    pytest.param(APP, None, "https://example.com/app/../admin", "dot segment", id="dotdot"),
    pytest.param(APP, None, "https://example.com/./app", "dot segment", id="dot"),
    pytest.param(APP, None, "https://example.com/app/%2e%2e/admin", "dot segment", id="pct-dots"),
    pytest.param(APP, None, "https://example.com/app/%2E%2e/x", "dot segment", id="pct-dots-uc"),
    pytest.param(APP, None, "https://example.com/app/.%2e/admin", "dot segment", id="mixed-dots"),
    pytest.param(APP, None, "https://example.com/app%2F..", "dot segment", id="pct-slash"),
    pytest.param(APP, None, "https://example.com/app/x%2F..%2F..", "dot segment", id="pct-sl-2"),
    pytest.param(APP, None, "https://example.com/app/%5C..", "dot segment", id="pct-backslash"),
    pytest.param(APP, None, "https://example.com/app/%252e%252e", "dot segment", id="double-pct"),
    pytest.param(APP, None, "https://example.com/app/%ff", "dot segment", id="bad-utf8"),
    pytest.param(APP, None, "https://example.com/app/%00", "dot segment", id="pct-nul"),
    pytest.param(APP, None, "https://example.com/app/é", "dot segment", id="raw-non-ascii"),
    pytest.param(APP, None, "https://evil.com/app", "not in", id="other-host"),
    pytest.param(APP, "https://evil.com", "https://example.com/app", "different", id="path-mix"),
]


@pytest.mark.parametrize(("patterns", "origin", "referer", "reason"), DENIED)
def test_denied_with_reason(
    patterns: list[str], origin: str | None, referer: str | None, reason: str
) -> None:
    got = OriginMatcher(patterns).check(origin, referer)
    assert got is not None
    assert reason in got


def test_denial_names_the_origin_to_add() -> None:
    got = OriginMatcher(SITE).check("https://Evil.com:8443", None)
    assert got is not None
    assert "add 'https://evil.com:8443' to the token's referers" in got


def test_denial_never_repeats_the_referer_query() -> None:
    matcher = OriginMatcher(APP)
    for referer in (
        "https://evil.com/page?access_token=SECRET",
        "https://example.com/other?access_token=SECRET",
        "https://example.com/app/../x?access_token=SECRET",
        "https://u:SECRET@example.com/?access_token=SECRET",
        "ftp://example.com/?access_token=SECRET",
        "https://example.com/SECRET",
    ):
        got = matcher.check(None, referer)
        assert got is not None
        assert "SECRET" not in got, referer


@pytest.mark.parametrize(
    ("origin", "referer"),
    [
        pytest.param("https://" + "a" * MAX_HEADER_LENGTH, None, id="origin"),
        pytest.param(None, "https://example.com/" + "a" * MAX_HEADER_LENGTH, id="referer"),
        pytest.param("https://example.com", "https://example.com/" + "a" * 10**6, id="huge"),
    ],
)
def test_over_long_header_is_denied(origin: str | None, referer: str | None) -> None:
    got = OriginMatcher(["https://*.aaaa.com", "https://example.com"]).check(origin, referer)
    assert got is not None
    assert f"longer than {MAX_HEADER_LENGTH}" in got


@pytest.mark.parametrize(
    ("origin", "referer"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("null", None, id="null"),
        pytest.param("garbage", "https://u@evil.com\\x", id="garbage"),
        pytest.param("https://" + "a" * 10_000, None, id="huge"),
    ],
)
def test_empty_pattern_list_allows_everything(origin: str | None, referer: str | None) -> None:
    assert OriginMatcher([]).check(origin, referer) is None


def test_matcher_accepts_parsed_patterns() -> None:
    matcher = OriginMatcher([parse_origin_pattern("https://*.example.com")])
    assert matcher.check("https://a.example.com", None) is None
    assert matcher.patterns == (parse_origin_pattern("https://*.example.com"),)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param(OriginPattern("https", "Example.com", None, False, ""), "not normalised",
                     id="uppercase-host"),
        pytest.param(OriginPattern("https", "example.com", 443, False, ""), "not normalised",
                     id="explicit-default-port"),
        pytest.param(OriginPattern("ftp", "example.com", None, False, ""), "has scheme 'ftp'",
                     id="bad-scheme"),
        pytest.param(OriginPattern("https", "example.com", None, False, "/a/"), "not normalised",
                     id="trailing-slash"),
    ],
)
def test_matcher_refuses_hand_built_pattern_not_in_canonical_form(
    pattern: OriginPattern, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        OriginMatcher([pattern])


def test_matcher_refuses_one_string_instead_of_a_list() -> None:
    with pytest.raises(TypeError, match="pass a list"):
        OriginMatcher("https://example.com")


def test_matcher_refuses_invalid_pattern_text() -> None:
    with pytest.raises(ValueError, match="has no scheme"):
        OriginMatcher(["example.com"])


def test_matcher_holds_no_state_that_grows() -> None:
    matcher = OriginMatcher(WILD)
    for i in range(1000):
        allowed = i % 2 == 0
        host = f"h{i}.example.com" if allowed else f"h{i}.evil.com"
        assert (matcher.check(f"https://{host}", None) is None) is allowed
    assert not hasattr(matcher, "__dict__")
    assert matcher.check_site(read_site("https://a.example.com", None)) is None
    assert matcher.check_site(read_site("https://evil.com", None)) is not None


# -- properties against simple oracles --------------------------------------------------

LABELS = st.sampled_from(["a", "b", "ab", "ba"])
SCHEMES = st.sampled_from(["http", "https"])
PORTS = st.sampled_from([None, 80, 443, 8080])

# A pattern: (scheme, wildcard?, host labels, port or "*").
PatternParts = tuple[str, bool, list[str], int | str | None]
OriginParts = tuple[str, list[str], int | None]

pattern_parts = st.one_of(
    st.tuples(SCHEMES, st.just(False), st.lists(LABELS, min_size=1, max_size=3),
              st.one_of(PORTS, st.just("*"))),
    st.tuples(SCHEMES, st.just(True), st.lists(LABELS, min_size=2, max_size=3),
              st.one_of(PORTS, st.just("*"))),
)
origin_parts = st.tuples(SCHEMES, st.lists(LABELS, min_size=1, max_size=5), PORTS)


def pattern_text(p: PatternParts) -> str:
    scheme, wild, labels, port = p
    host = ("*." if wild else "") + ".".join(labels)
    return f"{scheme}://{host}" + ("" if port is None else f":{port}")


def origin_text(o: OriginParts) -> str:
    scheme, labels, port = o
    return f"{scheme}://{'.'.join(labels)}" + ("" if port is None else f":{port}")


def oracle(p: PatternParts, o: OriginParts) -> bool:
    """Obviously correct: compare labels as lists and ports as numbers."""
    p_scheme, wild, p_labels, p_port = p
    o_scheme, o_labels, o_port = o
    if p_scheme != o_scheme:
        return False
    if p_port != "*":
        p_eff = p_port if p_port is not None else DEFAULT_PORTS[p_scheme]
        o_eff = o_port if o_port is not None else DEFAULT_PORTS[o_scheme]
        if p_eff != o_eff:
            return False
    if wild:
        n = len(p_labels)
        return len(o_labels) > n and o_labels[-n:] == p_labels
    return o_labels == p_labels


@given(st.lists(pattern_parts, min_size=1, max_size=3), origin_parts, st.booleans())
def test_host_port_matching_agrees_with_oracle(
    patterns: list[PatternParts], origin: OriginParts, upper: bool
) -> None:
    text = origin_text(origin)
    matcher = OriginMatcher([pattern_text(p) for p in patterns])
    expected = any(oracle(p, origin) for p in patterns)
    assert (matcher.check(text.upper() if upper else text, None) is None) is expected
    # The same site named by a Referer alone decides the same way.
    assert (matcher.check(None, text + "/some/page") is None) is expected


SEGMENTS = st.sampled_from(["a", "b", "ab", "app"])


def pct_encode_all(segment: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in segment)


@given(
    st.lists(SEGMENTS, min_size=1, max_size=3),
    st.lists(st.tuples(st.one_of(SEGMENTS, st.just("")), st.booleans()), max_size=5),
)
def test_path_prefix_matching_agrees_with_oracle(
    prefix: list[str], path: list[tuple[str, bool]]
) -> None:
    matcher = OriginMatcher(["https://example.com/" + "/".join(prefix)])
    raw = [pct_encode_all(s) if encode else s for s, encode in path]
    referer = "https://example.com/" + "/".join(raw)
    decoded = [s for s, _ in path] or [""]
    expected = decoded[: len(prefix)] == prefix
    assert (matcher.check(None, referer) is None) is expected
    # An Origin header alone can never prove a path.
    assert matcher.check("https://example.com", None) is not None


@given(pattern_parts, st.lists(SEGMENTS, max_size=2))
def test_generated_patterns_round_trip(parts: PatternParts, path: list[str]) -> None:
    suffix = "".join("/" + s for s in path)
    pattern = parse_origin_pattern(pattern_text(parts) + suffix)
    assert parse_origin_pattern(str(pattern)) == pattern
    # Scheme and host are case-insensitive; the path is not touched.
    assert parse_origin_pattern(pattern_text(parts).upper() + suffix) == pattern


FUZZ_PREFIXES = st.sampled_from(
    ["https://", "HTTPS://", "https:/", "https:", "http://", "https://a@", "https://example.com@",
     "https://example.com\\@", "//", "", "https://[", "https://xn--", "https://0x"]
)
FUZZ_TAILS = st.text(alphabet="./:@\\%#?a1 *[]\t\x00é。", max_size=8)


@given(st.one_of(st.text(max_size=40),
                 st.builds(lambda a, b, c: a + b + c, FUZZ_PREFIXES,
                           st.sampled_from(["example.com", "Example.COM", "evil.com", ""]),
                           FUZZ_TAILS)))
def test_arbitrary_origin_is_allowed_only_for_the_listed_site(origin: str) -> None:
    got = OriginMatcher(SITE).check(origin, None)
    if got is None:
        # Cross-check with a different parser: it must be https on example.com's default port.
        parts = urlsplit(origin)
        assert parts.scheme.lower() == "https"
        assert (parts.hostname or "").rstrip(".") == "example.com"
        assert parts.port in (None, 443)
        assert parts.path == "" and not parts.query and not parts.fragment
    else:
        assert isinstance(got, str) and got


@given(st.text(max_size=60))
def test_parse_pattern_raises_only_value_error(text: str) -> None:
    try:
        pattern = parse_origin_pattern(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert parse_origin_pattern(str(pattern)) == pattern


@given(
    origin=st.one_of(st.none(), st.sampled_from(
        ["https://a.example.com", "http://localhost:3000", "null", "https://b.example.com:443",
         "https://x@evil.com", "HTTPS://A.EXAMPLE.COM", "https://a.example.com/"])),
    head=st.sampled_from(["https://a.example.com", "http://localhost:3000", "https://a.example.com:8443",
                          "https://evil.com\\@a.example.com", "ftp://a.example.com", "https://[::1]",
                          "https://xn--bcher-kva.example", "https://a.example.com.", "https://"]),
    rest=st.text(alphabet="/?#\\ %.a-z0-9\x00", max_size=12),
)
def test_remembered_authorities_read_exactly_as_a_fresh_parse(
    origin: str | None, head: str, rest: str
) -> None:
    memo: dict[str, tuple[str, str, int | None] | str] = {}
    referer = head + rest
    fresh = read_site(origin, referer)
    assert read_site(origin, referer, memo) == fresh
    assert read_site(origin, referer, memo) == fresh  # from the memo this time


def _referer_site_by_the_rules(referer: str) -> str | None:
    """referer_site's rule, written plainly: scheme://authority, when the rest is printable,
    has no space and no backslash before its query or fragment."""
    import re

    from token_guard.core.origins import MAX_HEADER_LENGTH

    if len(referer) > MAX_HEADER_LENGTH:
        return None
    found = re.match(r"[^/?#]*://[^/?#]*", referer)
    if found is None:
        return None
    rest = referer[found.end():]
    if not rest.isprintable() or " " in rest or "\\" in rest.partition("?")[0].partition("#")[0]:
        return None
    return referer[:found.end()]


@given(st.lists(st.sampled_from(["https", "http", ":", "//", "/", "?", "#", "\\", " ", "@",
                                 "a.com", "é", "\x00", "\t", "x", "[::1]", ":8080", "%2F"]),
                max_size=12).map("".join))
@settings(max_examples=3000)
def test_referer_site_fast_path_agrees_with_the_rule(referer: str) -> None:
    from token_guard.core.origins import referer_site

    assert referer_site(referer) == _referer_site_by_the_rules(referer)
