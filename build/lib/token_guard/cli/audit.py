"""``token-guard audit``: the management audit log, newest first."""

from __future__ import annotations

import argparse
import json

from token_guard.cli.errors import EXIT_OK
from token_guard.cli.output import audit_json, print_json, table, when
from token_guard.cli.parser import Parser
from token_guard.cli.store import run_with_store
from token_guard.stores.base import TokenStore


def cmd_audit(args: argparse.Namespace) -> int:
    """``audit``: newest first."""

    async def work(store: TokenStore) -> int:
        entries = list(await store.list_audit(limit=args.limit, before=args.before))
        if args.json:
            print_json({"entries": [audit_json(e) for e in entries]})
        else:
            rows = [
                [str(e.id), when(e.at), e.actor, e.action, e.token_id or "-",
                 json.dumps(e.detail, ensure_ascii=False) if e.detail else ""]
                for e in entries
            ]
            print(table(rows, ["ID", "AT", "ACTOR", "ACTION", "TOKEN", "DETAIL"]))
        return EXIT_OK

    return run_with_store(args, work)


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``audit`` to ``sub``."""
    p = sub.add_parser("audit", parents=[common], help="the management audit log")
    p.add_argument("--limit", type=int, default=100, choices=range(1, 501), metavar="1..500")
    p.add_argument("--before", type=int, help="entries with an id below this")
    p.set_defaults(func=cmd_audit)
