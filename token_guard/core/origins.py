"""Website restrictions: origin patterns and the per-request ``Origin``/``Referer`` check.

A pattern is ``scheme://host[:port][/path-prefix]``, for example ``https://*.example.com``,
``http://localhost:*`` or ``https://example.com/app``.

Security choices (fail closed; this is abuse control for browser tokens, not authentication,
since any non-browser client can forge these headers):

- Only ``http`` and ``https``. ``*.example.com`` matches subdomains of any depth, never
  ``example.com`` itself nor look-alikes such as ``example.com.evil.com``. A wildcard needs at
  least two labels after ``*.`` (``*.com`` is refused) and cannot apply to an IP address.
- Hosts compare lowercase after IDNA. A Unicode name that IDNA 2003 would *change* (``ß`` to
  ``ss``, fullwidth letters, ideographic dots) is refused rather than guessed. One trailing dot
  is dropped (``example.com.`` is the same DNS name). A host whose last label is a number must be
  a canonical dotted-quad IPv4 address, as browsers serialise it; IPv6 literals are compared in
  their compressed form.
- A default port (http 80, https 443) is the same as none.
- The decision uses the ``Origin`` header, else the origin of ``Referer``. A path prefix can only
  be proven by a full ``Referer``; when both headers are present they must name the same origin.
- Denied outright: no header, ``Origin: null``, a value over ``MAX_HEADER_LENGTH``, whitespace or
  control characters, a backslash before the query, userinfo (``https://good.com@evil.com``), a
  non-http(s) scheme, an Origin with a path, a port outside 1-65535, anything unparseable.
- Path prefixes match whole segments (``/app`` matches ``/app`` and ``/app/x``, not
  ``/application``) after percent-decoding; a path with a dot segment (also ``%2e``), an encoded
  ``/``, ``\\`` or ``%``, or invalid UTF-8 proves nothing and matches no path prefix.

Denial reasons never repeat the raw header values (a Referer can carry a token in its query);
they name only the parsed origin.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = [
    "MAX_HEADER_LENGTH",
    "OriginMatcher",
    "OriginPattern",
    "RequestSite",
    "parse_origin_pattern",
    "read_site",
]

MAX_HEADER_LENGTH = 4096
"""Longer ``Origin``/``Referer`` values (and patterns) are refused before any parsing."""


_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
# WHATWG URL parsing reads a host whose last label looks numeric as IPv4 (``0x7f.1``).
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_PORT = re.compile(r"[0-9]{1,5}")
# Characters kept literally in a canonical path segment (RFC 3986 pchar minus '*').
_PATH_SAFE = "!$&'()+,;=:@"

_NO_SCHEME_HINT = "a pattern is scheme://host[:port][/path-prefix], e.g. 'https://example.com'"
_REFUSED = "this token only serves the websites in its referers"


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """One allowed website: ``scheme://host[:port][/path-prefix]``, normalised.

    ``host`` is lowercase ASCII (IDNA), may start with ``*.``, and keeps its brackets for an
    IPv6 literal (``[::1]``). ``port`` is None for the scheme's default port; ``path_prefix``
    is "" or a canonical percent-encoded path starting with "/" and without a trailing "/".
    """

    scheme: str
    host: str
    port: int | None
    any_port: bool
    path_prefix: str

    def __str__(self) -> str:
        """The canonical text, e.g. ``https://*.example.com`` or ``http://localhost:*``."""
        if self.any_port:
            port = ":*"
        elif self.port is not None:
            port = f":{self.port}"
        else:
            port = ""
        return f"{self.scheme}://{self.host}{port}{self.path_prefix}"


def parse_origin_pattern(text: str) -> OriginPattern:
    """Parse and normalise one pattern; raises ValueError saying what is wrong and what to write."""
    text = text.strip()
    if not text:
        raise ValueError(f"an origin pattern is empty; {_NO_SCHEME_HINT}")
    if len(text) > MAX_HEADER_LENGTH:
        raise ValueError(
            f"an origin pattern is {len(text)} characters; the limit is {MAX_HEADER_LENGTH}"
        )
    if "://" not in text:
        scheme_end = text.find(":")
        if scheme_end > 0 and text[:scheme_end].lower() in _DEFAULT_PORTS:
            rest = text[scheme_end + 1 :].lstrip("/")
            raise ValueError(
                f"{text!r} needs '//' after the scheme; write "
                f"'{text[:scheme_end].lower()}://{rest}'"
            )
        raise ValueError(f"{text!r} has no scheme; write 'https://{text.lstrip('/')}'")
    try:
        scheme, host, port, any_port, rest = _split(text, pattern=True)
        if "?" in rest or "#" in rest:
            raise ValueError(
                "has a query or fragment; a pattern is scheme://host[:port][/path-prefix]"
            )
        path_prefix = _canonical_path(rest)
    except ValueError as exc:
        raise ValueError(f"{text!r} {exc}") from None
    return OriginPattern(scheme, host, port, any_port, path_prefix)


