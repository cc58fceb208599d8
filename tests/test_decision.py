"""The one registry of error codes and the one error body."""

from __future__ import annotations

from token_guard.core import decision
from token_guard.core.decision import ERROR_CODES, Denial, error_body


def test_every_code_constant_is_registered() -> None:
    constants = {
        value for name, value in vars(decision).items()
        if name.isupper() and isinstance(value, str)
    }
    assert constants == set(ERROR_CODES)


def test_registry_entries_are_keyed_by_their_code() -> None:
    assert all(entry.code == code for code, entry in ERROR_CODES.items())
    assert all(entry.guard or entry.management for entry in ERROR_CODES.values())


def test_denial_body_is_the_shared_error_body() -> None:
    denial = Denial(403, decision.API_NOT_ALLOWED, "no maps", "ask for maps")
    assert denial.as_json() == error_body(decision.API_NOT_ALLOWED, "no maps", "ask for maps")
    assert list(denial.as_json()) == ["error", "hint", "code"]


def test_error_body_keeps_extra_members_after_the_three() -> None:
    body = error_body(decision.INVALID_TOKEN_SPEC, "name: bad", "fix name", field="name")
    assert body == {"error": "name: bad", "hint": "fix name", "code": "invalid_token_spec",
                    "field": "name"}
