"""``token-guard demo``: a CARTO-style data API over bundled sample data, on this machine only.

Run it through :func:`main`. It listens on 127.0.0.1
(never on other interfaces: it is a demo with sample data) and keeps its SQLite file under
``--data-dir``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from token_guard.demo.app import CONNECTIONS, build_app

__all__ = ["CONNECTIONS", "DemoOptions", "build_app", "main", "parse_args", "serve"]

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DATA_DIR = "./token_guard_demo"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the command line asked for."""

    port: int
    data_dir: Path


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    """Parse the demo's command line (``--port``, ``--data-dir``)."""
    parser = argparse.ArgumentParser(
        prog="token-guard demo",
        description="Serve a CARTO-style data API (SQL, Maps, LDS) over bundled sample data "
                    f"on {HOST}.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port on {HOST} (default: {DEFAULT_PORT})")
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR),
                        help="directory for the demo's SQLite files, created if missing "
                             f"(default: {DEFAULT_DATA_DIR})")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port; use 1..65535")
    return DemoOptions(port=args.port, data_dir=args.data_dir)


def serve(app: ASGIApp, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until Ctrl-C (uvicorn shuts down gracefully)."""
    uvicorn.run(app, host=HOST, port=port, log_level="info")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: build the demo API and serve it; returns the process exit status."""
    options = parse_args(argv)
    app = build_app(options.data_dir)
    print(f"token_guard demo API on http://{HOST}:{options.port}/v3/ "
          f"(data in {options.data_dir.resolve()}); Ctrl-C stops it.", flush=True)
    serve(app, options.port)
    return 0