@dataclass(frozen=True, slots=True)
class _Rule:
    """A wildcard or path pattern compiled for matching; ``suffix`` is ".example.com" for
    ``*.example.com`` and ``segments`` the decoded path prefix (() for none)."""

    scheme: str
    host: str
    suffix: str | None
    port: int | None  # effective port; None = any
    segments: tuple[str, ...]
    text: str

    def matches_site(self, scheme: str, host: str, port: int) -> bool:
        """Whether scheme, host and port match (the path is checked separately)."""
        if scheme != self.scheme or (self.port is not None and port != self.port):
            return False
        if self.suffix is None:
            return host == self.host
        return host.endswith(self.suffix)


class OriginMatcher:
    """Decides whether a request's ``Origin``/``Referer`` names a website in a pattern list.

    Build one per token (patterns are compiled once); it holds no state that changes, so any
    number of threads may share it. ``check`` reads the headers and matches; the guard reads
    each request's headers once (``read_site``, remembered per header pair) and asks each
    token's matcher ``check_site``: set lookups.
    """

    __slots__ = ("_any_port", "_exact", "_paths", "_patterns", "_wild", "reads_path")

    def __init__(self, patterns: Sequence[str | OriginPattern]) -> None:
        if isinstance(patterns, str):
            # A str is a Sequence too; parsing it character by character helps nobody.
            raise TypeError(f"pass a list of origin patterns, e.g. [{patterns!r}]")
        compiled: list[OriginPattern] = []
        for item in patterns:
            if isinstance(item, OriginPattern):
                # A hand-built pattern that is not in canonical form would never match.
                try:
                    again = parse_origin_pattern(str(item))
                except ValueError as exc:
                    raise ValueError(f"invalid OriginPattern: {exc}") from None
                if again != item:
                    raise ValueError(
                        f"OriginPattern {item!r} is not normalised; build it with "
                        f"parse_origin_pattern({str(item)!r})"
                    )
                compiled.append(item)
            else:
                compiled.append(parse_origin_pattern(item))
        self._patterns: tuple[OriginPattern, ...] = tuple(compiled)
        exact: set[tuple[str, str, int]] = set()
        any_port: set[tuple[str, str]] = set()
        wild: list[_Rule] = []
        paths: list[_Rule] = []
        for p in compiled:
            eport = None if p.any_port else (p.port or _DEFAULT_PORTS[p.scheme])
            is_wild = p.host.startswith("*.")
            if p.path_prefix or is_wild:
                segments = (
                    tuple(unquote(s) for s in p.path_prefix[1:].split("/"))
                    if p.path_prefix
                    else ()
                )
                rule = _Rule(
                    p.scheme, p.host, p.host[1:] if is_wild else None, eport, segments, str(p)
                )
                (paths if p.path_prefix else wild).append(rule)
            elif eport is None:
                any_port.add((p.scheme, p.host))
            else:
                exact.add((p.scheme, p.host, eport))
        self._exact = frozenset(exact)
        self._any_port = frozenset(any_port)
        self._wild = tuple(wild)
        self._paths = tuple(paths)
        # Whether an answer can depend on the Referer's path (else only on the website).
        self.reads_path: bool = bool(paths)

    @property
    def patterns(self) -> tuple[OriginPattern, ...]:
        """The normalised patterns, in the order given."""
        return self._patterns

    def check(self, origin: str | None, referer: str | None) -> str | None:
        """None if allowed; otherwise the reason, saying what was wrong and what to add."""
        if not self._patterns:
            return None
        return self.check_site(read_site(origin, referer))

    def check_site(self, read: RequestSite | str) -> str | None:
        """``check`` for headers already read by ``read_site`` (shared by every token)."""
        if not self._patterns:
            return None
        if isinstance(read, str):
            return read
        site, path = read
        if self._allows(site, path):
            return None
        return self._refusal(site, path)

    def _allows(self, site: tuple[str, str, int], path: str | None) -> bool:
        scheme, host, port = site
        if site in self._exact or (scheme, host) in self._any_port:
            return True
        for rule in self._wild:
            if rule.matches_site(scheme, host, port):
                return True
        if path is None or not self._paths:
            return False
        segments = _path_segments(path)
        if segments is None:
            return False
        for rule in self._paths:
            n = len(rule.segments)
            if rule.matches_site(scheme, host, port) and segments[:n] == rule.segments:
                return True
        return False

    def _refusal(self, site: tuple[str, str, int], path: str | None) -> str:
        text = _site_text(site)
        prefixes = [r.text for r in self._paths if r.matches_site(*site)]
        if not prefixes:
            return (
                f"The website {text} is not in this token's referers; add '{text}' to the "
                "token's referers if it should use this token."
            )
        listed = ", ".join(f"'{p}'" for p in prefixes)
        if path is None:
            return (
                f"The request from {text} has only an Origin header, so its page cannot be "
                f"proven to be under {listed}; send a full Referer (Referrer-Policy), or add "
                f"'{text}' to the token's referers to allow the whole site."
            )
        if _path_segments(path) is None:
            return (
                f"The Referer path on {text} has a dot segment, an encoded '/', '\\' or '%', or "
                f"invalid encoding, so it cannot be proven to be under {listed}; {_REFUSED}."
            )
        return (
            f"The page on {text} is not under {listed}; add that page's path, or '{text}' for "
            "the whole site, to the token's referers."
        )


