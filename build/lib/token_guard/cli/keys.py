"""``token-guard keys rotate|list``: the OAuth signing keys in the key file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from token_guard.cli.errors import EXIT_OK
from token_guard.cli.output import print_json, table
from token_guard.cli.parser import Parser
from token_guard.cli.store import actor, default_key_path, run_with_store
from token_guard.core.spec import format_datetime
from token_guard.management.keys import DEFAULT_TOKEN_LIFETIME, SigningKeys
from token_guard.stores.base import TokenStore


def keys_path(args: argparse.Namespace) -> Path:
    """``--keys``, else ``$TOKEN_GUARD_KEYS``, else next to the store."""
    return Path(args.keys) if args.keys else default_key_path(args.store)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """``keys rotate``: a new signing key; the old one verifies until its tokens expire."""
    path = keys_path(args)
    existed = path.exists()
    ring = SigningKeys.open(path)
    new = ring.active if not existed else ring.rotate(token_lifetime=args.token_lifetime)

    async def work(store: TokenStore) -> int:
        await store.add_audit(actor(), "keys.rotate", None, {"kid": new.kid, "file": str(path)})
        return EXIT_OK

    run_with_store(args, work)
    if args.json:
        print_json({"kid": new.kid, "file": str(path), "keys": _key_rows_json(ring)})
    else:
        print(f"active key {new.kid} in {path}")
    return EXIT_OK


def _key_rows_json(ring: SigningKeys) -> list[dict[str, Any]]:
    return [
        {"kid": k.kid, "created_at": format_datetime(k.created_at),
         "retired_at": format_datetime(k.retired_at),
         "verify_until": format_datetime(k.verify_until)}
        for k in ring.keys
    ]


def cmd_keys_list(args: argparse.Namespace) -> int:
    """``keys list``: kids and their windows (never the private keys)."""
    ring = SigningKeys.open(keys_path(args), create=False)
    rows = _key_rows_json(ring)
    if args.json:
        print_json({"keys": rows})
    else:
        print(table(
            [[r["kid"], r["created_at"] or "-", "retired" if r["retired_at"] else "active",
              r["verify_until"] or "-"] for r in rows],
            ["KID", "CREATED", "STATE", "VERIFIES UNTIL"],
        ))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``keys`` and its actions to ``sub``."""
    keys = sub.add_parser("keys", help="OAuth signing keys")
    ksub = keys.add_subparsers(dest="action", required=True, parser_class=Parser)
    for name, func, text in (("rotate", cmd_keys_rotate, "add a new signing key"),
                             ("list", cmd_keys_list, "list signing keys")):
        p = ksub.add_parser(name, parents=[common], help=text)
        p.add_argument("--keys", help="key file (default: $TOKEN_GUARD_KEYS or next to the store)")
        p.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME,
                       help="seconds an access token lives (old keys verify this long)")
        p.set_defaults(func=func)
