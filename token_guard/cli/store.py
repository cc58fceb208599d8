"""The store and key file a command works on, and who the audit log says acted.

Store URLs are read by ``token_guard.stores.urls.parse_store_url``, as everywhere.
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
from token_guard.core.errors import ConfigurationError
from token_guard.stores.base import TokenStore
from token_guard.stores.urls import DEFAULT_URL, parse_store_url

DEFAULT_STORE = DEFAULT_URL


def open_store(url: str | None, *, create: bool = False) -> TokenStore:
    """The store named by ``url`` (or ``TOKEN_GUARD_STORE``, else ``sqlite:///tokens.db``);
    a missing SQLite file is an error naming it unless ``create`` (``--create``)."""
    try:
        parsed = parse_store_url(url, default=DEFAULT_STORE)
        if (
            parsed.kind == "sqlite" and not create and parsed.target != ":memory:"
            and not os.path.exists(parsed.target)
        ):
            raise UsageError(
                f"no token store at {os.path.abspath(parsed.target)} (the file does not "
                "exist); check --store or TOKEN_GUARD_STORE, or pass --create to make a new, "
                "empty store there"
            )
        return stores.open_store(url, default=DEFAULT_STORE, create=create)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def default_key_path(store_url: str | None) -> Path:
    """Where the signing keys live unless ``--keys`` or ``TOKEN_GUARD_KEYS`` says otherwise."""
    env = os.environ.get("TOKEN_GUARD_KEYS")
    if env:
        return Path(env)
    try:
        parsed = parse_store_url(store_url, default=DEFAULT_STORE)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if parsed.kind == "postgresql":
        return Path("token-guard.keys")
    return Path(parsed.target).with_suffix(".keys")


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
        store = open_store(args.store, create=getattr(args, "create", False))
        try:
            await store.open()
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())