RequestSite = tuple[tuple[str, str, int], str | None]
"""The website a request comes from, ``(scheme, host, port)``, and its Referer's path
(None when only ``Origin`` was sent)."""


AUTHORITIES_MEMO_SIZE = 4096
"""Entries of a ``read_site`` ``authorities`` memo (``scheme://authority`` -> parsed)."""
_AUTHORITY = re.compile(r"[^/?#]*://[^/?#]*")


def read_site(
    origin: str | None, referer: str | None,
    authorities: dict[str, tuple[str, str, int | None] | str] | None = None,
) -> RequestSite | str:
    """The website the ``Origin``/``Referer`` headers name, or the reason they name none.

    Pure, and the same for every token: ``Policy`` remembers it per header pair, and each
    token's matcher then needs only set lookups (``check_site``). ``authorities`` remembers
    the parse of each ``scheme://authority`` part, so a site's many pages (Referers) parse
    its host once; a Referer's own path is still checked every time.
    """
    # Length first: anything longer is refused before any parsing.
    if (origin is not None and len(origin) > MAX_HEADER_LENGTH) or (
        referer is not None and len(referer) > MAX_HEADER_LENGTH
    ):
        return (
            f"The Origin or Referer header is longer than {MAX_HEADER_LENGTH} characters, "
            f"so the website cannot be checked; {_REFUSED}."
        )
    if origin is None and referer is None:
        return (
            "The request has no Origin or Referer header, so the website calling cannot be "
            f"checked; {_REFUSED}. Call from a page on one of them in a browser, or remove "
            "the token's referers restriction."
        )
    site: tuple[str, str, int] | None = None
    if origin is not None:
        if origin == "null":
            return (
                "The request's Origin is 'null' (a sandboxed frame, a file:// page or a "
                f"privacy redirect), which names no website; {_REFUSED}. Serve the page "
                "from an http(s) site listed in the token's referers."
            )
        try:
            scheme, host, port, rest = _split_request(origin, authorities)
            if rest:
                raise ValueError("has a path; an Origin is scheme://host[:port]")
        except ValueError as exc:
            return f"The Origin header {exc}; {_REFUSED}."
        site = (scheme, host, port or _DEFAULT_PORTS[scheme])
    path: str | None = None
    if referer is not None:
        try:
            scheme, host, port, rest = _split_request(referer, authorities)
        except ValueError as exc:
            return f"The Referer header {exc}; {_REFUSED}."
        ref_site = (scheme, host, port or _DEFAULT_PORTS[scheme])
        if site is not None and site != ref_site:
            return (
                f"The Origin header ({_site_text(site)}) and the Referer header "
                f"({_site_text(ref_site)}) name different websites; {_REFUSED}."
            )
        site = ref_site
        path = rest.partition("?")[0].partition("#")[0] or "/"
    assert site is not None
    return site, path


# A Referer whose rest (after scheme://authority) is printable ASCII without a space or a
# backslash: what referer_site checks of the rest, in one match.
_PLAIN_REFERER = re.compile(r"([^/?#]*://[^/?#]*)[!-\[\]-~]*")


