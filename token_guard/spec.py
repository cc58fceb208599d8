"""The token model: the Tokens API JSON body, validated and normalised.

``parse_token_spec`` accepts exactly the body of ``POST /v3/tokens`` and raises
``InvalidTokenSpec`` naming the first field that is wrong and saying what to change.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from token_guard.errors import InvalidTokenSpec
from token_guard.facts import API_NAMES
from token_guard.origins import parse_origin_pattern

GrantKind = Literal["table", "wildcard", "all", "query"]

_CONNECTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_QUERY_START = re.compile(r"\s*(\(|select\b|with\b|from\b|values\b|table\b)", re.IGNORECASE)
_CREATE_FIELDS = frozenset({"name", "grants", "referers", "allowed_apis", "expiration_date"})
_UPDATE_FIELDS = frozenset({"name", "grants", "referers", "allowed_apis"})
_GRANT_FIELDS = frozenset({"connection_name", "source"})
MAX_NAME_LENGTH = 200
MAX_GRANTS = 20_000
MAX_SOURCE_LENGTH = 64 * 1024
# Cached tokens repeat the same API names, connection names, referers and table names:
# one shared string each keeps a cached token small (sys.intern'd strings are freed
# again when no token holds them).
_API_CANONICAL = {name: name for name in API_NAMES}
_INTERN_UP_TO = 256


@dataclass(frozen=True, slots=True)
class Grant:
    """One data-source grant: ``source`` on ``connection_name``; ``kind`` is derived."""

    connection_name: str
    source: str
    kind: GrantKind

    def as_json(self) -> dict[str, str]:
        """The grant as the Tokens API writes it."""
        return {"connection_name": self.connection_name, "source": self.source}


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """A validated, normalised token body."""

    name: str
    grants: tuple[Grant, ...]
    referers: tuple[str, ...]
    allowed_apis: tuple[str, ...]
    expiration_date: datetime | None

    def as_json(self) -> dict[str, Any]:
        """The body as the Tokens API returns it."""
        return {
            "name": self.name,
            "grants": [g.as_json() for g in self.grants],
            "referers": list(self.referers),
            "allowed_apis": list(self.allowed_apis),
            "expiration_date": format_datetime(self.expiration_date),
        }

    def warnings(self) -> list[str]:
        """Things that are allowed but worth a second look (e.g. a ``*`` grant)."""
        out = []
        for g in self.grants:
            if g.kind == "all":
                out.append(
                    f"grant on connection '{g.connection_name}' has source '*': the token can "
                    "read everything on that connection; grant tables or wildcards instead"
                )
        if not self.referers and ("maps" in self.allowed_apis or "sql" in self.allowed_apis):
            out.append(
                "referers is empty: any website may use this token; list the sites that "
                "embed it, e.g. 'https://*.example.com'"
            )
        return out


def format_datetime(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a trailing ``Z`` (or None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_token_spec(body: Mapping[str, Any], *, now: datetime | None = None) -> TokenSpec:
    """Validate a ``POST /v3/tokens`` body and return its normalised form."""
    if not isinstance(body, Mapping):
        raise InvalidTokenSpec("body", "must be a JSON object with the token's fields")
    _reject_unknown(body, _CREATE_FIELDS, "body")
    if "allowed_apis" not in body:
        raise InvalidTokenSpec(
            "allowed_apis", "is required: list the APIs the token may call, e.g. ['maps', 'sql']"
        )
    apis = _parse_apis(body["allowed_apis"])
    return TokenSpec(
        name=_parse_name(body.get("name", "")),
        grants=_parse_grants(body.get("grants", [])),
        referers=_parse_referers(body.get("referers", [])),
        allowed_apis=apis,
        expiration_date=_parse_expiration(body.get("expiration_date"), now),
    )


def apply_update(spec: TokenSpec, changes: Mapping[str, Any]) -> TokenSpec:
    """Apply a ``PATCH /v3/tokens/{id}`` body; expiration can only be set at creation."""
    if not isinstance(changes, Mapping):
        raise InvalidTokenSpec("body", "must be a JSON object with the fields to change")
    if "expiration_date" in changes:
        raise InvalidTokenSpec(
            "expiration_date",
            "is set only at creation; create a new token with the expiration you need "
            "and revoke this one",
        )
    _reject_unknown(changes, _UPDATE_FIELDS, "body")
    out = spec
    if "name" in changes:
        out = replace(out, name=_parse_name(changes["name"]))
    if "grants" in changes:
        out = replace(out, grants=_parse_grants(changes["grants"]))
    if "referers" in changes:
        out = replace(out, referers=_parse_referers(changes["referers"]))
    if "allowed_apis" in changes:
        out = replace(out, allowed_apis=_parse_apis(changes["allowed_apis"]))
    return out


def classify_source(source: str) -> GrantKind:
    """Say what a grant source is: ``all`` (``*``), ``wildcard``, ``query`` or ``table``."""
    if source == "*":
        return "all"
    if _QUERY_START.match(source) or any(ch.isspace() for ch in source):
        return "query"
    if source.endswith(".*"):
        return "wildcard"
    return "table"


def split_name(name: str) -> list[str]:
    """Split a dotted name into segments, keeping quoted segments (``"a.b"``, `` `a` ``) whole.

    A BigQuery backtick path `` `p.d.t` `` counts as its three segments.
    """
    segments: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for ch in name:
        if quote is not None:
            if ch == quote:
                quote = None
            elif ch == "." and quote == "`":
                segments.append("".join(current))
                current = []
                continue
            current.append(ch)
        elif ch in "\"`":
            quote = ch
            current.append(ch)
        elif ch == "[":
            quote = "]"
            current.append(ch)
        elif ch == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quote is not None:
        raise ValueError(f"unclosed quote {quote!r} in {name!r}")
    segments.append("".join(current))
    return [s.strip("\"`[]") if s not in ("*",) else s for s in segments]


def _reject_unknown(body: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise InvalidTokenSpec(
            unknown[0],
            f"unknown field in {where}; the fields are {', '.join(sorted(known))}",
        )


def _parse_name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidTokenSpec("name", "must be a string, e.g. 'storefront map'")
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidTokenSpec("name", f"is {len(name)} characters; keep it to {MAX_NAME_LENGTH}")
    if any(ord(ch) < 32 for ch in name):
        raise InvalidTokenSpec("name", "contains control characters; use plain text")
    return name


def _parse_apis(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidTokenSpec(
            "allowed_apis", "must be a non-empty list, e.g. ['maps', 'sql']"
        )
    apis: list[str] = []
    for item in value:
        if not isinstance(item, str) or item not in API_NAMES:
            raise InvalidTokenSpec(
                "allowed_apis",
                f"unknown API {item!r}; choose from {', '.join(sorted(API_NAMES))}",
            )
        if item not in apis:
            apis.append(_API_CANONICAL[item])
    if "imports" in apis and len(apis) > 1:
        raise InvalidTokenSpec(
            "allowed_apis",
            "'imports' cannot be combined with other APIs (its grants say where imports "
            "may write); create a separate token for imports",
        )
    return tuple(apis)


def _parse_grants(value: Any) -> tuple[Grant, ...]:
    if not isinstance(value, list):
        raise InvalidTokenSpec(
            "grants",
            "must be a list of {'connection_name': ..., 'source': ...} objects",
        )
    if len(value) > MAX_GRANTS:
        raise InvalidTokenSpec("grants", f"has {len(value)} entries; the limit is {MAX_GRANTS}")
    grants: list[Grant] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(value):
        field = f"grants[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidTokenSpec(field, "must be an object with connection_name and source")
        _reject_unknown(item, _GRANT_FIELDS, field)
        conn = item.get("connection_name")
        if not isinstance(conn, str) or not conn.strip():
            raise InvalidTokenSpec(
                f"{field}.connection_name", "is empty; name the connection, e.g. 'carto_dw'"
            )
        conn = sys.intern(conn.strip())
        if not _CONNECTION_NAME.fullmatch(conn) or conn in (".", ".."):
            raise InvalidTokenSpec(
                f"{field}.connection_name",
                f"{conn!r} is not a connection name; use letters, digits, '_', '-' and '.'",
            )
        source = item.get("source")
        if not isinstance(source, str) or not source.strip():
            raise InvalidTokenSpec(
                f"{field}.source",
                "is empty; give a table ('proj.dataset.table'), a wildcard "
                "('proj.dataset.*'), '*' or a SQL query",
            )
        source = source.strip()
        if len(source) > MAX_SOURCE_LENGTH:
            raise InvalidTokenSpec(
                f"{field}.source", f"is longer than {MAX_SOURCE_LENGTH} characters"
            )
        kind = classify_source(source)
        if kind in ("table", "wildcard"):
            _check_name(source, kind, f"{field}.source")
        if len(source) <= _INTERN_UP_TO:
            source = sys.intern(source)
        key = (conn, source)
        if key not in seen:
            seen.add(key)
            grants.append(Grant(conn, source, kind))
    return tuple(grants)


def _check_name(source: str, kind: GrantKind, field: str) -> None:
    try:
        segments = split_name(source)
    except ValueError as exc:
        raise InvalidTokenSpec(field, f"{exc}; close the quote") from None
    if kind == "wildcard":
        before = segments[:-1]
        if len(before) < 2:
            raise InvalidTokenSpec(
                field,
                f"grant source {source!r} needs at least two segments before '*', "
                "e.g. 'proj.dataset.*'",
            )
    else:
        before = segments
    for seg in before:
        if not seg:
            raise InvalidTokenSpec(
                field, f"{source!r} has an empty segment; write it as 'proj.dataset.table'"
            )
        if "*" in seg:
            raise InvalidTokenSpec(
                field,
                f"{source!r} has '*' inside a segment; a wildcard is a whole last "
                "segment, e.g. 'proj.dataset.*'",
            )


def _parse_referers(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidTokenSpec(
            "referers", "must be a list of origins, e.g. ['https://*.example.com'] or []"
        )
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidTokenSpec(f"referers[{i}]", "must be a string such as 'https://example.com'")
        try:
            pattern = parse_origin_pattern(item.strip())
        except ValueError as exc:
            raise InvalidTokenSpec(f"referers[{i}]", str(exc)) from None
        text = sys.intern(str(pattern))
        if text not in out:
            out.append(text)
    return tuple(out)


def _parse_expiration(value: Any, now: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidTokenSpec(
            "expiration_date", "must be an ISO 8601 string, e.g. '2027-01-01T00:00:00Z'"
        )
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidTokenSpec(
            "expiration_date",
            f"{value!r} is not an ISO 8601 date-time; write e.g. '2027-01-01T00:00:00Z'",
        ) from None
    if parsed.tzinfo is None:
        raise InvalidTokenSpec(
            "expiration_date",
            f"{value!r} has no timezone; add one, e.g. '{value}Z' for UTC",
        )
    parsed = parsed.astimezone(UTC)
    if parsed <= (now or datetime.now(UTC)):
        raise InvalidTokenSpec(
            "expiration_date", f"{value!r} is in the past; choose a future date"
        )
    return parsed
