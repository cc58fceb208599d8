"""A token's usage as the Tokens API, the CLI and the Developers page show it.

Rows (``UsageRow``: token, UTC hour, API, outcome code, count) become per-hour entries and
per-day totals: ``allowed`` and ``refused`` by code. ``usage_range`` reads the ``from`` and
``to`` parameters (ISO dates or date-times; default: the last 30 days up to now).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from token_guard.core.records import UsageRow
from token_guard.core.spec import format_datetime

DEFAULT_DAYS = 30
MAX_DAYS = 400


def _instant(field: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{field}: {text!r} is not an ISO 8601 date or date-time; write e.g. "
            "'2026-12-01' or '2026-12-01T00:00:00Z'"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def usage_range(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``[from, to)`` from the parameters; ValueError names the parameter that is wrong."""
    stop = _instant("to", end) if end else now
    begin = _instant("from", start) if start else stop - timedelta(days=DEFAULT_DAYS)
    if begin >= stop:
        raise ValueError("from: must be before to")
    if stop - begin > timedelta(days=MAX_DAYS):
        raise ValueError(f"from: the range is longer than {MAX_DAYS} days; ask for less")
    return begin, stop


def usage_json(token_id: str, rows: Sequence[UsageRow], begin: datetime, end: datetime
               ) -> dict[str, Any]:
    """``{"token_id", "from", "to", "hours": [...], "days": [...]}``, each entry
    ``{"hour"|"day", ..., "allowed": n, "refused": {code: n}}`` (hours per API)."""
    hours: dict[tuple[datetime, str], dict[str, Any]] = {}
    days: dict[str, dict[str, Any]] = {}
    for r in rows:
        hour = hours.setdefault((r.hour, r.api), {
            "hour": format_datetime(r.hour), "api": r.api, "allowed": 0, "refused": {}})
        day = days.setdefault(r.hour.date().isoformat(), {
            "day": r.hour.date().isoformat(), "allowed": 0, "refused": {}})
        for entry in (hour, day):
            if r.code:
                entry["refused"][r.code] = entry["refused"].get(r.code, 0) + r.count
            else:
                entry["allowed"] += r.count
    return {
        "token_id": token_id,
        "from": format_datetime(begin),
        "to": format_datetime(end),
        "hours": [hours[k] for k in sorted(hours)],
        "days": [days[k] for k in sorted(days)],
    }
