"""``token-guard tokens create|list|show|update|revoke|rotate|end-grace|disable|enable|find``.

The flags of ``create`` and ``update`` follow from ``token_guard.core.spec.TOKEN_FIELDS``: every
creatable field has a flag (``update`` refuses the ones that are not patchable). Most have a
shorter form for people (``--api maps,sql``, ``--grant CONN:SOURCE``, ``--expires 30d``);
a field without one takes its JSON value, e.g. ``--some-field '{...}'``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from token_guard.cli.errors import EXIT_OK, Refused, UsageError
from token_guard.cli.output import print_json, token_detail, token_rows, usage_rows
from token_guard.cli.parser import Parser
from token_guard.cli.settings import add_config_flag, read_config
from token_guard.cli.store import actor, run_with_store
from token_guard.core.records import TokenRecord
from token_guard.core.secret import hash_secret, is_well_formed
from token_guard.core.spec import (
    TOKEN_FIELDS,
    TokenField,
    format_datetime,
    parse_grants,
    parse_token_spec,
)
from token_guard.core.usage_report import usage_json, usage_range
from token_guard.management.leaks import found_json
from token_guard.stores.base import TokenStore, check_grace

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_STORE_PAGE = 500  # the largest page list_tokens serves


def parse_expires(text: str, now: datetime | None = None) -> str:
    """``30d`` / ``12h`` / ``2w`` / ``90m`` / ``1d12h`` from now, or an ISO 8601 date-time."""
    at = now or datetime.now(UTC)
    compact = text.strip().lower().replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(compact))
        if seconds <= 0:
            raise UsageError(f"--expires {text!r} is not in the future; e.g. --expires 30d")
        return format_datetime((at + timedelta(seconds=seconds)).replace(microsecond=0)) or ""
    return text.strip()


def parse_grace(text: str) -> int:
    """``24h`` / ``90m`` / ``1d12h`` / ``3600`` (seconds) / ``0`` as whole seconds."""
    compact = text.strip().lower().replace(" ", "")
    if compact.isdigit():
        seconds = int(compact)
    elif compact and _DURATION.sub("", compact) == "":
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(compact))
    else:
        raise UsageError(f"--grace {text!r} is not a duration; e.g. --grace 24h, 90m or 0")
    try:
        return check_grace(seconds)
    except ValueError as exc:
        raise UsageError(f"--grace {text!r}: {exc}") from None


def _grant(text: str) -> dict[str, str]:
    conn, sep, source = text.partition(":")
    if not sep or not conn.strip() or not source.strip():
        raise UsageError(
            f"--grant {text!r} needs CONNECTION:SOURCE, e.g. --grant carto_dw:proj.dataset.*"
        )
    return {"connection_name": conn.strip(), "source": source.strip()}


def _read_body_file(path: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"--body {path}: {exc.strerror}") from None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--body {path} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--body {path} must hold a JSON object with the token's fields")
    return body



@dataclass(frozen=True, slots=True)
class _Shorthand:
    """A field's flag for people: its name, metavar, help and how its values make the JSON."""

    flag: str
    metavar: str | None
    help: str
    to_json: Callable[[list[str]], Any]


def _apis(values: list[str]) -> list[str]:
    return [a for item in values for a in item.split(",") if a]


# The flags people know; a field missing here still gets a flag (see _generic).
_SHORTHANDS: dict[str, _Shorthand] = {
    "name": _Shorthand("--name", None, "a name for people", lambda vs: vs[-1]),
    "allowed_apis": _Shorthand(
        "--api", "API", "maps, sql, lds or imports (repeat or comma-separate)", _apis
    ),
    "grants": _Shorthand(
        "--grant", "CONN:SOURCE", "e.g. carto_dw:proj.dataset.* (repeat; replaces all grants)",
        lambda vs: [_grant(v) for v in vs],
    ),
    "referers": _Shorthand(
        "--referer", "ORIGIN", "e.g. 'https://*.example.com' (repeat)", list
    ),
    "expiration_date": _Shorthand(
        "--expires", None, "30d, 12h, 2w or an ISO date-time (creation only)",
        lambda vs: parse_expires(vs[-1]),
    ),
}


