"""``token-guard clients create|list|revoke``: the OAuth clients of the Tokens API."""

from __future__ import annotations

import argparse
import sys

from token_guard.cli.errors import EXIT_OK, Refused, UsageError
from token_guard.cli.output import client_json, print_json, table, when
from token_guard.cli.parser import Parser
from token_guard.cli.store import actor, run_with_store
from token_guard.core.errors import NotFound
from token_guard.management.clients import SCOPES, create_client, revoke_client
from token_guard.stores.base import TokenStore


def cmd_clients_create(args: argparse.Namespace) -> int:
    """``clients create --name N --scope S``."""
    if not args.scope:
        raise UsageError(f"give at least one --scope: {' or '.join(SCOPES)}")

    async def work(store: TokenStore) -> int:
        try:
            client, secret = await create_client(store, args.name, args.scope, actor=actor())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            print_json({**client_json(client), "client_secret": secret})
        else:
            print(f"client_id:     {client.client_id}")
            print(f"client_secret: {secret}")
            print(f"scopes:        {' '.join(client.scopes)}")
        print(
            "warning: this is the only time the client secret is shown; store it now",
            file=sys.stderr,
        )
        return EXIT_OK

    return run_with_store(args, work)


def cmd_clients_list(args: argparse.Namespace) -> int:
    """``clients list``."""

    async def work(store: TokenStore) -> int:
        clients = list(await store.list_clients())
        if args.json:
            print_json({"clients": [client_json(c) for c in clients]})
        else:
            rows = [
                [c.client_id, c.name, " ".join(c.scopes),
                 "revoked" if c.revoked_at else "active", when(c.created_at)]
                for c in clients
            ]
            print(table(rows, ["CLIENT_ID", "NAME", "SCOPES", "STATE", "CREATED"]))
        return EXIT_OK

    return run_with_store(args, work)


def cmd_clients_revoke(args: argparse.Namespace) -> int:
    """``clients revoke ID``."""

    async def work(store: TokenStore) -> int:
        try:
            client = await revoke_client(store, args.id, actor=actor())
        except NotFound:
            raise Refused(
                f"no OAuth client has id {args.id!r}; 'token-guard clients list' shows them"
            ) from None
        if args.json:
            print_json(client_json(client))
        else:
            print(f"revoked {client.client_id} ({client.name}); its access tokens stop working")
        return EXIT_OK

    return run_with_store(args, work)


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``clients`` and its actions to ``sub``."""
    clients = sub.add_parser("clients", help="OAuth clients of the Tokens API")
    csub = clients.add_subparsers(dest="action", required=True, parser_class=Parser)
    p = csub.add_parser("create", parents=[common], help="create a client (secret shown once)")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", action="append", choices=SCOPES)
    p.set_defaults(func=cmd_clients_create)
    p = csub.add_parser("list", parents=[common], help="list clients")
    p.set_defaults(func=cmd_clients_list)
    p = csub.add_parser("revoke", parents=[common], help="revoke a client")
    p.add_argument("id")
    p.set_defaults(func=cmd_clients_revoke)
