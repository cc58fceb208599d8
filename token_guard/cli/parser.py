"""The argparse pieces every command family shares: a parser exiting 2, the global flags.

The global flags (``--store``, ``--json``) are accepted before the command and after it
(``token-guard --store X tokens list`` = ``token-guard tokens list --store X``): the top
parser gives them their defaults, and every command's copy defaults to ``SUPPRESS``, so a
flag given later overrides one given earlier and an absent one overrides nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from token_guard.cli.errors import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with status 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def common_flags(*, top: bool = False) -> Parser:
    """The parent parser with the global flags (``--store``, ``--create``, ``--json``): with
    defaults for the top parser (``top``), without (``SUPPRESS``) for the commands'."""
    common = Parser(add_help=False)
    common.add_argument(
        "--store", default=None if top else argparse.SUPPRESS,
        help="sqlite:///tokens.db, a file path or postgresql://... "
             "(default: $TOKEN_GUARD_STORE, else sqlite:///tokens.db)",
    )
    common.add_argument(
        "--create", action="store_true", default=False if top else argparse.SUPPRESS,
        help="create the SQLite store if the file does not exist (otherwise a missing file "
             "is an error, so a mistyped path never becomes an empty store)",
    )
    common.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="print JSON for scripts")
    return common
