"""The ``limits`` field of the token body: validation, its JSON, windows and headers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import token_guard as tg
from tests.tokens import body
from token_guard.core.limits import LimitRule, Usage, parse_limits, ratelimit_headers, window
from token_guard.core.spec import apply_update, parse_token_spec

CONTRACT = {"rate": [{"requests": 600, "per": "minute", "api": "sql"}],
            "quota": {"requests": 1000000, "per": "month"}}


def test_the_contract_body_round_trips() -> None:
    spec = parse_token_spec(body(limits=CONTRACT))
    assert spec.as_json()["limits"] == CONTRACT
    assert spec.limits is not None
    assert [r.name for r in spec.limits.by_api["sql"]] == ["rate-minute-sql", "quota-month-all"]
    assert [r.name for r in spec.limits.by_api["maps"]] == ["quota-month-all"]


def test_no_limits_is_null_and_costs_no_rules() -> None:
    assert parse_token_spec(body()).limits is None
    assert parse_token_spec(body()).as_json()["limits"] is None
    assert parse_limits({}) is None
    assert parse_limits({"rate": []}) is None


def test_a_quota_list_per_api_is_accepted_and_written_as_a_list() -> None:
    quotas = [{"requests": 10, "per": "day", "api": "maps"}, {"requests": 100, "per": "month"}]
    spec = parse_token_spec(body(limits={"quota": quotas}))
    assert spec.as_json()["limits"] == {"quota": quotas}


@pytest.mark.parametrize(("limits", "field", "words"), [
    pytest.param("600/min", "limits", "must be an object", id="not-object"),
    pytest.param({"burst": 1}, "limits.burst", "unknown field", id="unknown-key"),
    pytest.param({"rate": {"requests": 1, "per": "second"}}, "limits.rate", "list",
                 id="rate-not-list"),
    pytest.param({"rate": [{"requests": 1, "per": "week"}]}, "limits.rate[0].per",
                 "second, minute, hour, day", id="bad-period"),
    pytest.param({"rate": [{"requests": 1, "per": "month"}]}, "limits.rate[0].per",
                 "choose from", id="month-is-a-quota"),
    pytest.param({"rate": [{"requests": 0, "per": "second"}]}, "limits.rate[0].requests",
                 "from 1", id="zero"),
    pytest.param({"rate": [{"requests": True, "per": "second"}]},
                 "limits.rate[0].requests", "whole number", id="bool"),
    pytest.param({"rate": [{"requests": 1.5, "per": "second"}]},
                 "limits.rate[0].requests", "whole number", id="float"),
    pytest.param({"rate": [{"per": "second"}]}, "limits.rate[0].requests", "whole number",
                 id="missing-requests"),
    pytest.param({"rate": [{"requests": 5, "per": "second", "api": "ftp"}]},
                 "limits.rate[0].api", "unknown API", id="bad-api"),
    pytest.param({"rate": [{"requests": 5, "per": "second", "x": 1}]},
                 "limits.rate[0].x", "unknown field", id="rule-unknown-key"),
    pytest.param({"rate": [{"requests": 5, "per": "second"}, {"requests": 9, "per": "second"}]},
                 "limits.rate[1]", "repeats", id="duplicate-rule"),
    pytest.param({"quota": {"requests": 5, "per": "hour"}}, "limits.quota.per", "day, month",
                 id="quota-period"),
    pytest.param({"quota": [{"requests": 5, "per": "day"}, "x"]}, "limits.quota[1]",
                 "must be an object", id="quota-list-item"),
    pytest.param({"quota": 5}, "limits.quota", "rule or a list", id="quota-number"),
])
def test_invalid_limits_name_the_field(limits: Any, field: str, words: str) -> None:
    with pytest.raises(tg.InvalidTokenSpec) as info:
        parse_token_spec(body(limits=limits))
    assert info.value.field == field
    assert words in str(info.value)


def test_patch_sets_changes_and_removes_limits() -> None:
    spec = parse_token_spec(body())
    limited = apply_update(spec, {"limits": CONTRACT})
    assert limited.as_json()["limits"] == CONTRACT
    assert apply_update(limited, {"limits": None}).limits is None


def test_a_rule_on_an_api_the_token_cannot_call_is_a_warning() -> None:
    spec = parse_token_spec(body(allowed_apis=["maps"], limits={
        "rate": [{"requests": 5, "per": "second", "api": "sql"}]}))
    assert any("an API the token may not call" in w for w in spec.warnings())


@pytest.mark.parametrize(("per", "at", "start", "end"), [
    pytest.param("second", "2026-03-04T05:06:07.5Z", "2026-03-04T05:06:07Z",
                 "2026-03-04T05:06:08Z", id="second"),
    pytest.param("minute", "2026-03-04T05:06:07Z", "2026-03-04T05:06:00Z",
                 "2026-03-04T05:07:00Z", id="minute"),
    pytest.param("day", "2026-03-04T23:59:59Z", "2026-03-04T00:00:00Z",
                 "2026-03-05T00:00:00Z", id="day-utc"),
    pytest.param("month", "2026-02-14T12:00:00Z", "2026-02-01T00:00:00Z",
                 "2026-03-01T00:00:00Z", id="february"),
    pytest.param("month", "2026-12-31T23:00:00Z", "2026-12-01T00:00:00Z",
                 "2027-01-01T00:00:00Z", id="december"),
])
def test_windows_are_utc_calendar_aligned(per: Any, at: str, start: str, end: str) -> None:
    def ts(text: str) -> float:
        return datetime.fromisoformat(text).astimezone(UTC).timestamp()

    got_start, got_end, length = window(LimitRule(1, per, None, per == "month"), ts(at))
    assert (got_start, got_end) == (ts(start), ts(end))
    assert length == got_end - got_start


def test_ratelimit_headers_follow_the_ietf_draft_form() -> None:
    rule = LimitRule(600, "minute", "sql", False)
    quota = LimitRule(1000, "day", None, True)
    headers = dict(ratelimit_headers(
        (Usage(rule, 10, 1060.0, 60), Usage(quota, 1000, 86400.0, 86400)), 1000.2
    ))
    assert headers[b"ratelimit-policy"] == (
        b'"rate-minute-sql";q=600;w=60, "quota-day-all";q=1000;w=86400'
    )
    assert headers[b"ratelimit"] == b'"rate-minute-sql";r=590;t=60, "quota-day-all";r=0;t=85400'
