"""``token-guard demo``: a CARTO-style data API behind TokenGuard, with its Tokens API, on one port.

Run it with ``token-guard demo`` or ``python -m token_guard.demo`` (options ``--port``,
``--host``, ``--data-dir``). Under ``--data-dir`` it keeps:

- ``demo.db``            the generated sample data (tables ``stores``, ``cities``, ``customers``);
- ``token_guard.toml``   the configuration (store, connections) the demo's guard and the
                         CLI's ``--config`` read;
- ``tokens.db``          the embedded SQLite token store (hashes of secrets only);
- ``tokens.keys``        the OAuth signing keys of the Tokens API (mode 0600), the file
                         ``token-guard serve`` would use for that store;
- ``demo-secrets.json``  the demo's *own* token and client secrets (mode 0600, demo only), so
                         every start prints the same ready-to-paste ``curl`` lines;
- ``.gitignore``         ``*``: run in a clone, none of it can be committed by ``git add -A``.
                         Written only into a folder that holds nothing but the demo's files.

The server answers the Tokens API, ``/oauth/token``, JWKS, OpenAPI and the Developers page
itself (outside the guard: they use OAuth), and every other path through CORS and TokenGuard
to the data API (see ``token_guard.demo.compose``). It binds to 127.0.0.1 unless ``--host``
says otherwise: it prints working secrets, so it is not meant for a shared network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from token_guard.adapters.asgi import ASGIApp
from token_guard.config import load_config
from token_guard.demo.app import CONNECTIONS, build_app
from token_guard.demo.compose import build_demo_server
from token_guard.demo.data import DATABASE_FILE
from token_guard.demo.tokens import (
    CONFIG_FILE,
    KEYS_FILE,
    SECRETS_FILE,
    TOKENS_DB,
    DemoSecrets,
    Prepared,
    read_secrets,
    reconcile,
    render,
    save,
    write_config,
)
from token_guard.management.keys import SigningKeys
from token_guard.stores.sqlite import SQLiteStore

__all__ = ["CONNECTIONS", "DemoOptions", "base_url", "build_app", "main", "parse_args", "serve"]

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DATA_DIR = "./token_guard_demo"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the command line asked for."""

    port: int
    data_dir: Path
    host: str = HOST


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    """Parse the demo's command line (``--port``, ``--host``, ``--data-dir``)."""
    parser = argparse.ArgumentParser(
        prog="token-guard demo",
        description="Serve a CARTO-style data API (SQL, Maps, LDS) over bundled sample data, "
                    "behind TokenGuard, with the Tokens API on the same port. Prints demo "
                    "tokens and curl lines to try them.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port (default: {DEFAULT_PORT})")
    parser.add_argument("--host", default=HOST,
                        help=f"interface to listen on (default: {HOST}; the demo prints "
                             "working secrets, so keep it on loopback)")
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR),
                        help="directory for the demo's data, token store, keys and demo "
                             f"secrets, created if missing (default: {DEFAULT_DATA_DIR})")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port; use 1..65535")
    if not args.host:
        parser.error("--host is empty; use an address such as 127.0.0.1")
    return DemoOptions(port=args.port, data_dir=args.data_dir, host=args.host)


GITIGNORE = (
    "# token_guard demo: sample data, token store, signing keys, demo secrets, config.\n"
    "# Never commit them; delete this folder for fresh ones.\n"
    "*\n"
)
# What the demo writes into its folder (SQLite adds -wal/-shm; temporary files start with .).
_DEMO_NAMES = (DATABASE_FILE, TOKENS_DB, KEYS_FILE, SECRETS_FILE, CONFIG_FILE, ".")


def keep_out_of_git(data_dir: Path) -> None:
    """Write ``.gitignore`` (``*``) into the demo's folder, unless it holds files of others.

    The secrets and keys are then never committed from a clone, whatever ``--data-dir``
    says; a folder with other files in it (``--data-dir .``) is left alone.
    """
    ignore = data_dir / ".gitignore"
    if ignore.exists():
        return
    if all(entry.name.startswith(_DEMO_NAMES) for entry in data_dir.iterdir()):
        ignore.write_text(GITIGNORE, encoding="utf-8")


def base_url(host: str, port: int) -> str:
    """The URL people (and curl) use to reach a server listening on ``host``:``port``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def serve(app: ASGIApp, port: int, host: str = HOST) -> None:
    """Serve ``app`` on ``host``:``port`` until Ctrl-C (uvicorn shuts down gracefully)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on")
    # uvicorn re-raises the Ctrl-C it handled once it has shut down; that is the normal end.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()


async def _prepare_tokens(data_dir: Path, known: DemoSecrets | None) -> Prepared:
    # Its own store instance on its own loop: the server opens another on uvicorn's loop.
    store = SQLiteStore(data_dir / TOKENS_DB)
    await store.open()
    try:
        return await reconcile(store, known)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: seed the demo tokens, print how to use them, serve; the exit status."""
    options = parse_args(argv)
    data_dir = options.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"token-guard demo: cannot create --data-dir {data_dir}: {exc.strerror}; "
              "choose a writable directory", file=sys.stderr)
        return 2
    keep_out_of_git(data_dir)
    secrets_path = data_dir / SECRETS_FILE
    prepared = asyncio.run(_prepare_tokens(data_dir, read_secrets(secrets_path)))
    save(secrets_path, prepared)
    base = base_url(options.host, options.port)
    keys = SigningKeys.open(data_dir / KEYS_FILE)
    settings = load_config(write_config(data_dir))
    server = build_demo_server(data_dir, SQLiteStore(data_dir / TOKENS_DB), issuer=base,
                               keys=keys, config=settings)
    links = [("Developers page", f"{base}/developers")] if server.serves("/developers") else []
    print(render(base, data_dir, prepared, extra_links=links), flush=True)
    if options.host not in _LOOPBACK:
        print(f"warning: listening on {options.host}: anyone who can reach it can use the "
              "demo tokens printed above", file=sys.stderr, flush=True)
    serve(server.app, options.port, options.host)
    return 0
