"""``token-guard check METHOD URL``: what the guard would decide, and why.

The token is read from ``$TOKEN_GUARD_TOKEN`` or stdin (a prompt on a terminal), never from
the command line, where other users (``ps``) and shell history would see it. With
``--config`` (or ``$TOKEN_GUARD_CONFIG``) the guard is built from the app's own
configuration, so it decides exactly as the app does.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from token_guard.cli.errors import EXIT_OK, EXIT_REFUSED, UsageError
from token_guard.cli.output import print_json
from token_guard.cli.parser import Parser
from token_guard.cli.settings import add_config_flag, read_config
from token_guard.cli.store import run_with_store
from token_guard.core.records import TokenRecord
from token_guard.stores.base import TokenStore


def _connections(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, dialect = item.partition("=")
        if not sep or not name or not dialect:
            raise UsageError(f"--connection {item!r} needs NAME=DIALECT, e.g. carto_dw=bigquery")
        out[name] = dialect
    return out


TOKEN_ENV = "TOKEN_GUARD_TOKEN"
"""The environment variable ``check`` reads the API access token from (else stdin)."""


def _request_args(args: argparse.Namespace) -> tuple[str, str]:
    given: list[str] = args.request
    if len(given) == 3:
        raise UsageError(
            "check no longer takes the token on the command line (other users and shell "
            f"history can read it there): pipe it in, e.g. 'token-guard check {given[1]} "
            f"URL < token.txt', or set {TOKEN_ENV}; then give only METHOD URL"
        )
    if len(given) != 2:
        raise UsageError("check needs METHOD URL, e.g. check GET 'http://host/v3/sql/c/query?q=...'")
    return given[0], given[1]


def _read_token() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if sys.stdin is None:
        raise UsageError(f"no token: set {TOKEN_ENV} or pipe the token into check")
    if sys.stdin.isatty():
        token = getpass.getpass("API access token: ").strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise UsageError(f"no token: set {TOKEN_ENV} or pipe the token into check")
    return token


def cmd_check(args: argparse.Namespace) -> int:
    """``check METHOD URL`` (token on stdin or ``$TOKEN_GUARD_TOKEN``): the decision, and why."""
    from token_guard.core.decision import Denial
    from token_guard.guard import DecisionEvent, Guard

    method, url = _request_args(args)
    settings = read_config(args)
    secret = _read_token()
    parts = urlsplit(url)
    raw_path = (parts.path or "/").encode("utf-8")
    query = parts.query.encode("utf-8")
    body_bytes = args.data.encode("utf-8") if args.data else b""
    connections: dict[str, Any] = dict(settings.connections) if settings is not None else {}
    connections.update(_connections(args.connection or []))
    options = settings.guard_options() if settings is not None else {}
    prefix = options.get("prefix", "/v3/")
    assumed: list[str] = []

    async def work(store: TokenStore) -> int:
        if not connections:
            # Without --connection, every connection the token names is taken as BigQuery
            # (CARTO's data warehouse default); the output says so.
            from token_guard.core.secret import hash_secret

            record = await store.get_by_secret_hash(hash_secret(secret))
            for g in record.grants if record is not None else ():
                if g.connection_name not in connections:
                    connections[g.connection_name] = "bigquery"
                    assumed.append(g.connection_name)
        # The same conductor TokenGuard runs; its DecisionEvent says what was read.
        events: list[DecisionEvent] = []
        if args.report_only is not None:
            options["report_only"] = _report_only(args.report_only)
        guard = Guard(store=store, connections=connections, on_decision=events.append,
                      **options)
        try:
            step = await guard.check_async(
                method.upper(), raw_path, query, b"Bearer " + secret.encode("utf-8"),
                args.origin, args.referer, body=body_bytes,
            )
        finally:
            await guard.resolver.close()
        event = events[-1] if events else None
        facts = event.facts if event is not None else None
        outcome: Any = step if isinstance(step, Denial) else (
            "allowed" if isinstance(step, TokenRecord) else None
        )
        token: tuple[str, str | None] | None = None
        if isinstance(step, TokenRecord):
            token = (step.id, step.name)
        elif event is not None and event.token_id is not None:
            token = (event.token_id, None)
        passed = event is not None and event.report_only
        _report_check(args, outcome, facts, token, assumed, prefix, passed)
        return EXIT_OK if outcome in ("allowed", None) else EXIT_REFUSED

    return run_with_store(args, work)


def _report_only(value: str | None) -> bool | set[str]:
    """``--report-only`` (every API) or ``--report-only maps,sql``; absent: enforce."""
    if value is None:
        return False
    if value == "all":
        return True
    return {name.strip() for name in value.split(",") if name.strip()}


def _report_check(
    args: argparse.Namespace, outcome: Any, facts: Any, token: tuple[str, str | None] | None,
    assumed: Sequence[str], prefix: str, passed: bool = False,
) -> None:
    from token_guard.core.decision import Denial

    facts_json = None
    if facts is not None:
        facts_json = {
            "api": facts.api, "connection": facts.connection,
            "sources": [{"kind": s.kind, "value": s.value} for s in facts.sources],
            "origin": facts.origin, "referer": facts.referer,
        }
    token_json = {"id": token[0], "name": token[1]} if token is not None else None
    if isinstance(outcome, Denial):
        result: dict[str, Any] = {"decision": "denied", "status": outcome.status,
                                  "code": outcome.code, "reason": outcome.message,
                                  "hint": outcome.hint, "enforced": not passed}
        if passed:
            # Report-only: the app would get this request; the output must not look enforced.
            result["decision"] = "would_refuse"
            result["note"] = ("REPORT-ONLY: this refusal is NOT enforced; the request reaches "
                              "the app (logged as 'report-only: would refuse')")
    elif outcome is None:
        result = {"decision": "not_guarded",
                  "reason": f"the path is outside the protected prefix ({prefix}); the guard "
                            "passes it to the app untouched"}
    else:
        result = {"decision": "allowed", "status": 200, "reason": "every check passed"}
    result.update({"request": facts_json, "token": token_json,
                   "assumed_bigquery": list(assumed)})
    if args.json:
        print_json(result)
        return
    head = result["decision"].upper()
    if "status" in result:
        head += f" ({result['status']}{' ' + result['code'] if 'code' in result else ''})"
    print(head)
    print(f"reason:  {result['reason']}")
    if result.get("note"):
        print(f"note:    {result['note']}")
    if result.get("hint"):
        print(f"hint:    {result['hint']}")
    if token_json:
        print(f"token:   {token_json['id']}" + (
            f" ({token_json['name']})" if token_json["name"] else ""))
    if facts_json:
        print(f"api:     {facts_json['api']}   connection: {facts_json['connection'] or '-'}")
        for s in facts_json["sources"]:
            print(f"source:  {s['kind']}: {s['value']}")
        print(f"origin:  {facts_json['origin'] or '-'}   referer: {facts_json['referer'] or '-'}")
    if assumed:
        print(
            f"note:    connections {', '.join(assumed)} were assumed to be BigQuery; "
            "pass --config FILE (the app's configuration) or --connection NAME=DIALECT",
            file=sys.stderr,
        )


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``check`` to ``sub``."""
    p = sub.add_parser(
        "check", parents=[common], help="would the guard allow this request?",
        description=f"The token is read from ${TOKEN_ENV} or stdin, never from the command line.",
    )
    p.add_argument("request", nargs="+", metavar="METHOD URL",
                   help="e.g. GET https://api.example.com/v3/maps/carto_dw/table?name=...")
    add_config_flag(p)
    p.add_argument("--origin", help="the Origin header a browser would send")
    p.add_argument("--referer", help="the Referer header")
    p.add_argument("--data", help="the JSON body of a POST")
    p.add_argument("--connection", action="append", metavar="NAME=DIALECT",
                   help="e.g. carto_dw=bigquery (repeat)")
    p.add_argument("--report-only", nargs="?", const="all", metavar="APIS",
                   help="decide as a report_only guard would (every API, or e.g. maps,sql): "
                        "a refusal shows as WOULD_REFUSE, not enforced")
    p.set_defaults(func=cmd_check)
