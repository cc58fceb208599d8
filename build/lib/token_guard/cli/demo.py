"""``token-guard demo``: the demo data API; its flags pass through to the demo's parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from token_guard.cli.errors import EXIT_USAGE
from token_guard.cli.parser import Parser


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the demo data API (built by the demo package); its flags pass through."""
    try:
        from token_guard import demo
    except ImportError:
        print("token-guard: the demo is not built yet", file=sys.stderr)
        return EXIT_USAGE
    main_fn: Callable[[Sequence[str] | None], int] | None = getattr(demo, "main", None)
    if main_fn is None:
        print("token-guard: the demo is not built yet", file=sys.stderr)
        return EXIT_USAGE
    return int(main_fn(list(args.demo_args)) or 0)


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``demo`` to ``sub`` (``main`` hands it everything after ``demo``)."""
    p = sub.add_parser("demo", help="run the demo data API", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_demo)
