"""A token's limits: request rates and calendar quotas, validated, and their windows.

The ``limits`` field of the token body (``core.spec.TOKEN_FIELDS`` declares it; this module
holds its model and validator, and the pure arithmetic the limiters share)::

    "limits": {"rate": [{"requests": 600, "per": "minute", "api": "sql"}],
               "quota": {"requests": 1000000, "per": "month"}}

Choices (ours):
- ``rate`` is a list of rules (``per``: second, minute, hour, day). ``quota`` is one rule or
  a list of them (``per``: day, month; calendar periods in UTC). ``api`` is optional on
  every rule: without it the rule counts the token's requests to every API together.
- A rate is a fixed window aligned to the UTC clock (a minute starts at :00): cheap and the
  same in every limiter, and what the RateLimit headers describe (quota, remaining, reset).
  Its known cost: a client may spend a window's allowance at its end and the next one's at
  the start, up to twice the rate across a boundary.
- A request is charged against every rule that applies to it, or against none: when one
  rule refuses, the others are not spent. Only allowed requests are charged.
- Two rules with the same period and API are refused (one of them would never matter).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from token_guard.core.errors import InvalidTokenSpec
from token_guard.core.facts import API_NAMES

Period = Literal["second", "minute", "hour", "day", "month"]
RATE_PERIODS: tuple[Period, ...] = ("second", "minute", "hour", "day")
QUOTA_PERIODS: tuple[Period, ...] = ("day", "month")
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_REQUESTS = 10**12
MAX_RULES = 16
_RULE_FIELDS = frozenset(("requests", "per", "api"))
_LIMIT_FIELDS = frozenset(("rate", "quota"))

RULE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["requests", "per"],
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "integer", "minimum": 1, "maximum": MAX_REQUESTS},
        "per": {"type": "string"},
        "api": {"type": "string", "enum": sorted(API_NAMES)},
    },
}
#: The JSON Schema of the ``limits`` field.
LIMITS_SCHEMA: Mapping[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "rate": {
            "type": "array", "maxItems": MAX_RULES,
            "items": {**RULE_SCHEMA, "properties": {
                **RULE_SCHEMA["properties"], "per": {"type": "string", "enum": list(RATE_PERIODS)},
            }},
        },
        "quota": {
            "oneOf": [
                {**RULE_SCHEMA, "properties": {
                    **RULE_SCHEMA["properties"],
                    "per": {"type": "string", "enum": list(QUOTA_PERIODS)},
                }},
                {"type": "array", "maxItems": MAX_RULES, "items": {**RULE_SCHEMA, "properties": {
                    **RULE_SCHEMA["properties"],
                    "per": {"type": "string", "enum": list(QUOTA_PERIODS)},
                }}},
            ],
        },
    },
}


@dataclass(frozen=True, slots=True)
class LimitRule:
    """``requests`` per ``per`` (a rate, or a calendar quota when ``quota``), on ``api`` or all."""

    requests: int
    per: Period
    api: str | None
    quota: bool

    @property
    def name(self) -> str:
        """The rule's name in RateLimit headers and counter keys, e.g. ``rate-minute-sql``."""
        return f"{'quota' if self.quota else 'rate'}-{self.per}-{self.api or 'all'}"

    def as_json(self) -> dict[str, Any]:
        """The rule as the Tokens API writes it."""
        out: dict[str, Any] = {"requests": self.requests, "per": self.per}
        if self.api is not None:
            out["api"] = self.api
        return out

    def describe(self) -> str:
        """The rule for people, e.g. ``600 requests per minute to the sql API``."""
        period = f"{'calendar ' if self.quota else ''}{self.per}"
        where = f" to the {self.api} API" if self.api else ""
        return f"{self.requests} requests per {period}{where}"


@dataclass(frozen=True, slots=True)
class Limits:
    """A token's rules; ``by_api`` lists, per API, the rules a request to it is charged."""

    rate: tuple[LimitRule, ...]
    quota: tuple[LimitRule, ...]
    by_api: Mapping[str, tuple[LimitRule, ...]]

    def summary(self) -> str:
        """The rules in brief for tables, e.g. ``600/minute sql, 1000000/month``."""
        return ", ".join(
            f"{r.requests}/{r.per}{' ' + r.api if r.api else ''}" for r in (*self.rate, *self.quota)
        )

    def as_json(self) -> dict[str, Any]:
        """``{"rate": [...], "quota": {...} or [...]}``: one quota is written as an object."""
        out: dict[str, Any] = {}
        if self.rate:
            out["rate"] = [r.as_json() for r in self.rate]
        if len(self.quota) == 1:
            out["quota"] = self.quota[0].as_json()
        elif self.quota:
            out["quota"] = [r.as_json() for r in self.quota]
        return out


def limits_json(value: Limits | None) -> dict[str, Any] | None:
    """The ``limits`` field as the Tokens API writes it (None: no limits)."""
    return None if value is None else value.as_json()


