"""The token model: the Tokens API body, validated and normalised, errors naming the field."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.tokens import BODY as VALID
from token_guard.core.errors import InvalidTokenSpec
from token_guard.core.spec import apply_update, classify_source, parse_token_spec, split_name


def with_(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def grant(source: str, connection: str = "carto_dw") -> list[dict[str, str]]:
    return [{"connection_name": connection, "source": source}]


def test_valid_body_is_normalised() -> None:
    spec = parse_token_spec(with_(referers=["HTTPS://*.Example.com:443/"]))
    assert spec.name == "storefront map"
    assert [g.kind for g in spec.grants] == ["table", "wildcard", "query"]
    assert spec.referers == ("https://*.example.com",)
    assert spec.allowed_apis == ("maps", "sql")
    assert spec.expiration_date == datetime(2099, 1, 1, tzinfo=UTC)
    assert spec.as_json()["expiration_date"] == "2099-01-01T00:00:00Z"


def test_round_trip_through_json_is_stable() -> None:
    spec = parse_token_spec(VALID)
    assert parse_token_spec(spec.as_json()) == spec


def test_optional_fields_default() -> None:
    spec = parse_token_spec({"allowed_apis": ["lds"]})
    assert (spec.name, spec.grants, spec.referers, spec.expiration_date) == ("", (), (), None)


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        pytest.param(with_(allowed_apis=["maps", "tiles"]), "allowed_apis", "unknown API 'tiles'",
                     id="unknown-api"),
        pytest.param(with_(allowed_apis=["imports", "sql"]), "allowed_apis",
                     "cannot be combined", id="imports-combined"),
        pytest.param(with_(allowed_apis=[]), "allowed_apis", "non-empty", id="no-apis"),
        pytest.param({"grants": []}, "allowed_apis", "is required", id="apis-missing"),
        pytest.param(with_(grants=grant("proj.*")), "grants[0].source",
                     "at least two segments before '*'", id="wildcard-one-segment"),
        pytest.param(with_(grants=grant("proj.da*ta.t")), "grants[0].source",
                     "'*' inside a segment", id="star-inside-segment"),
        pytest.param(with_(grants=grant("proj..t")), "grants[0].source", "empty segment",
                     id="empty-segment"),
        pytest.param(with_(grants=grant("p.d.t", connection=" ")), "grants[0].connection_name",
                     "is empty", id="empty-connection"),
        pytest.param(with_(grants=grant("p.d.t", connection="a/b")),
                     "grants[0].connection_name", "is not a connection name",
                     id="connection-with-slash"),
        pytest.param(with_(grants=[{"connection_name": "c", "source": ""}]), "grants[0].source",
                     "is empty", id="empty-source"),
        pytest.param(with_(grants=[{"connection_name": "c", "source": "p.d.t", "x": 1}]), "x",
                     "unknown field", id="unknown-grant-field"),
        pytest.param(with_(referers=["example.com"]), "referers[0]", "scheme",
                     id="referer-without-scheme"),
        pytest.param(with_(referers=["https://good.com@evil.com"]), "referers[0]", "userinfo",
                     id="referer-userinfo"),
        pytest.param(with_(expiration_date="2001-01-01T00:00:00Z"), "expiration_date",
                     "in the past", id="expired-date"),
        pytest.param(with_(expiration_date="2099-01-01T00:00:00"), "expiration_date",
                     "no timezone", id="naive-date"),
        pytest.param(with_(expiration_date="next year"), "expiration_date", "ISO 8601",
                     id="unparseable-date"),
        pytest.param(with_(scopes=["all"]), "scopes", "unknown field", id="unknown-field"),
        pytest.param(with_(name=7), "name", "must be a string", id="name-not-string"),
        pytest.param(with_(grants="p.d.t"), "grants", "must be a list", id="grants-not-list"),
    ],
)
def test_invalid_bodies_name_the_field(body: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(InvalidTokenSpec) as info:
        parse_token_spec(body)
    assert info.value.field == field
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_star_grant_is_allowed_with_a_warning() -> None:
    spec = parse_token_spec(with_(grants=grant("*"), referers=[]))
    warnings = spec.warnings()
    assert any("'*'" in w for w in warnings)
    assert any("referers is empty" in w for w in warnings)


def test_update_changes_fields_but_never_the_expiration() -> None:
    spec = parse_token_spec(VALID)
    renamed = apply_update(spec, {"name": "other", "allowed_apis": ["lds"]})
    assert (renamed.name, renamed.allowed_apis, renamed.grants) == ("other", ("lds",), spec.grants)
    with pytest.raises(InvalidTokenSpec) as info:
        apply_update(spec, {"expiration_date": "2100-01-01T00:00:00Z"})
    assert info.value.field == "expiration_date"


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        pytest.param("*", "all", id="all"),
        pytest.param("p.d.*", "wildcard", id="wildcard"),
        pytest.param("p.d.t", "table", id="table"),
        pytest.param("`p.d.t`", "table", id="backtick-table"),
        pytest.param("select 1", "query", id="select"),
        pytest.param("WITH x AS (SELECT 1) SELECT * FROM x", "query", id="with"),
        pytest.param("(SELECT 1)", "query", id="parenthesised"),
    ],
)
def test_classify_source(source: str, kind: str) -> None:
    assert classify_source(source) == kind


def test_split_name_keeps_quoted_dots_per_bigquery_paths() -> None:
    assert split_name("`proj.ds.t`") == ["proj", "ds", "t"]
    assert split_name('"my.schema".t') == ["my.schema", "t"]
    with pytest.raises(ValueError, match="unclosed"):
        split_name("`proj.ds")


@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8),
                       max_size=5))
def test_arbitrary_bodies_raise_only_invalid_token_spec(body: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidTokenSpec):
        parse_token_spec(body)


def test_expiration_compared_to_now() -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert parse_token_spec(with_(expiration_date=soon)).expiration_date is not None


def test_token_fields_declare_every_token_spec_attribute() -> None:
    from dataclasses import fields

    from token_guard.core.spec import TOKEN_FIELDS, TokenSpec

    assert [f.name for f in TOKEN_FIELDS] == [f.name for f in fields(TokenSpec)]


def test_openapi_token_bodies_follow_the_field_table() -> None:
    from token_guard.core.spec import TOKEN_FIELDS
    from token_guard.management.openapi import openapi_schema

    schemas = openapi_schema()["components"]["schemas"]
    assert list(schemas["TokenCreate"]["properties"]) == [
        f.name for f in TOKEN_FIELDS if f.creatable
    ]
    assert list(schemas["TokenUpdate"]["properties"]) == [
        f.name for f in TOKEN_FIELDS if f.patchable
    ]
    assert schemas["TokenCreate"]["required"] == [f.name for f in TOKEN_FIELDS if f.required]
