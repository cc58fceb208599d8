"""What a test does when a real service it needs (PostgreSQL, Redis, curl, Chromium) is
missing: skip when run by hand, fail under CI (``CI=true``), so a missing service never passes."""

from __future__ import annotations

import os

import pytest

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(reason: str) -> None:
    """Skip the test when run by hand; fail it under CI, so a missing service never passes."""
    if UNDER_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(reason)