def _generic(field: TokenField) -> _Shorthand:
    flag = "--" + field.name.replace("_", "-")
    if field.schema.get("type") == "string":
        return _Shorthand(flag, None, field.description, lambda vs: vs[-1])

    def from_json(values: list[str]) -> Any:
        try:
            return json.loads(values[-1])
        except ValueError as exc:
            example = json.dumps(field.example)
            raise UsageError(f"{flag} needs JSON, e.g. {example}: {exc}") from None

    return _Shorthand(flag, "JSON", f"{field.description} (JSON)", from_json)


@dataclass(frozen=True, slots=True)
class _Flag:
    field: TokenField
    flag: str
    metavar: str | None
    help: str
    to_json: Callable[[list[str]], Any]

    @property
    def dest(self) -> str:
        return "field_" + self.field.name


_FLAGS: tuple[_Flag, ...] = tuple(
    _Flag(f, s.flag, s.metavar or s.flag[2:].upper().replace("-", "_"), s.help, s.to_json)
    for f in TOKEN_FIELDS if f.creatable
    for s in [_SHORTHANDS.get(f.name) or _generic(f)]
)


def _token_flags(p: argparse.ArgumentParser) -> None:
    for flag in _FLAGS:
        p.add_argument(flag.flag, dest=flag.dest, action="append", metavar=flag.metavar,
                       help=flag.help)
    p.add_argument("--body", metavar="FILE", help="Tokens API JSON body ('-' for stdin)")


def _body_from_flags(args: argparse.Namespace, *, creating: bool) -> dict[str, Any]:
    body = _read_body_file(args.body) if args.body else {}
    for flag in _FLAGS:
        values = getattr(args, flag.dest)
        if values and (creating or flag.field.patchable):
            body[flag.field.name] = flag.to_json(values)
    if getattr(args, "no_referers", False):
        body["referers"] = []
    return body


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """``tokens create``: with ``--config``, a grant the app could never serve is refused."""
    body = _body_from_flags(args, creating=True)
    settings = read_config(args)
    if settings is not None:
        settings.policy().check_grants(parse_token_spec(body).grants)

    async def work(store: TokenStore) -> int:
        issued = await store.create_token(body, actor=actor())
        now = datetime.now(UTC)
        warnings = issued.record.spec.warnings()
        if args.json:
            print_json({**issued.record.as_json(now), "token": issued.token,
                         "warnings": warnings})
        else:
            print(token_detail(issued.record, now))
            print(f"\ntoken:       {issued.token}")
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
        print(
            "warning: this is the only time the token secret is shown; store it now "
            "(a lost secret cannot be recovered: create a new token and revoke this one)",
            file=sys.stderr,
        )
        return EXIT_OK

    return run_with_store(args, work)


async def _newest_first(store: TokenStore) -> list[TokenRecord]:
    """Every token, newest first (the store pages by id, which says nothing of age)."""
    records: list[TokenRecord] = []
    after: str | None = None
    while True:
        page = list(await store.list_tokens(limit=_STORE_PAGE, after=after))
        records += page
        if len(page) < _STORE_PAGE:
            break
        after = page[-1].id
    records.sort(key=lambda r: r.id)
    records.sort(key=lambda r: r.created_at, reverse=True)  # stable: ties stay in id order
    return records


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """``tokens list``: newest first; ``--after ID`` continues after that row."""

    async def work(store: TokenStore) -> int:
        ordered = await _newest_first(store)
        start = 0
        if args.after is not None:
            ids = [r.id for r in ordered]
            if args.after not in ids:
                raise Refused(f"--after {args.after!r} is no token's id; 'token-guard tokens "
                              "list' shows the ids")
            start = ids.index(args.after) + 1
        records = ordered[start:] if args.all else ordered[start : start + args.limit]
        more = start + len(records) < len(ordered)
        nxt = records[-1].id if more and records else None
        now = datetime.now(UTC)
        if args.json:
            print_json({"tokens": [r.as_json(now) for r in records], "next": nxt})
        else:
            print(token_rows(records, now))
            if nxt:
                print(f"(more: --after {nxt}, or --all)", file=sys.stderr)
        return EXIT_OK

    return run_with_store(args, work)


