"""The argparse pieces every command family shares: a parser exiting 2, the common flags."""

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


def common_flags() -> Parser:
    """The parent parser with ``--store`` and ``--json``."""
    common = Parser(add_help=False)
    common.add_argument(
        "--store", default=None,
        help="sqlite:///tokens.db, a file path or postgresql://... "
             "(default: $TOKEN_GUARD_STORE, else sqlite:///tokens.db)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common
