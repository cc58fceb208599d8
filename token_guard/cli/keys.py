"""``token-guard keys rotate|list``: the OAuth signing keys published in the store (or a key file).

By default each Tokens API instance signs with its own in-memory key and publishes the
public half in the store (``management.store_keys``): ``rotate`` retires every published
key, and each instance publishes a fresh one on its next signature. ``--keys FILE`` (or
``$TOKEN_GUARD_KEYS``) works on a key file instead, for servers started with that file.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from token_guard.cli.errors import EXIT_OK
from token_guard.cli.output import print_json, table
from token_guard.cli.parser import Parser
from token_guard.cli.store import actor, run_with_store
from token_guard.core.spec import format_datetime
from token_guard.management.keys import DEFAULT_TOKEN_LIFETIME, SigningKeys
from token_guard.stores.base import TokenStore


def keys_path(args: argparse.Namespace) -> Path | None:
    """``--keys``, else ``$TOKEN_GUARD_KEYS``, else None: the keys are in the store."""
    given = args.keys or os.environ.get("TOKEN_GUARD_KEYS")
    return Path(given) if given else None


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """``keys rotate``: retire the signing keys; each verifies until its tokens expire."""
    path = keys_path(args)
    if path is not None:
        return _rotate_file(args, path)

    async def work(store: TokenStore) -> int:
        retired = await store.retire_signing_keys(datetime.now(UTC))
        kids = [k.kid for k in retired]
        await store.add_audit(actor(), "keys.rotate", None, {"retired": kids})
        rows = _rows(await store.list_signing_keys())
        if args.json:
            print_json({"retired": kids, "keys": rows})
        else:
            print(f"retired {len(kids)} signing key(s); every Tokens API instance signs with "
                  "a fresh key from its next access token on")
        return EXIT_OK

    return run_with_store(args, work)


def _rotate_file(args: argparse.Namespace, path: Path) -> int:
    existed = path.exists()
    ring = SigningKeys.open(path)
    new = ring.active if not existed else ring.rotate(token_lifetime=args.token_lifetime)

    async def work(store: TokenStore) -> int:
        await store.add_audit(actor(), "keys.rotate", None, {"kid": new.kid, "file": str(path)})
        return EXIT_OK

    run_with_store(args, work)
    if args.json:
        print_json({"kid": new.kid, "file": str(path), "keys": _rows(ring.keys)})
    else:
        print(f"active key {new.kid} in {path}")
    return EXIT_OK


def _rows(keys: Any) -> list[dict[str, Any]]:
    # SigningKey (key file) and PublishedKey (store) share these fields.
    return [
        {"kid": k.kid, "created_at": format_datetime(k.created_at),
         "retired_at": format_datetime(k.retired_at),
         "verify_until": format_datetime(k.verify_until)}
        for k in keys
    ]


def cmd_keys_list(args: argparse.Namespace) -> int:
    """``keys list``: kids and their windows (never a private key)."""
    path = keys_path(args)
    if path is not None:
        return _print_rows(args, _rows(SigningKeys.open(path, create=False).keys))

    async def work(store: TokenStore) -> int:
        return _print_rows(args, _rows(await store.list_signing_keys()))

    return run_with_store(args, work)


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
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
    keys = sub.add_parser("keys", parents=[common], help="OAuth signing keys")
    ksub = keys.add_subparsers(dest="action", required=True, parser_class=Parser)
    for name, func, text in (("rotate", cmd_keys_rotate, "retire the signing keys"),
                             ("list", cmd_keys_list, "list signing keys")):
        p = ksub.add_parser(name, parents=[common], help=text)
        p.add_argument("--keys", help="a key file instead of the store's published keys "
                       "(default: $TOKEN_GUARD_KEYS if set)")
        p.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME,
                       help="with --keys: seconds an access token lives (old keys verify "
                       "this long)")
        p.set_defaults(func=func)
