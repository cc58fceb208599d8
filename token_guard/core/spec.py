"""The token model: the Tokens API JSON body, declared once, validated and normalised.

``TOKEN_FIELDS`` declares every field of the body (its JSON Schema, whether it is required,
creatable and patchable, a description and an example, its validator). Validation here, the
OpenAPI document (``management.openapi``) and the CLI's ``tokens create/update`` flags all
follow from it: a new field is one entry there, its validator, and its ``TokenSpec`` attribute.

``parse_token_spec`` accepts exactly the body of ``POST /v3/tokens`` and raises
``InvalidTokenSpec`` naming the first field that is wrong and saying what to change.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from token_guard.core.errors import InvalidTokenSpec
from token_guard.core.facts import API_NAMES
from token_guard.core.limits import LIMITS_SCHEMA, Limits, limits_json, parse_limits
from token_guard.core.origins import parse_origin_pattern

GrantKind = Literal["table", "wildcard", "all", "query"]

_CONNECTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_QUERY_START = re.compile(r"\s*(\(|select\b|with\b|from\b|values\b|table\b)", re.IGNORECASE)
#: The APIs in the order the OpenAPI document lists them.
API_ORDER: tuple[str, ...] = ("maps", "sql", "lds", "imports")
assert frozenset(API_ORDER) == API_NAMES
#: The JSON Schema of one grant; its properties are the grant's fields.
GRANT_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["connection_name", "source"],
    "additionalProperties": False,
    "properties": {
        "connection_name": {"type": "string", "examples": ["carto_dw"]},
        "source": {"type": "string", "examples": ["carto-demo-data.demo_tables.retail_stores"]},
    },
}
_GRANT_FIELDS = frozenset(GRANT_SCHEMA["properties"])
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
    limits: Limits | None = None

    def as_json(self) -> dict[str, Any]:
        """The body as the Tokens API returns it."""
        return {f.name: f.to_json(getattr(self, f.name)) for f in TOKEN_FIELDS}

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
        if self.limits is not None:
            for rule in (*self.limits.rate, *self.limits.quota):
                if rule.api is not None and rule.api not in self.allowed_apis:
                    out.append(
                        f"limit '{rule.describe()}' is on an API the token may not call; "
                        f"add '{rule.api}' to allowed_apis or drop the rule"
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
    values: dict[str, Any] = {}
    for f in _PARSE_ORDER:
        if f.required and f.name not in body:
            raise InvalidTokenSpec(f.name, f"is required: {f.required_hint}")
        values[f.name] = f.parse(body.get(f.name, f.default), now)
    return TokenSpec(**values)


def parse_grants(value: Any) -> tuple[Grant, ...]:
    """Validate a body's ``grants`` list (errors name ``grants[i]...``)."""
    return _parse_grants(value)


def apply_update(spec: TokenSpec, changes: Mapping[str, Any]) -> TokenSpec:
    """Apply a ``PATCH /v3/tokens/{id}`` body; expiration can only be set at creation."""
    if not isinstance(changes, Mapping):
        raise InvalidTokenSpec("body", "must be a JSON object with the fields to change")
    for f in TOKEN_FIELDS:
        if f.creatable and not f.patchable and f.name in changes:
            raise InvalidTokenSpec(f.name, f.fixed_hint)
    _reject_unknown(changes, _UPDATE_FIELDS, "body")
    values = {f.name: f.parse(changes[f.name], None) for f in _PATCHABLE if f.name in changes}
    return replace(spec, **values) if values else spec


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


def _grants_json(grants: tuple[Grant, ...]) -> list[dict[str, str]]:
    return [g.as_json() for g in grants]


@dataclass(frozen=True, slots=True)
class TokenField:
    """One field of the token body, declared once for validation, OpenAPI and the CLI.

    ``schema`` is the JSON Schema of the value; ``parse(value, now)`` validates it (raising
    ``InvalidTokenSpec``) and returns the ``TokenSpec`` attribute, which ``to_json`` writes
    back. A body without the field is parsed as if it held ``default``. ``required`` fields
    must be in a creation body (``required_hint`` says what to give); a ``creatable`` field
    that is not ``patchable`` is refused on update with ``fixed_hint``.
    """

    name: str
    schema: Mapping[str, Any]
    description: str
    example: Any
    parse: Callable[[Any, datetime | None], Any]
    to_json: Callable[[Any], Any] = list
    default: Any = None
    required: bool = False
    required_hint: str = ""
    creatable: bool = True
    patchable: bool = True
    fixed_hint: str = ""

    def json_schema(self) -> dict[str, Any]:
        """The field's JSON Schema with its description and example."""
        return {**self.schema, "description": self.description, "examples": [self.example]}