def parse_limits(value: Any) -> Limits | None:
    """Validate the ``limits`` field; None or ``{}`` means no limits."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidTokenSpec(
            "limits", "must be an object, e.g. {'rate': [{'requests': 600, 'per': 'minute'}]}"
        )
    unknown = sorted(str(k) for k in value if k not in _LIMIT_FIELDS)
    if unknown:
        raise InvalidTokenSpec(f"limits.{unknown[0]}", "unknown field; the fields are quota, rate")
    rate_value = value.get("rate", [])
    if not isinstance(rate_value, list):
        raise InvalidTokenSpec(
            "limits.rate", "must be a list of rules, e.g. [{'requests': 600, 'per': 'minute'}]"
        )
    rate = tuple(
        _parse_rule(item, f"limits.rate[{i}]", RATE_PERIODS, quota=False)
        for i, item in enumerate(rate_value)
    )
    quota_value = value.get("quota", [])
    quota: tuple[LimitRule, ...]
    if isinstance(quota_value, Mapping):
        quota = (_parse_rule(quota_value, "limits.quota", QUOTA_PERIODS, quota=True),)
    elif isinstance(quota_value, list):
        quota = tuple(
            _parse_rule(item, f"limits.quota[{i}]", QUOTA_PERIODS, quota=True)
            for i, item in enumerate(quota_value)
        )
    else:
        raise InvalidTokenSpec(
            "limits.quota", "must be a rule or a list of rules, e.g. "
            "{'requests': 1000000, 'per': 'month'}"
        )
    for field, rules in (("limits.rate", rate), ("limits.quota", quota)):
        if len(rules) > MAX_RULES:
            raise InvalidTokenSpec(field, f"has {len(rules)} rules; the limit is {MAX_RULES}")
        seen: set[tuple[str, str | None]] = set()
        for i, rule in enumerate(rules):
            if (rule.per, rule.api) in seen:
                where = f"{field}[{i}]" if field == "limits.rate" or len(rules) > 1 else field
                raise InvalidTokenSpec(
                    where, f"repeats per '{rule.per}'{_on(rule.api)}; keep one rule for it"
                )
            seen.add((rule.per, rule.api))
    if not rate and not quota:
        return None
    rules = (*rate, *quota)
    by_api = {
        api: tuple(r for r in rules if r.api is None or r.api == api) for api in sorted(API_NAMES)
    }
    return Limits(rate, quota, by_api)


def _on(api: str | None) -> str:
    return f" on api '{api}'" if api else " on every API"


def _parse_rule(
    item: Any, field: str, periods: tuple[Period, ...], *, quota: bool
) -> LimitRule:
    example = "{'requests': 600, 'per': 'minute'}" if not quota else (
        "{'requests': 1000000, 'per': 'month'}"
    )
    if not isinstance(item, Mapping):
        raise InvalidTokenSpec(field, f"must be an object such as {example}")
    unknown = sorted(str(k) for k in item if k not in _RULE_FIELDS)
    if unknown:
        raise InvalidTokenSpec(f"{field}.{unknown[0]}", "unknown field; the fields are api, "
                               "per, requests")
    requests = item.get("requests")
    if isinstance(requests, bool) or not isinstance(requests, int):
        raise InvalidTokenSpec(f"{field}.requests", f"must be a whole number, e.g. {example}")
    if not 1 <= requests <= MAX_REQUESTS:
        raise InvalidTokenSpec(
            f"{field}.requests", f"is {requests}; give a number from 1 to {MAX_REQUESTS}"
        )
    per = item.get("per")
    if per not in periods:
        raise InvalidTokenSpec(
            f"{field}.per", f"{per!r} is not a period here; choose from {', '.join(periods)}"
        )
    api = item.get("api")
    if api is not None and (not isinstance(api, str) or api not in API_NAMES):
        raise InvalidTokenSpec(
            f"{field}.api", f"unknown API {api!r}; choose from {', '.join(sorted(API_NAMES))} "
            "or leave it out to count every API"
        )
    return LimitRule(requests, per, api, quota)


def window(rule: LimitRule, now: float) -> tuple[int, float, int]:
    """The rule's current window at ``now`` (epoch seconds): (window id, its end, its length).

    Rates are windows of their period aligned to the UTC clock; quotas calendar days and
    months in UTC. The id is the window's start (epoch seconds).
    """
    per = rule.per
    if per != "month":
        length = _SECONDS[per]
        start = int(now // length) * length
        return start, float(start + length), length
    day = datetime.fromtimestamp(now, UTC)
    start_dt = datetime(day.year, day.month, 1, tzinfo=UTC)
    days = calendar.monthrange(day.year, day.month)[1]
    length = days * 86400
    start = int(start_dt.timestamp())
    return start, float(start + length), length


def _reset_text(end: float) -> str:
    return datetime.fromtimestamp(end, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Usage:
    """One rule's state after a decision: its window's count and when the window ends."""

    rule: LimitRule
    count: int
    end: float
    length: int


def ratelimit_headers(usages: tuple[Usage, ...], now: float) -> list[tuple[bytes, bytes]]:
    """The IETF ``RateLimit-Policy`` and ``RateLimit`` headers (draft-ietf-httpapi-ratelimit-
    headers-09: structured-field lists, one item per rule: ``"name";q=..;w=..`` and
    ``"name";r=..;t=..``)."""
    policies = []
    states = []
    for u in usages:
        name = u.rule.name
        policies.append(f'"{name}";q={u.rule.requests};w={u.length}')
        remaining = max(0, u.rule.requests - u.count)
        states.append(f'"{name}";r={remaining};t={max(0, int(u.end - now + 0.999))}')
    return [
        (b"ratelimit-policy", ", ".join(policies).encode("ascii")),
        (b"ratelimit", ", ".join(states).encode("ascii")),
    ]


def exceeded_message(usage: Usage, now: float) -> tuple[str, str, int]:
    """(message, hint, Retry-After seconds) for a request refused by ``usage.rule``."""
    rule = usage.rule
    wait = max(1, int(usage.end - now + 0.999))
    reset = _reset_text(usage.end)
    if rule.quota:
        message = f"This token's quota of {rule.describe()} is used up."
        hint = (f"The quota resets at {reset} (in {wait} s); ask the token's owner for a "
                "larger quota if this is normal traffic.")
    else:
        message = f"This token is over its rate limit of {rule.describe()}."
        hint = f"Retry after {wait} s (the window resets at {reset}); send requests more slowly."
    return message, hint, wait
