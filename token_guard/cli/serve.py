"""``token-guard serve``: the management app (Tokens API, OAuth, JWKS, OpenAPI) under uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import sys

from token_guard.cli.errors import EXIT_OK
from token_guard.cli.keys import keys_path
from token_guard.cli.parser import Parser
from token_guard.cli.settings import add_config_flag, read_config
from token_guard.cli.store import open_store
from token_guard.management.keys import DEFAULT_TOKEN_LIFETIME, SigningKeys
from token_guard.management.verify import ExternalIssuer


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: the Tokens API and the OAuth endpoint under uvicorn."""
    import uvicorn

    from token_guard.management.app import create_management_app

    settings = read_config(args)  # before the key path: the store may come from it
    externals = [ExternalIssuer(url, iss, aud) for url, iss, aud in args.external_issuer or []]
    base = _base_url(args.host, args.port)
    issuer = args.issuer or f"http://{args.host}:{args.port}"
    keys = SigningKeys.open(keys_path(args))

    async def go() -> int:
        store = open_store(args.store, create=args.create)
        await store.open()
        try:
            app = create_management_app(
                store, issuer=issuer, audience=args.audience, keys=keys,
                external_issuers=externals, token_lifetime=args.token_lifetime,
                config=settings,
            )
            config = uvicorn.Config(
                app, host=args.host, port=args.port, log_level=args.log_level, lifespan="off"
            )
            print(
                f"token-guard: Tokens API on {base} "
                f"(issuer {issuer}, audience {args.audience}, keys {keys.path})\n"
                f"token-guard: Developers page: {base}/developers\n"
                f"token-guard: API documentation (OpenAPI 3.1): {base}/openapi.json",
                file=sys.stderr, flush=True,
            )
            await uvicorn.Server(config).serve()
        finally:
            await store.close()
        return EXIT_OK

    return asyncio.run(go())


def _base_url(host: str, port: int) -> str:
    """The URL people open for a server listening on ``host``: a wildcard is loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``serve`` to ``sub``."""
    p = sub.add_parser("serve", parents=[common], help="run the Tokens API + OAuth endpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--issuer", help="iss of issued tokens (default: http://HOST:PORT)")
    p.add_argument("--audience", default="token-guard", help="aud of issued tokens")
    p.add_argument("--keys", help="key file (default: $TOKEN_GUARD_KEYS or next to the store)")
    p.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME)
    p.add_argument("--external-issuer", nargs=3, action="append",
                   metavar=("JWKS_URL", "ISSUER", "AUDIENCE"),
                   help="also accept this issuer's JWTs (repeat)")
    p.add_argument("--log-level", default="info")
    add_config_flag(p)
    p.set_defaults(func=cmd_serve)