def referer_site(referer: str) -> str | None:
    """The ``scheme://authority`` part of a Referer whose rest ``read_site`` takes as it is.

    Two such Referers with the same part, sent with the same Origin, name the same website
    (or fail alike) in ``read_site``: only the page path differs, which only path patterns
    read (``OriginMatcher.reads_path``). None: read the whole header.
    """
    if len(referer) > MAX_HEADER_LENGTH:
        return None
    plain = _PLAIN_REFERER.fullmatch(referer)
    if plain is not None:
        return plain[1]
    found = _AUTHORITY.match(referer)
    if found is None:
        return None
    end = found.end()
    rest = referer[end:]
    # The same test as _split_request's, which otherwise reads the whole header afresh.
    if not rest.isprintable() or " " in rest or "\\" in rest.partition("?")[0].partition("#")[0]:
        return None
    return referer[:end]


def _split_request(
    text: str, authorities: dict[str, tuple[str, str, int | None] | str] | None
) -> tuple[str, str, int | None, str]:
    """``_split`` of a request header; its ``scheme://authority`` part remembered."""
    if authorities is None:
        scheme, host, port, _, rest = _split(text, pattern=False)
        return scheme, host, port, rest
    found = _AUTHORITY.match(text)
    if found is None:
        scheme, host, port, _, rest = _split(text, pattern=False)
        return scheme, host, port, rest
    head, rest = text[: found.end()], text[found.end():]
    # What _split checks on the rest of the text (the whole of it checks the head too).
    if not rest.isprintable() or " " in rest or "\\" in rest.partition("?")[0].partition("#")[0]:
        scheme, host, port, _, rest = _split(text, pattern=False)
        return scheme, host, port, rest
    parsed = authorities.get(head)
    if parsed is None:
        try:
            scheme, host, port, _, _ = _split(head, pattern=False)
            parsed = (scheme, host, port)
        except ValueError as exc:
            parsed = str(exc)
        if len(authorities) >= AUTHORITIES_MEMO_SIZE:
            authorities.clear()
        authorities[head] = parsed
    if isinstance(parsed, str):
        raise ValueError(parsed)
    return (*parsed, rest)


def _split(text: str, *, pattern: bool) -> tuple[str, str, int | None, bool, str]:
    """Split ``scheme://authority rest`` into (scheme, host, port, any_port, rest).

    ``port`` is None for the scheme's default. Raises ValueError with a phrase that follows the
    value's name ("has userinfo ..."), never quoting raw header content beyond the scheme.
    """
    if not text.isprintable() or " " in text:
        raise ValueError("contains whitespace or a control character; remove it")
    scheme_text, sep, after = text.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme_text):
        raise ValueError("is not a URL of the form scheme://host[:port]")
    scheme = scheme_text.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"has scheme {scheme[:32]!r}; only http and https websites can match")
    end = len(after)
    for stop in "/?#":
        i = after.find(stop)
        if 0 <= i < end:
            end = i
    authority, rest = after[:end], after[end:]
    # Browsers read '\' as '/' in http(s) URLs, so 'https://evil.com\@good.com' is evil.com.
    if "\\" in authority or "\\" in rest.partition("?")[0].partition("#")[0]:
        raise ValueError("contains a backslash, which browsers read as '/'; write '/'")
    if "@" in authority:
        raise ValueError(
            "has userinfo (a 'name@' before the host), which hides the real host; "
            "write the origin without it"
        )
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise ValueError("has an unclosed '[' in its IPv6 host")
        host_text, tail = authority[: close + 1], authority[close + 1 :]
        if tail and not tail.startswith(":"):
            raise ValueError("has text after its IPv6 host; write [address]:port")
        has_port, port_text = bool(tail), tail[1:]
    else:
        host_text, colon, port_text = authority.partition(":")
        has_port = bool(colon)
    host = _normalise_host(host_text, wildcard=pattern)
    port: int | None = None
    any_port = False
    if has_port:
        if pattern and port_text == "*":
            any_port = True
        elif not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError(
                "has an invalid port; a port is a number from 1 to 65535"
                + (", or '*' for any port" if pattern else "")
            )
        else:
            port = int(port_text)
            if port == _DEFAULT_PORTS[scheme]:
                port = None
    return scheme, host, port, any_port, rest


