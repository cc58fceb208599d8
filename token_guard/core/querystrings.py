"""URL-encoded text (query strings, form bodies) read one way for every part of the guard.

Security choices:
- Strict, so the guard and every server read the same parameters: ``+`` is a space; an
  invalid ``%``-escape anywhere, or a raw ``;`` (a separator to some servers:
  ``x=1;name=b`` could smuggle a second ``name``), is refused; a wanted key given twice is
  ambiguous; a wanted key or value that is not UTF-8 is refused.
- Only what is wanted is decoded on the request path (``parse_wanted``); everything else is
  checked for valid escapes only, so ``a=1&&b=2`` and a trailing ``&`` hide nothing.
- ``redact`` replaces every ``access_token`` value before anything is logged, whatever
  its encoding (``access%5Ftoken=``, ``ACCESS_TOKEN=``). ``redacted_query`` does the same
  on the bytes the adapters put back into the ASGI scope / WSGI environ, so the server's own
  access log (which reads them from there) never prints the token either.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from token_guard.core import decision as codes
from token_guard.core.decision import Denial

__all__ = ["BAD_ESCAPES", "SEMICOLON", "decode", "may_hold_token", "parse_all", "parse_wanted",
           "plain_names", "redact", "redacted_query", "valid_escapes", "values_of",
           "wanted_pattern", "wanted_pieces"]

# Each byte's class for ``valid_escapes``: "%", "h" (a hex digit) or "x" (anything else).
_CLASSES = bytes(
    ord("%") if b == ord("%") else ord("h") if chr(b) in "0123456789abcdefABCDEF" else ord("x")
    for b in range(256)
)


def valid_escapes(data: bytes) -> bool:
    """Whether every ``%`` in ``data`` starts an escape: ``%`` and two hex digits.

    One ``bytes.translate`` (C) and two counts: a granted query's dozens of escapes cost no
    more than its length (a regex search runs its matcher at each ``%``: twice the cost).
    """
    return data.find(b"%") == -1 or _escapes_valid(data)


def _escapes_valid(data: bytes) -> bool:
    kinds = data.translate(_CLASSES)
    return kinds.count(b"%hh") == kinds.count(b"%")  # "%hh" cannot overlap itself


BAD_ESCAPES = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The query string has an invalid %-escape or a parameter name that is not UTF-8.",
    "Encode the query string as URLSearchParams does: '%' followed by two hex digits.",
)
SEMICOLON = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The query string has a raw ';', which some servers read as a parameter separator.",
    "Percent-encode ';' as %3B (URLSearchParams does), so every server sees the same parameters.",
)


def _twice(key: str) -> Denial:
    return Denial(
        400,
        codes.AMBIGUOUS_REQUEST,
        f"Parameter '{key}' is given more than once in the query string.",
        f"Send '{key}' once.",
    )


def _not_utf8(key: str) -> Denial:
    return Denial(
        400, codes.MALFORMED_REQUEST, f"Parameter '{key}' is not valid UTF-8.",
        f"Encode '{key}' as UTF-8.",
    )


def decode(latin1: str) -> str:
    """Decode one key or value, given as the latin-1 text of its bytes (raises
    ``UnicodeDecodeError`` when it is not UTF-8)."""
    if "%" in latin1 or "+" in latin1:
        return unquote_to_bytes(latin1.replace("+", " ").encode("latin-1")).decode("utf-8")
    if latin1.isascii():
        return latin1
    return latin1.encode("latin-1").decode("utf-8")


DECODED_MEMO_SIZE = 4096
"""Values remembered by a ``decoded`` memo (see ``parse_wanted``); cleared when full."""
_MEMO_MIN = 24  # shorter values decode faster than they hash


def parse_wanted(
    query: bytes, names: frozenset[str], decoded: dict[str, str] | None = None
) -> dict[str, str] | Denial:
    """The wanted parameters' values; a duplicate or a bad escape is a refusal.

    ``decoded`` remembers the decoding of long escaped values (a granted query sent again
    and again with other bound parameters): ``unquote`` works escape by escape in Python.
    """
    found: dict[str, str] = {}
    if not query:
        return found
    # latin-1 maps bytes 1:1 to code points: str operations at str speed, and decode turns
    # a piece back into its exact bytes before UTF-8 decoding.
    if not valid_escapes(query):
        return BAD_ESCAPES
    text = query.decode("latin-1")
    if ";" in text:
        return SEMICOLON
    # Plain ASCII with no escapes (the usual case): keys and values are final as they are.
    plain = "%" not in text and "+" not in text and text.isascii()
    for piece in text.split("&"):
        key, _, raw_value = piece.partition("=")
        if key not in names:
            if plain or ("%" not in key and "+" not in key and key.isascii()):
                continue
            try:
                key = decode(key)
            except UnicodeDecodeError:
                return BAD_ESCAPES
            if key not in names:
                continue
        if key in found:
            return _twice(key)
        if plain:
            found[key] = raw_value
            continue
        if decoded is not None and len(raw_value) >= _MEMO_MIN:
            value = decoded.get(raw_value)
            if value is None:
                try:
                    value = decode(raw_value)
                except UnicodeDecodeError:
                    return _not_utf8(key)
                if len(decoded) >= DECODED_MEMO_SIZE:
                    decoded.clear()
                decoded[raw_value] = value
            found[key] = value
            continue
        try:
            found[key] = decode(raw_value)
        except UnicodeDecodeError:
            return _not_utf8(key)
    return found


def _name_holding(marks: bytes) -> re.Pattern[bytes]:
    """The search for a parameter name holding any of ``marks`` (on the query string given
    a leading "&": a name runs from an "&" to the next "=" or "&")."""
    return re.compile(rb"&[^=&" + marks + rb"]*+[" + marks + rb"]")


# A parameter name with a "%" escape or a "+" in it.
_ESCAPED_NAME = _name_holding(b"%+")


def wanted_pattern(names: frozenset[str]) -> re.Pattern[bytes]:
    """The pattern ``wanted_pieces`` finds the ``names`` pieces with, compiled once per route
    (search on the query string given a leading "&": each piece's name is then whole)."""
    if not names:
        return _NO_NAMES
    alternatives = b"|".join(re.escape(n.encode("ascii")) for n in sorted(names))
    return re.compile(rb"&((?:" + alternatives + rb")(?:=[^&]*+)?)(?=&|\Z)")


# The pattern of a route that reads no parameter (LDS): it finds nothing, and
# ``wanted_pieces`` does not search with it.
_NO_NAMES = re.compile(rb"(?!)")


def wanted_pieces(
    query: bytes, pattern: re.Pattern[bytes], names_plain: bool = False
) -> bytes | None:
    """The raw ``key=value`` pieces (a name alone, too) of the names whose
    ``wanted_pattern`` is given, joined by ``&``, in a few C calls; or None.

    Two query strings with the same answer (not None) give the same ``parse_wanted``
    answer, refusals included, so a memo keyed on it ignores the parameters a decision never
    reads (bound values, client versions). None when any escape is invalid, there is a raw
    ``;``, a byte outside ASCII, or a name with an escape or a ``+`` (which could decode to
    a wanted name): read the query string whole then (``parse_wanted``). ``names_plain``:
    the caller already knows ``plain_names(query)`` is True, so the names are not searched
    again.
    """
    if not query:
        return b""
    if query.find(b";") != -1 or not query.isascii():
        return None
    escaped = query.find(b"%") != -1
    if escaped and not _escapes_valid(query):
        return None
    marked = b"&" + query
    if (not names_plain and (escaped or query.find(b"+") != -1)
            and _ESCAPED_NAME.search(marked) is not None):
        return None
    if pattern is _NO_NAMES:
        return b""
    return b"&".join(pattern.findall(marked))


def parse_all(data: bytes) -> dict[str, str] | Denial:
    """Every parameter, decoded, under the same rules; any key given twice is refused (a
    form body: frameworks differ on which of two values they keep)."""
    if not valid_escapes(data):
        return BAD_ESCAPES
    text = data.decode("latin-1")
    if ";" in text:
        return SEMICOLON
    found: dict[str, str] = {}
    for piece in text.split("&"):
        if not piece:
            continue
        raw_key, _, raw_value = piece.partition("=")
        try:
            key = decode(raw_key)
        except UnicodeDecodeError:
            return BAD_ESCAPES
        if key in found:
            return _twice(key)
        try:
            found[key] = decode(raw_value)
        except UnicodeDecodeError:
            return _not_utf8(key)
    return found


def values_of(query: bytes, name: str) -> list[str]:
    """Every value given for ``name`` (decoded leniently: used to find, not to trust)."""
    out = []
    for piece in query.decode("latin-1").split("&"):
        key, _, value = piece.partition("=")
        if _lenient(key) == name:
            out.append(_lenient(value))
    return out


def redact(query: bytes) -> str:
    """The query string with any ``access_token`` value replaced by ``REDACTED``."""
    text = query.decode("latin-1")
    if "access_token" not in text.lower() and "%" not in text:
        return text
    parts = []
    for piece in text.split("&"):
        name = _lenient(piece.split("=", 1)[0])
        parts.append(f"{name}=REDACTED" if "access_token" in name.lower() else piece)
    return "&".join(parts)


# A parameter name with ``_`` or a ``%`` escape in it.
_NAME_MARK = _name_holding(b"%_")


def may_hold_token(query: bytes) -> bool:
    """A fast test that some parameter of ``query`` may be named ``access_token``.

    ``redacted_query`` reads a name leniently decoded and case-insensitively (``ACCESS_TOKEN``,
    ``aCcEss_tOkEn``, ``a%63cess_token``, which the guard reads as ``access_token``). Any
    such name holds a ``_`` or a ``%`` escape (``%5F``): so only a query string with a
    name holding either needs it. Values are never scanned: the escapes of a granted SQL
    query or of its bound parameters cost nothing here.
    One regular expression search (a scan to each "&", then the name).
    """
    return _NAME_MARK.search(b"&" + query) is not None


# A parameter name with "%", "+" or "_" in it.
_MARKED_NAME = _name_holding(b"%+_")


def plain_names(query: bytes) -> bool:
    """Whether no parameter name of ``query`` holds a ``%``, a ``+`` or a ``_``.

    Then no name can read as ``access_token`` (``may_hold_token`` is False, ``redacted_query``
    None) or decode to another name (``wanted_pieces`` need not search the names again):
    one search the ASGI adapter makes for its log redaction and hands to ``Guard.check``,
    where it stands for both of those searches (~4 k instructions each).
    """
    return _MARKED_NAME.search(b"&" + query) is None


def redacted_query(query: bytes) -> bytes | None:
    """``query`` with every ``access_token`` value replaced by ``REDACTED``, or None if it
    names none (the name compared decoded and case-insensitively, as ``redact`` does)."""
    parts = query.split(b"&")
    changed = False
    for i, piece in enumerate(parts):
        name = piece.partition(b"=")[0]
        if _lenient(name.decode("latin-1")).lower().find("access_token") >= 0:
            parts[i] = name + b"=REDACTED"
            changed = True
    return b"&".join(parts) if changed else None


def _lenient(latin1: str) -> str:
    return unquote_to_bytes(latin1.replace("+", " ").encode("latin-1")).decode(
        "utf-8", "replace"
    )
