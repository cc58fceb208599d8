"""Request bodies read as the application will read them: by their Content-Type.

Security choices:
- A body is read the way the app's framework reads it, so the guard never checks one set of
  parameters while the app runs another. ``application/json`` and ``*/*+json`` are read as
  a JSON object (duplicate keys refused: parsers disagree on which one wins);
  ``application/x-www-form-urlencoded`` as a form, the way Flask's ``request.form`` /
  ``request.values`` and Starlette's ``request.form()`` read it. A JSON-looking body sent as
  a form is a form: ``{"name":"a","x":"&name=secret"}`` names ``name=secret"}``.
- A form is parsed strictly: ``+`` is a space; an invalid ``%``-escape, a raw ``;``, a key
  given twice, or text that is not UTF-8 is refused (400), since servers and frameworks
  differ on each.
- ``multipart/form-data`` and any charset but UTF-8 are refused (415) on routes whose
  sources may travel in the body: the guard does not read them, so it cannot prove them.
- No Content-Type, or another type (``text/plain`` is what ``fetch`` sends for a string
  body): read as JSON, since frameworks that read such a body at all read it as JSON
  (``request.json()`` ignores the type; Flask's ``get_json(force=True)``); form parsers
  never read it. Two Content-Type headers are ambiguous (400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from token_guard.core import decision as codes
from token_guard.core.decision import Denial
from token_guard.core.querystrings import parse_all

__all__ = ["CONFLICTING_TYPES", "media_type", "one_content_type", "parse_body"]

CONFLICTING_TYPES = "\x00conflict"
"""What adapters pass for a Content-Type header sent twice with different values."""

BAD_JSON = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The request body is not a JSON object.",
    "Send the parameters as a JSON object with 'Content-Type: application/json'.",
)
BAD_FORM = Denial(
    400,
    codes.MALFORMED_REQUEST,
    "The form body has an invalid %-escape, a raw ';', a parameter given twice, or text "
    "that is not UTF-8.",
    "Send the parameters as a JSON object with 'Content-Type: application/json'.",
)
TWO_TYPES = Denial(
    400,
    codes.AMBIGUOUS_REQUEST,
    "The request has two different Content-Type headers.",
    "Send one 'Content-Type: application/json' header.",
)


def _unsupported(what: str) -> Denial:
    return Denial(
        415,
        codes.UNSUPPORTED_MEDIA_TYPE,
        f"token_guard does not read {what} bodies on routes whose data source may travel "
        "in the body, so it cannot check them.",
        "Send the parameters as a JSON object with 'Content-Type: application/json' "
        "(UTF-8), or in the query string.",
    )


MULTIPART = _unsupported("multipart/form-data")
CHARSET = _unsupported("non-UTF-8")
_JSON, _FORM = "json", "form"


def one_content_type(values: list[str]) -> str | None:
    """One Content-Type from the header's values, or ``CONFLICTING_TYPES``.

    A server may join repeated headers with commas (WSGI does); media types hold none, so
    ASGI's separate values and WSGI's joined one are judged alike.
    """
    if not values:
        return None
    parts = {part.strip() for value in values for part in value.split(",")}
    return parts.pop() if len(parts) == 1 else CONFLICTING_TYPES


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """The lower-cased media type and the charset parameter (lower-cased) if any."""
    if not content_type:
        return "", None
    kind, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


def parse_body(raw: bytes, content_type: str | None) -> Mapping[str, Any] | Denial | None:
    """The parameters of a buffered body (None if empty), read by its Content-Type."""
    if content_type == CONFLICTING_TYPES:
        return TWO_TYPES
    kind, charset = media_type(content_type)
    if kind == "multipart/form-data":
        return MULTIPART
    if charset is not None and charset not in ("utf-8", "utf8"):
        return CHARSET
    if not raw.strip():
        return None
    if kind == "application/x-www-form-urlencoded":
        return _form(raw)
    return _json(raw)


def _json(raw: bytes) -> Mapping[str, Any] | Denial:
    try:
        parsed = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return BAD_JSON
    if not isinstance(parsed, dict):
        return BAD_JSON
    return parsed


def _form(raw: bytes) -> Mapping[str, Any] | Denial:
    parsed = parse_all(raw)
    return BAD_FORM if isinstance(parsed, Denial) else parsed


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; the app's parser may keep the first,
    # so {"q": granted, "q": secret} could be checked as one query and run as another.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return out