def _normalise_host(text: str, *, wildcard: bool) -> str:
    """Lowercase ASCII host (IDNA), ``*.`` kept if allowed, IPv6 in brackets, or ValueError."""
    if not text:
        raise ValueError("has no host, e.g. 'example.com' in 'https://example.com'")
    if text.startswith("["):
        inner = text[1:-1]
        if "%" in inner:
            raise ValueError("has an IPv6 zone id ('%'), which browsers do not send; remove it")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise ValueError("has an invalid IPv6 address in brackets") from None
    host = text
    is_wild = host.startswith("*.")
    if is_wild:
        if not wildcard:
            raise ValueError("has '*' in its host; a request names one website")
        host = host[2:]
    if host == "*" and wildcard:
        raise ValueError(
            "matches every website; leave the token's referers empty to allow every site, "
            "or write e.g. 'https://*.example.com'"
        )
    if "*" in host:
        raise ValueError(
            "has '*' inside the host; a wildcard is a whole first label, "
            "e.g. 'https://*.example.com'"
        )
    # One trailing dot names the same DNS host; drop it so 'example.com.' == 'example.com'.
    if host.endswith("."):
        host = host[:-1]
    host = host.lower()
    if not host.isascii():
        host = _idna(host)
    if len(host) > 253 or not _HOST.fullmatch(host):
        raise ValueError(
            "has an invalid host name; use letters, digits, '-' and '.' "
            "(Unicode names are converted with IDNA)"
        )
    if _NUMERIC_LABEL.fullmatch(host.rpartition(".")[2]):
        if is_wild:
            raise ValueError("puts a wildcard on an IP address; list the address itself")
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = ""
        if canonical != host:
            raise ValueError(
                "has a host that browsers read as an IPv4 address but that is not written as "
                "four decimal numbers 0-255 (e.g. '127.0.0.1')"
            )
    if is_wild:
        if "." not in host:
            raise ValueError(
                "is too broad: a wildcard needs at least two labels after '*.', "
                "e.g. 'https://*.example.com'"
            )
        return "*." + host
    return host


def _idna(host: str) -> str:
    """ASCII form of a lowercase Unicode host, refusing names IDNA 2003 would change."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
        back = ascii_host.encode("ascii").decode("idna")
    except UnicodeError:
        raise ValueError("has a host name that IDNA cannot convert") from None
    if back != unicodedata.normalize("NFC", host):
        # e.g. 'faß.de': IDNA 2003 gives 'fass.de' but browsers (UTS 46) 'xn--fa-hia.de'.
        raise ValueError(
            f"has a Unicode host that IDNA changes into {ascii_host[:253]!r}, which may not be "
            "what browsers send; write the host in the ASCII ('xn--') form browsers show"
        )
    return ascii_host


def _decode_segment(segment: str, *, unicode_ok: bool = False) -> str | None:
    """A path segment percent-decoded, or None if it could escape or fool a prefix check."""
    if not unicode_ok and not segment.isascii():
        return None
    try:
        decoded = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return None
    if decoded in (".", "..") or any(c in decoded for c in "/\\%") or not decoded.isprintable():
        return None
    return decoded


def _path_segments(path: str) -> tuple[str, ...] | None:
    """Decoded segments of an absolute path (``/a/b`` -> ("a", "b")), or None if unsafe."""
    out: list[str] = []
    for raw in path[1:].split("/"):
        decoded = _decode_segment(raw)
        if decoded is None:
            return None
        out.append(decoded)
    return tuple(out)


def _canonical_path(path: str) -> str:
    """A pattern's path prefix in canonical percent-encoded form ("" for none or "/")."""
    if not path or path == "/":
        return ""
    trimmed = path[:-1] if path.endswith("/") else path
    out: list[str] = []
    for raw in trimmed[1:].split("/"):
        if not raw:
            raise ValueError("has an empty path segment ('//'); write the path without it")
        if "*" in raw:
            raise ValueError(
                "has '*' in its path; a path prefix is literal and already covers everything "
                "below it, e.g. 'https://example.com/app'"
            )
        # Unicode is allowed in a pattern (people type it); browsers send it percent-encoded.
        decoded = _decode_segment(raw, unicode_ok=True)
        if decoded is None:
            raise ValueError(
                "has a '.' or '..' path segment, an encoded '/', '\\' or '%', or invalid "
                "percent-encoding in its path; write the plain path, e.g. '/app'"
            )
        out.append(quote(decoded, safe=_PATH_SAFE))
    return "/" + "/".join(out)


def _site_text(site: tuple[str, str, int]) -> str:
    """``scheme://host[:port]`` with the default port dropped."""
    scheme, host, port = site
    if port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
