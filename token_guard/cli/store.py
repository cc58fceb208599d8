"""The store and key file a command works on, and who the audit log says acted.

The store URL parsing stays as it was in the one-module CLI (``default_key_path``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from token_guard import stores
from token_guard.cli.errors import UsageError
from token_guard.errors import ConfigurationError
from token_guard.stores.base import TokenStore

DEFAULT_STORE = "sqlite:///tokens.db"


def open_store(url: str | None) -> TokenStore:
    """The store named by ``url`` (or ``TOKEN_GUARD_STORE``, else ``sqlite:///tokens.db``)."""
    try:
        return stores.open_store(url, default=DEFAULT_STORE)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def default_key_path(store_url: str | None) -> Path:
    """Where the signing keys live unless ``--keys`` or ``TOKEN_GUARD_KEYS`` says otherwise."""
    env = os.environ.get("TOKEN_GUARD_KEYS")
    if env:
        return Path(env)
    target = store_url or os.environ.get("TOKEN_GUARD_STORE") or DEFAULT_STORE
    if target.startswith(("postgresql://", "postgres://")):
        return Path("token-guard.keys")
    path = target[len("sqlite:///") :] if target.startswith("sqlite:///") else target
    return Path(path).with_suffix(".keys")


def actor() -> str:
    """``cli:<os user>``: who the audit log says did it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"cli:{user}"


def run_with_store(
    args: argparse.Namespace, work: Callable[[TokenStore], Awaitable[int]]
) -> int:
    """Open ``--store``, run ``work`` on it, close it; return ``work``'s exit status."""
    async def go() -> int:
        store = open_store(args.store)
        try:
            await store.open()
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())
