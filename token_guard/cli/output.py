"""What commands print: tables for people, JSON with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from token_guard.core.records import AuditEntry, OAuthClient, TokenRecord
from token_guard.core.spec import format_datetime


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON."""
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Rows under headers, columns padded to fit."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    body = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join([line, *body])


def when(value: datetime | None) -> str:
    """A date-time for people, ``-`` for none."""
    return format_datetime(value) or "-"


def token_rows(records: Sequence[TokenRecord], now: datetime) -> str:
    """The ``tokens list`` table."""
    rows = [
        [r.id, prefix(r), r.name or "-", ",".join(r.allowed_apis), str(len(r.grants)),
         r.state(now), when(r.expiration_date), _limits(r)]
        for r in records
    ]
    return table(rows, ["ID", "SECRET", "NAME", "APIS", "GRANTS", "STATE", "EXPIRES", "LIMITS"])


def _limits(record: TokenRecord) -> str:
    limits = record.spec.limits
    return "-" if limits is None else limits.summary()


def prefix(record: TokenRecord) -> str:
    """The current secret's non-secret start, e.g. ``tgk_AbCd1234...``, or ``-``."""
    shown = None if record.secret is None else record.secret.prefix
    return f"{shown}..." if shown else "-"


def token_detail(record: TokenRecord, now: datetime) -> str:
    """One token, a field a line."""
    lines = [
        f"id:          {record.id}",
        f"name:        {record.name or '-'}",
        f"secret:      {prefix(record)}",
        f"state:       {record.state(now)}",
        f"apis:        {', '.join(record.allowed_apis)}",
        f"referers:    {', '.join(record.referers) or '(any website)'}",
        f"expires:     {when(record.expiration_date)}",
        f"limits:      {_limits(record) if record.spec.limits else '(none)'}",
        f"created:     {when(record.created_at)}",
        f"last used:   {when(record.last_used_at)}",
        f"revoked:     {when(record.revoked_at)}",
        f"disabled:    {when(record.disabled_at)}",
        "grants:" if record.grants else "grants:      (none)",
    ]
    lines += [f"  {g.connection_name}: {g.source}" for g in record.grants]
    return "\n".join(lines)


def client_json(client: OAuthClient) -> dict[str, Any]:
    """An OAuth client as ``--json`` prints it (never its secret)."""
    return {
        "client_id": client.client_id, "name": client.name, "scopes": list(client.scopes),
        "created_at": format_datetime(client.created_at),
        "revoked_at": format_datetime(client.revoked_at),
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as ``--json`` prints it."""
    return {
        "id": entry.id, "at": format_datetime(entry.at), "actor": entry.actor,
        "action": entry.action, "token_id": entry.token_id, "detail": entry.detail,
    }


def usage_rows(report: dict[str, Any]) -> str:
    """The ``tokens usage`` table: one row per day and API (hours summed)."""
    days: dict[tuple[str, str], list[Any]] = {}
    for hour in report["hours"]:
        row = days.setdefault((hour["hour"][:10], hour["api"]), [0, {}])
        row[0] += hour["allowed"]
        for code, n in hour["refused"].items():
            row[1][code] = row[1].get(code, 0) + n
    rows = [
        [day, api or "-", str(allowed),
         ", ".join(f"{c} {n}" for c, n in sorted(refused.items())) or "-"]
        for (day, api), (allowed, refused) in sorted(days.items())
    ]
    if not rows:
        return f"no requests recorded from {report['from']} to {report['to']}"
    return table(rows, ["DAY", "API", "ALLOWED", "REFUSED"])
