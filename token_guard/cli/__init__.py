"""``token-guard``: manage API access tokens and OAuth clients, debug a refusal, serve the API.

Commands::

    token-guard tokens create|list|show|update|revoke|rotate|end-grace|disable|enable
    token-guard clients create|list|revoke
    token-guard keys rotate|list
    token-guard audit
    token-guard check METHOD URL [--config FILE --origin ...]   (token on stdin)
    token-guard serve [--host --port --issuer --audience --external-issuer ...]
    token-guard demo [...]

The store comes from ``--store`` or ``TOKEN_GUARD_STORE`` (``sqlite:///tokens.db`` by
default; ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare file path, or
``postgresql://...``). The OAuth signing keys live in ``--keys`` / ``TOKEN_GUARD_KEYS``,
by default next to a SQLite store (``tokens.db`` -> ``tokens.keys``). Output is a table for
people, JSON with ``--json``. Exit status: 0 ok, 1 refused or not found, 2 usage error.
A secret (token or client) is printed once, at creation, and never again.

One module per command family (``tokens``, ``clients``, ``keys``, ``audit``, ``check``,
``serve``, ``demo``), each adding its parsers with ``register``; ``output`` formats what
they print, ``store`` opens the store and the key file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from token_guard import __version__
from token_guard.cli import audit, check, clients, demo, keys, serve, tokens
from token_guard.cli.errors import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Refused, UsageError
from token_guard.cli.parser import Parser, common_flags
from token_guard.cli.store import open_store
from token_guard.cli.tokens import parse_expires
from token_guard.core.errors import (
    ConfigurationError,
    InvalidTokenSpec,
    NotFound,
    StoreError,
    StoreUnavailable,
    TokenStateError,
)

__all__ = ["build_parser", "main", "open_store", "parse_expires"]

_FAMILIES = (tokens, clients, keys, audit, check, serve, demo)


DESCRIPTION = (
    "token-guard: manage API access tokens and OAuth clients, debug a refusal, serve the "
    "Tokens API."
)
EPILOG = (
    "The store comes from --store or TOKEN_GUARD_STORE (default sqlite:///tokens.db). "
    "Global options (--store, --json) go before or after the command. "
    "Exit status: 0 ok, 1 refused or not found, 2 usage error."
)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every command."""
    common = common_flags()
    parser = Parser(prog="token-guard", description=DESCRIPTION, epilog=EPILOG,
                    parents=[common_flags(top=True)])
    parser.add_argument("--version", action="version", version=f"token-guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for family in _FAMILIES:
        family.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 refused/not found, 2 usage)."""
    try:
        status = _run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        # The reader went away (``token-guard tokens list | head -1``): what it read is what
        # it wanted. Point stdout at /dev/null so the interpreter's last flush is silent.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _run(given: list[str]) -> int:
    if given[:1] == ["demo"]:
        # Everything after 'demo' belongs to the demo's own parser (including --help).
        return demo.cmd_demo(argparse.Namespace(demo_args=given[1:]))
    args = build_parser().parse_args(given)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        print(f"token-guard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidTokenSpec as exc:
        print(f"token-guard: invalid token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Refused, NotFound, TokenStateError) as exc:
        print(f"token-guard: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigurationError as exc:
        print(f"token-guard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        # Said plainly: a write refused here was not made (or, if the link broke after it
        # was sent, is not confirmed); never reported as done.
        print(f"token-guard: not done: the store cannot answer: {exc}; nothing is "
              "confirmed changed, retry when the store is back", file=sys.stderr)
        return EXIT_REFUSED
    except StoreError as exc:
        print(f"token-guard: store error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