async def _require_token(store: TokenStore, token_id: str) -> TokenRecord:
    record = await store.get_token(token_id)
    if record is None:
        raise Refused(f"no token has id {token_id!r}; 'token-guard tokens list' shows the ids")
    return record


def _show_record(args: argparse.Namespace, record: TokenRecord) -> None:
    now = datetime.now(UTC)
    if args.json:
        print_json(record.as_json(now))
    else:
        print(token_detail(record, now))


def cmd_tokens_show(args: argparse.Namespace) -> int:
    """``tokens show ID``."""

    async def work(store: TokenStore) -> int:
        _show_record(args, await _require_token(store, args.id))
        return EXIT_OK

    return run_with_store(args, work)


def cmd_tokens_update(args: argparse.Namespace) -> int:
    """``tokens update ID``: only the given fields change."""
    for flag in _FLAGS:
        if not flag.field.patchable and getattr(args, flag.dest):
            raise UsageError(
                f"{flag.flag} is set only at creation; create a new token and revoke this one"
            )
    body = _body_from_flags(args, creating=False)
    if not body:
        given = [f.flag for f in _FLAGS if f.field.patchable]
        raise UsageError(f"nothing to change: give {', '.join(given)} or --body")
    settings = read_config(args)
    if settings is not None and "grants" in body:
        settings.policy().check_grants(parse_grants(body["grants"]))

    async def work(store: TokenStore) -> int:
        await _require_token(store, args.id)
        _show_record(args, await store.update_token(args.id, body, actor=actor()))
        return EXIT_OK

    return run_with_store(args, work)


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    """``tokens revoke ID``."""

    async def work(store: TokenStore) -> int:
        await _require_token(store, args.id)
        _show_record(args, await store.revoke_token(args.id, actor=actor()))
        return EXIT_OK

    return run_with_store(args, work)


def cmd_tokens_usage(args: argparse.Namespace) -> int:
    """``tokens usage ID [--from] [--to]``: requests per day and API, refusals by code."""
    try:
        begin, end = usage_range(args.start, args.end, datetime.now(UTC))
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None

    async def work(store: TokenStore) -> int:
        await _require_token(store, args.id)
        report = usage_json(args.id, await store.get_usage(args.id, begin, end), begin, end)
        if args.json:
            print_json(report)
        else:
            print(usage_rows(report))
        return EXIT_OK

    return run_with_store(args, work)


def cmd_tokens_rotate(args: argparse.Namespace) -> int:
    """``tokens rotate ID [--grace 24h]``: a new secret; the old one works the grace more."""
    grace = parse_grace(args.grace)

    async def work(store: TokenStore) -> int:
        await _require_token(store, args.id)
        rotated = await store.rotate_token(args.id, grace_seconds=grace, actor=actor())
        now = datetime.now(UTC)
        until = format_datetime((now + timedelta(seconds=grace)).replace(microsecond=0))
        if args.json:
            print_json({**rotated.record.as_json(now), "token": rotated.token,
                        "grace_seconds": grace, "old_secret_expires_at": until})
        else:
            print(token_detail(rotated.record, now))
            print(f"\ntoken:       {rotated.token}")
            print(f"old secret:  works until {until}" if grace else "old secret:  refused now")
        print(
            "warning: this is the only time the new secret is shown; store it now, move every "
            "client to it, then 'token-guard tokens end-grace ID' if they all moved early",
            file=sys.stderr,
        )
        return EXIT_OK

    return run_with_store(args, work)


