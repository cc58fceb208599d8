"""``token-guard check TOKEN METHOD URL``: what the guard would decide, and why."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from token_guard.cli.errors import EXIT_OK, EXIT_REFUSED, UsageError
from token_guard.cli.output import print_json
from token_guard.cli.parser import Parser
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


def cmd_check(args: argparse.Namespace) -> int:
    """``check TOKEN METHOD URL``: what the guard would decide, and why."""
    from token_guard.core.decision import Denial
    from token_guard.guard import DecisionEvent, Guard

    parts = urlsplit(args.url)
    raw_path = (parts.path or "/").encode("utf-8")
    query = parts.query.encode("utf-8")
    body_bytes = args.data.encode("utf-8") if args.data else b""
    connections = _connections(args.connection or [])
    assumed: list[str] = []

    async def work(store: TokenStore) -> int:
        if not connections:
            # Without --connection, every connection the token names is taken as BigQuery
            # (CARTO's data warehouse default); the output says so.
            from token_guard.core.secret import hash_secret

            record = await store.get_by_secret_hash(hash_secret(args.token))
            for g in record.grants if record is not None else ():
                if g.connection_name not in connections:
                    connections[g.connection_name] = "bigquery"
                    assumed.append(g.connection_name)
        # The same conductor TokenGuard runs; its DecisionEvent says what was read.
        events: list[DecisionEvent] = []
        guard = Guard(store=store, connections=connections, on_decision=events.append)
        try:
            step = await guard.check_async(
                args.method.upper(), raw_path, query, b"Bearer " + args.token.encode("utf-8"),
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
        _report_check(args, outcome, facts, token, assumed)
        return EXIT_OK if outcome in ("allowed", None) else EXIT_REFUSED

    return run_with_store(args, work)


def _report_check(
    args: argparse.Namespace, outcome: Any, facts: Any, token: tuple[str, str | None] | None,
    assumed: Sequence[str],
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
                                  "hint": outcome.hint}
    elif outcome is None:
        result = {"decision": "not_guarded",
                  "reason": "the path is outside the protected prefix (/v3/); the guard "
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
            "pass --connection NAME=DIALECT to say otherwise", file=sys.stderr,
        )


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``check`` to ``sub``."""
    p = sub.add_parser("check", parents=[common], help="would the guard allow this request?")
    p.add_argument("token", help="the API access token (tgk_...)")
    p.add_argument("method", help="GET, POST, ...")
    p.add_argument("url", help="e.g. https://api.example.com/v3/maps/carto_dw/table?name=...")
    p.add_argument("--origin", help="the Origin header a browser would send")
    p.add_argument("--referer", help="the Referer header")
    p.add_argument("--data", help="the JSON body of a POST")
    p.add_argument("--connection", action="append", metavar="NAME=DIALECT",
                   help="e.g. carto_dw=bigquery (repeat)")
    p.set_defaults(func=cmd_check)