#: The fields of the token body, in the order the Tokens API writes them.
TOKEN_FIELDS: tuple[TokenField, ...] = (
    TokenField(
        "name", {"type": "string", "maxLength": MAX_NAME_LENGTH},
        "A name for people; not unique.", "storefront map",
        lambda v, _: _parse_name(v), to_json=str, default="",
    ),
    TokenField(
        "grants", {"type": "array", "items": GRANT_SCHEMA},
        "Data sources per connection: a table, a wildcard ('proj.dataset.*'), '*' or one "
        "SQL query.",
        [{"connection_name": "carto_dw", "source": "carto-demo-data.demo_tables.retail_stores"}],
        lambda v, _: _parse_grants(v), to_json=_grants_json, default=[],
    ),
    TokenField(
        "referers", {"type": "array", "items": {"type": "string"}},
        "Websites that may use the token (origin patterns); [] means any website.",
        ["https://*.example.com"],
        lambda v, _: _parse_referers(v), default=[],
    ),
    TokenField(
        "allowed_apis",
        {"type": "array", "items": {"type": "string", "enum": list(API_ORDER)}, "minItems": 1},
        "The APIs the token may call; 'imports' cannot be combined with another API.",
        ["maps", "sql"],
        lambda v, _: _parse_apis(v), required=True,
        required_hint="list the APIs the token may call, e.g. ['maps', 'sql']",
    ),
    TokenField(
        "expiration_date", {"type": ["string", "null"], "format": "date-time"},
        "When the token stops working (ISO 8601 with a timezone); null: never. Set only at "
        "creation.",
        "2027-01-01T00:00:00Z",
        _parse_expiration, to_json=format_datetime, patchable=False,
        fixed_hint="is set only at creation; create a new token with the expiration you need "
        "and revoke this one",
    ),
    TokenField(
        "limits", LIMITS_SCHEMA,
        "Request rates ('rate': a list, per second|minute|hour|day) and calendar quotas "
        "('quota': one rule or a list, per day|month, UTC), each optionally for one 'api'; "
        "over a limit requests get 429. null: no limits.",
        {"rate": [{"requests": 600, "per": "minute", "api": "sql"}],
         "quota": {"requests": 1000000, "per": "month"}},
        lambda v, _: parse_limits(v), to_json=limits_json,
    ),
)
_CREATE_FIELDS = frozenset(f.name for f in TOKEN_FIELDS if f.creatable)
_UPDATE_FIELDS = frozenset(f.name for f in TOKEN_FIELDS if f.patchable)
_PATCHABLE = tuple(f for f in TOKEN_FIELDS if f.patchable)
# Required fields are checked first, so a body without them is told that before anything else.
_PARSE_ORDER = tuple(sorted(TOKEN_FIELDS, key=lambda f: not f.required))


def spec_errors(
    body: Mapping[str, Any], *, creating: bool = True, now: datetime | None = None
) -> list[InvalidTokenSpec]:
    """Every field error of a body at once (each grant on its own), for forms that show them
    all beside their fields; ``parse_token_spec`` stops at the first. Empty: no field error
    (a body can still fail ``parse_token_spec`` on a check across fields)."""
    if not isinstance(body, Mapping):
        return [InvalidTokenSpec("body", "must be a JSON object with the token's fields")]
    known = _CREATE_FIELDS if creating else _UPDATE_FIELDS
    fields = ", ".join(sorted(known))
    errors = [
        InvalidTokenSpec(k, f"unknown field in body; the fields are {fields}")
        for k in sorted(map(str, body)) if k not in known and k not in _CREATE_FIELDS
    ]
    for f in _PARSE_ORDER if creating else TOKEN_FIELDS:
        if f.name not in body:
            if creating and f.required:
                errors.append(InvalidTokenSpec(f.name, f"is required: {f.required_hint}"))
            continue
        if not creating and not f.patchable:
            errors.append(InvalidTokenSpec(f.name, f.fixed_hint))
            continue
        value = body[f.name]
        if f.name == "grants" and isinstance(value, list) and len(value) > 1:
            found = len(errors)
            for i, grant in enumerate(value):
                try:
                    f.parse([grant], now)
                except InvalidTokenSpec as exc:
                    field = exc.field.replace("grants[0]", f"grants[{i}]", 1)
                    errors.append(InvalidTokenSpec(field, exc.reason))
            if len(errors) > found:
                continue
        try:
            f.parse(value, now)
        except InvalidTokenSpec as exc:
            errors.append(exc)
    return errors