def cmd_tokens_find(args: argparse.Namespace) -> int:
    """``tokens find``: which token is the secret on stdin? (never an argument: shell history)"""
    secret = sys.stdin.readline().strip()
    if not is_well_formed(secret):
        raise UsageError(
            "stdin holds no token_guard secret (tgk_, 38 characters, checksum); e.g. "
            "'pbpaste | token-guard tokens find'"
        )

    async def work(store: TokenStore) -> int:
        record = await store.get_by_secret_hash(hash_secret(secret))
        if record is None:
            raise Refused("no token has this secret (another installation's, or never issued)")
        now = datetime.now(UTC)
        if args.json:
            print_json(found_json(record, now))
            return EXIT_OK
        print(token_detail(record, now))
        info = record.secret
        if info is None or info.expires_at is None:
            print("this secret: the token's current secret")
        else:
            ends = format_datetime(info.expires_at)
            how = f"works until {ends}" if info.expires_at > now else f"refused since {ends}"
            print(f"this secret: replaced by a rotation; {how}")
        return EXIT_OK

    return run_with_store(args, work)


def _lifecycle(change: str) -> Callable[[argparse.Namespace], int]:
    """``tokens end-grace|disable|enable ID``: one store call, then the token."""

    def command(args: argparse.Namespace) -> int:
        async def work(store: TokenStore) -> int:
            await _require_token(store, args.id)
            calls = {"end-grace": store.end_rotation_grace, "disable": store.disable_token,
                     "enable": store.enable_token}
            _show_record(args, await calls[change](args.id, actor=actor()))
            return EXIT_OK

        return run_with_store(args, work)

    command.__doc__ = f"``tokens {change} ID``."
    return command


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``tokens`` and its actions to ``sub``."""
    tokens = sub.add_parser("tokens", parents=[common], help="API access tokens")
    tsub = tokens.add_subparsers(dest="action", required=True, parser_class=Parser)
    p = tsub.add_parser("create", parents=[common], help="create a token (secret shown once)")
    _token_flags(p)
    add_config_flag(p)
    p.set_defaults(func=cmd_tokens_create)
    p = tsub.add_parser("list", parents=[common], help="list tokens, newest first (never secrets)")
    p.add_argument("--limit", type=int, default=100, choices=range(1, 501), metavar="1..500")
    p.add_argument("--after", help="the id to continue after")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.set_defaults(func=cmd_tokens_list)
    p = tsub.add_parser("show", parents=[common], help="show one token")
    p.add_argument("id")
    p.set_defaults(func=cmd_tokens_show)
    p = tsub.add_parser("update", parents=[common], help="change name, APIs, grants, referers")
    p.add_argument("id")
    _token_flags(p)
    p.add_argument("--no-referers", action="store_true", help="allow any website")
    add_config_flag(p)
    p.set_defaults(func=cmd_tokens_update)
    p = tsub.add_parser("usage", parents=[common],
                        help="requests per day and API, refusals by code")
    p.add_argument("id")
    p.add_argument("--from", dest="start", metavar="DATE", help="ISO date; default 30 days ago")
    p.add_argument("--to", dest="end", metavar="DATE", help="ISO date (exclusive); default now")
    p.set_defaults(func=cmd_tokens_usage)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a token")
    p.add_argument("id")
    p.set_defaults(func=cmd_tokens_revoke)
    p = tsub.add_parser("rotate", parents=[common],
                        help="a new secret for the token (shown once); the old one works --grace")
    p.add_argument("id")
    p.add_argument("--grace", default="24h",
                   help="how long the old secret keeps working: 24h (default), 90m, 0 = now")
    p.set_defaults(func=cmd_tokens_rotate)
    p = tsub.add_parser("find", parents=[common],
                        help="which token is the secret given on stdin? (by its hash)")
    p.set_defaults(func=cmd_tokens_find)
    for change, text in (
        ("end-grace", "end the grace period of the secrets a rotation replaced, now"),
        ("disable", "refuse the token (token_disabled) until it is enabled"),
        ("enable", "accept a disabled token again (a revoked one stays revoked)"),
    ):
        p = tsub.add_parser(change, parents=[common], help=text)
        p.add_argument("id")
        p.set_defaults(func=_lifecycle(change))
