"""``token-guard``: manage API access tokens and OAuth clients, debug a refusal, serve the API.

Commands::

    token-guard tokens create|list|show|update|revoke
    token-guard clients create|list|revoke
    token-guard keys rotate|list
    token-guard audit
    token-guard check TOKEN METHOD URL [--origin ...]
    token-guard serve [--host --port --issuer --audience --external-issuer ...]
    token-guard demo [...]

The store comes from ``--store`` or ``TOKEN_GUARD_STORE`` (``sqlite:///tokens.db`` by
default; ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare file path, or
``postgresql://...``). The OAuth signing keys live in ``--keys`` / ``TOKEN_GUARD_KEYS``,
by default next to a SQLite store (``tokens.db`` -> ``tokens.keys``). Output is a table for
people, JSON with ``--json``. Exit status: 0 ok, 1 refused or not found, 2 usage error.
A secret (token or client) is printed once, at creation, and never again.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

from token_guard import stores
from token_guard.errors import (
    ConfigurationError,
    InvalidTokenSpec,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from token_guard.management.oauth import (
    DEFAULT_TOKEN_LIFETIME,
    SCOPES,
    ExternalIssuer,
    SigningKeys,
    create_client,
    revoke_client,
)
from token_guard.records import AuditEntry, OAuthClient, TokenRecord
from token_guard.spec import format_datetime
from token_guard.stores.base import TokenStore

__all__ = ["build_parser", "main", "open_store", "parse_expires"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
DEFAULT_STORE = "sqlite:///tokens.db"
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class UsageError(Exception):
    """A wrong flag or argument: exit 2 with the message."""


class Refused(Exception):
    """Not found or refused: exit 1 with the message."""


# -- store and keys --------------------------------------------------------------------------


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


def _run_with_store(
    args: argparse.Namespace, work: Callable[[TokenStore], Awaitable[int]]
) -> int:
    async def go() -> int:
        store = open_store(args.store)
        try:
            await store.open()
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


# -- output ----------------------------------------------------------------------------------


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    body = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join([line, *body])


def _when(value: datetime | None) -> str:
    return format_datetime(value) or "-"


def _token_rows(records: Sequence[TokenRecord], now: datetime) -> str:
    rows = [
        [r.id, r.name or "-", ",".join(r.allowed_apis), str(len(r.grants)), r.state(now),
         _when(r.expiration_date)]
        for r in records
    ]
    return _table(rows, ["ID", "NAME", "APIS", "GRANTS", "STATE", "EXPIRES"])


def _token_detail(record: TokenRecord, now: datetime) -> str:
    lines = [
        f"id:          {record.id}",
        f"name:        {record.name or '-'}",
        f"state:       {record.state(now)}",
        f"apis:        {', '.join(record.allowed_apis)}",
        f"referers:    {', '.join(record.referers) or '(any website)'}",
        f"expires:     {_when(record.expiration_date)}",
        f"created:     {_when(record.created_at)}",
        f"last used:   {_when(record.last_used_at)}",
        f"revoked:     {_when(record.revoked_at)}",
        "grants:" if record.grants else "grants:      (none)",
    ]
    lines += [f"  {g.connection_name}: {g.source}" for g in record.grants]
    return "\n".join(lines)


def _client_json(client: OAuthClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id, "name": client.name, "scopes": list(client.scopes),
        "created_at": format_datetime(client.created_at),
        "revoked_at": format_datetime(client.revoked_at),
    }


def _audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "at": format_datetime(entry.at), "actor": entry.actor,
        "action": entry.action, "token_id": entry.token_id, "detail": entry.detail,
    }


# -- token bodies from flags -----------------------------------------------------------------


def parse_expires(text: str, now: datetime | None = None) -> str:
    """``30d`` / ``12h`` / ``2w`` / ``90m`` / ``1d12h`` from now, or an ISO 8601 date-time."""
    at = now or datetime.now(UTC)
    compact = text.strip().lower().replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(compact))
        if seconds <= 0:
            raise UsageError(f"--expires {text!r} is not in the future; e.g. --expires 30d")
        return format_datetime((at + timedelta(seconds=seconds)).replace(microsecond=0)) or ""
    return text.strip()


def _grant(text: str) -> dict[str, str]:
    conn, sep, source = text.partition(":")
    if not sep or not conn.strip() or not source.strip():
        raise UsageError(
            f"--grant {text!r} needs CONNECTION:SOURCE, e.g. --grant carto_dw:proj.dataset.*"
        )
    return {"connection_name": conn.strip(), "source": source.strip()}


def _read_body_file(path: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"--body {path}: {exc.strerror}") from None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--body {path} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--body {path} must hold a JSON object with the token's fields")
    return body


def _body_from_flags(args: argparse.Namespace, *, creating: bool) -> dict[str, Any]:
    body = _read_body_file(args.body) if args.body else {}
    if args.name is not None:
        body["name"] = args.name
    if args.api:
        body["allowed_apis"] = [a for item in args.api for a in item.split(",") if a]
    if args.grant:
        body["grants"] = [_grant(g) for g in args.grant]
    if args.referer:
        body["referers"] = list(args.referer)
    if getattr(args, "no_referers", False):
        body["referers"] = []
    if creating and args.expires:
        body["expiration_date"] = parse_expires(args.expires)
    return body


# -- commands --------------------------------------------------------------------------------


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """``tokens create``."""
    body = _body_from_flags(args, creating=True)

    async def work(store: TokenStore) -> int:
        issued = await store.create_token(body, actor=actor())
        now = datetime.now(UTC)
        warnings = issued.record.spec.warnings()
        if args.json:
            _print_json({**issued.record.as_json(now), "token": issued.token,
                         "warnings": warnings})
        else:
            print(_token_detail(issued.record, now))
            print(f"\ntoken:       {issued.token}")
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
        print(
            "warning: this is the only time the token secret is shown; store it now "
            "(a lost secret cannot be recovered: create a new token and revoke this one)",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """``tokens list``."""

    async def work(store: TokenStore) -> int:
        records: list[TokenRecord] = []
        after = args.after
        nxt: str | None = None
        while True:
            page = list(await store.list_tokens(limit=args.limit + 1, after=after))
            more = len(page) > args.limit
            page = page[: args.limit]
            records += page
            nxt = page[-1].id if more and page else None
            if not (args.all and nxt):
                break
            after = nxt
        now = datetime.now(UTC)
        if args.json:
            _print_json({"tokens": [r.as_json(now) for r in records], "next": nxt})
        else:
            print(_token_rows(records, now))
            if nxt:
                print(f"(more: --after {nxt}, or --all)", file=sys.stderr)
        return EXIT_OK

    return _run_with_store(args, work)


async def _require_token(store: TokenStore, token_id: str) -> TokenRecord:
    record = await store.get_token(token_id)
    if record is None:
        raise Refused(f"no token has id {token_id!r}; 'token-guard tokens list' shows the ids")
    return record


def _show_record(args: argparse.Namespace, record: TokenRecord) -> None:
    now = datetime.now(UTC)
    if args.json:
        _print_json(record.as_json(now))
    else:
        print(_token_detail(record, now))


def cmd_tokens_show(args: argparse.Namespace) -> int:
    """``tokens show ID``."""

    async def work(store: TokenStore) -> int:
        _show_record(args, await _require_token(store, args.id))
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_tokens_update(args: argparse.Namespace) -> int:
    """``tokens update ID``: only the given fields change."""
    if args.expires:
        raise UsageError(
            "--expires is set only at creation; create a new token and revoke this one"
        )
    body = _body_from_flags(args, creating=False)
    if not body:
        raise UsageError("nothing to change: give --name, --api, --grant, --referer or --body")

    async def work(store: TokenStore) -> int:
        await _require_token(store, args.id)
        _show_record(args, await store.update_token(args.id, body, actor=actor()))
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    """``tokens revoke ID``."""

    async def work(store: TokenStore) -> int:
        await _require_token(store, args.id)
        _show_record(args, await store.revoke_token(args.id, actor=actor()))
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_clients_create(args: argparse.Namespace) -> int:
    """``clients create --name N --scope S``."""
    if not args.scope:
        raise UsageError(f"give at least one --scope: {' or '.join(SCOPES)}")

    async def work(store: TokenStore) -> int:
        try:
            client, secret = await create_client(store, args.name, args.scope, actor=actor())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            _print_json({**_client_json(client), "client_secret": secret})
        else:
            print(f"client_id:     {client.client_id}")
            print(f"client_secret: {secret}")
            print(f"scopes:        {' '.join(client.scopes)}")
        print(
            "warning: this is the only time the client secret is shown; store it now",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_clients_list(args: argparse.Namespace) -> int:
    """``clients list``."""

    async def work(store: TokenStore) -> int:
        clients = list(await store.list_clients())
        if args.json:
            _print_json({"clients": [_client_json(c) for c in clients]})
        else:
            rows = [
                [c.client_id, c.name, " ".join(c.scopes),
                 "revoked" if c.revoked_at else "active", _when(c.created_at)]
                for c in clients
            ]
            print(_table(rows, ["CLIENT_ID", "NAME", "SCOPES", "STATE", "CREATED"]))
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_clients_revoke(args: argparse.Namespace) -> int:
    """``clients revoke ID``."""

    async def work(store: TokenStore) -> int:
        try:
            client = await revoke_client(store, args.id, actor=actor())
        except NotFound:
            raise Refused(
                f"no OAuth client has id {args.id!r}; 'token-guard clients list' shows them"
            ) from None
        if args.json:
            _print_json(_client_json(client))
        else:
            print(f"revoked {client.client_id} ({client.name}); its access tokens stop working")
        return EXIT_OK

    return _run_with_store(args, work)


def cmd_audit(args: argparse.Namespace) -> int:
    """``audit``: newest first."""

    async def work(store: TokenStore) -> int:
        entries = list(await store.list_audit(limit=args.limit, before=args.before))
        if args.json:
            _print_json({"entries": [_audit_json(e) for e in entries]})
        else:
            rows = [
                [str(e.id), _when(e.at), e.actor, e.action, e.token_id or "-",
                 json.dumps(e.detail, ensure_ascii=False) if e.detail else ""]
                for e in entries
            ]
            print(_table(rows, ["ID", "AT", "ACTOR", "ACTION", "TOKEN", "DETAIL"]))
        return EXIT_OK

    return _run_with_store(args, work)


def _keys_path(args: argparse.Namespace) -> Path:
    return Path(args.keys) if args.keys else default_key_path(args.store)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """``keys rotate``: a new signing key; the old one verifies until its tokens expire."""
    path = _keys_path(args)
    existed = path.exists()
    ring = SigningKeys.open(path)
    new = ring.active if not existed else ring.rotate(token_lifetime=args.token_lifetime)

    async def work(store: TokenStore) -> int:
        await store.add_audit(actor(), "keys.rotate", None, {"kid": new.kid, "file": str(path)})
        return EXIT_OK

    _run_with_store(args, work)
    if args.json:
        _print_json({"kid": new.kid, "file": str(path), "keys": _key_rows_json(ring)})
    else:
        print(f"active key {new.kid} in {path}")
    return EXIT_OK


def _key_rows_json(ring: SigningKeys) -> list[dict[str, Any]]:
    return [
        {"kid": k.kid, "created_at": format_datetime(k.created_at),
         "retired_at": format_datetime(k.retired_at),
         "verify_until": format_datetime(k.verify_until)}
        for k in ring.keys
    ]


def cmd_keys_list(args: argparse.Namespace) -> int:
    """``keys list``: kids and their windows (never the private keys)."""
    ring = SigningKeys.open(_keys_path(args), create=False)
    rows = _key_rows_json(ring)
    if args.json:
        _print_json({"keys": rows})
    else:
        print(_table(
            [[r["kid"], r["created_at"] or "-", "retired" if r["retired_at"] else "active",
              r["verify_until"] or "-"] for r in rows],
            ["KID", "CREATED", "STATE", "VERIFIES UNTIL"],
        ))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: the Tokens API and the OAuth endpoint under uvicorn."""
    import uvicorn

    from token_guard.management.app import create_management_app

    externals = [ExternalIssuer(url, iss, aud) for url, iss, aud in args.external_issuer or []]
    issuer = args.issuer or f"http://{args.host}:{args.port}"
    keys = SigningKeys.open(_keys_path(args))

    async def go() -> int:
        store = open_store(args.store)
        await store.open()
        try:
            app = create_management_app(
                store, issuer=issuer, audience=args.audience, keys=keys,
                external_issuers=externals, token_lifetime=args.token_lifetime,
            )
            config = uvicorn.Config(
                app, host=args.host, port=args.port, log_level=args.log_level, lifespan="off"
            )
            print(
                f"token-guard: Tokens API on http://{args.host}:{args.port} "
                f"(issuer {issuer}, audience {args.audience}, keys {keys.path})",
                file=sys.stderr, flush=True,
            )
            await uvicorn.Server(config).serve()
        finally:
            await store.close()
        return EXIT_OK

    return asyncio.run(go())


def _connections(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, dialect = item.partition("=")
        if not sep or not name or not dialect:
            raise UsageError(f"--connection {item!r} needs NAME=DIALECT, e.g. carto_dw=bigquery")
        out[name] = dialect
    return out


def cmd_check(args: argparse.Namespace) -> int:
    """``check TOKEN METHOD URL``: what the guard would decide, and why."""
    from token_guard.decision import Denial
    from token_guard.guard import Guard, Pending

    parts = urlsplit(args.url)
    raw_path = (parts.path or "/").encode("utf-8")
    query = parts.query.encode("utf-8")
    body_bytes = args.data.encode("utf-8") if args.data else b""
    connections = _connections(args.connection or [])
    assumed: list[str] = []

    async def work(store: TokenStore) -> int:
        if not connections:
            # Without --connection, every connection the token names is taken as BigQuery
            # (CARTO's data warehouse default); the output says so.
            from token_guard.secret import hash_secret

            record = await store.get_by_secret_hash(hash_secret(args.token))
            for g in record.grants if record is not None else ():
                if g.connection_name not in connections:
                    connections[g.connection_name] = "bigquery"
                    assumed.append(g.connection_name)
        guard = Guard(store=store, connections=connections)
        try:
            started = guard.begin(
                args.method.upper(), raw_path, query, b"Bearer " + args.token.encode("utf-8"),
                args.origin, args.referer,
            )
            facts: Any = None
            record_out: TokenRecord | None = None
            outcome: Any
            if isinstance(started, Denial):
                outcome = started
            elif not isinstance(started, Pending):
                outcome = None  # outside the protected prefix: passes untouched
            else:
                body = guard.parse_body(body_bytes)
                facts = body if isinstance(body, Denial) else guard.facts(started, body)
                if isinstance(facts, Denial):
                    outcome, facts = facts, None
                else:
                    compiled = await guard.resolver.resolve(started.token)
                    if isinstance(compiled, Denial):
                        outcome = compiled
                    else:
                        record_out = compiled.record
                        now = datetime.now(UTC).timestamp()
                        outcome = guard.policy.decide(compiled, facts, now) or "allowed"
        finally:
            await guard.resolver.close()
        _report_check(args, outcome, facts, record_out, assumed)
        return EXIT_OK if outcome in ("allowed", None) else EXIT_REFUSED

    return _run_with_store(args, work)


def _report_check(
    args: argparse.Namespace, outcome: Any, facts: Any, record: TokenRecord | None,
    assumed: Sequence[str],
) -> None:
    from token_guard.decision import Denial

    facts_json = None
    if facts is not None:
        facts_json = {
            "api": facts.api, "connection": facts.connection,
            "sources": [{"kind": s.kind, "value": s.value} for s in facts.sources],
            "origin": facts.origin, "referer": facts.referer,
        }
    token_json = {"id": record.id, "name": record.name} if record is not None else None
    if isinstance(outcome, Denial):
        result: dict[str, Any] = {"decision": "denied", "status": outcome.status,
                                  "code": outcome.code, "reason": outcome.message,
                                  "hint": outcome.hint}
    elif outcome is None:
        result = {"decision": "not_guarded",
                  "reason": "the path is outside the protected prefix (/v3/); the guard "
                            "passes it to the app untouched"}
    else:
        result = {"decision": "allowed", "status": 200, "reason": "every check passed"}
    result.update({"request": facts_json, "token": token_json,
                   "assumed_bigquery": list(assumed)})
    if args.json:
        _print_json(result)
        return
    head = result["decision"].upper()
    if "status" in result:
        head += f" ({result['status']}{' ' + result['code'] if 'code' in result else ''})"
    print(head)
    print(f"reason:  {result['reason']}")
    if result.get("hint"):
        print(f"hint:    {result['hint']}")
    if token_json:
        print(f"token:   {token_json['id']} ({token_json['name'] or 'no name'})")
    if facts_json:
        print(f"api:     {facts_json['api']}   connection: {facts_json['connection'] or '-'}")
        for s in facts_json["sources"]:
            print(f"source:  {s['kind']}: {s['value']}")
        print(f"origin:  {facts_json['origin'] or '-'}   referer: {facts_json['referer'] or '-'}")
    if assumed:
        print(
            f"note:    connections {', '.join(assumed)} were assumed to be BigQuery; "
            "pass --connection NAME=DIALECT to say otherwise", file=sys.stderr,
        )


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


# -- parser ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--store", default=None,
        help="sqlite:///tokens.db, a file path or postgresql://... "
             "(default: $TOKEN_GUARD_STORE, else sqlite:///tokens.db)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def _token_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="a name for people")
    p.add_argument("--api", action="append", metavar="API",
                   help="maps, sql, lds or imports (repeat or comma-separate)")
    p.add_argument("--grant", action="append", metavar="CONN:SOURCE",
                   help="e.g. carto_dw:proj.dataset.* (repeat; replaces all grants)")
    p.add_argument("--referer", action="append", metavar="ORIGIN",
                   help="e.g. 'https://*.example.com' (repeat)")
    p.add_argument("--expires", help="30d, 12h, 2w or an ISO date-time (creation only)")
    p.add_argument("--body", metavar="FILE", help="Tokens API JSON body ('-' for stdin)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every command."""
    common = _common()
    parser = _Parser(prog="token-guard", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tokens = sub.add_parser("tokens", help="API access tokens")
    tsub = tokens.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = tsub.add_parser("create", parents=[common], help="create a token (secret shown once)")
    _token_flags(p)
    p.set_defaults(func=cmd_tokens_create)
    p = tsub.add_parser("list", parents=[common], help="list tokens (never secrets)")
    p.add_argument("--limit", type=int, default=100, choices=range(1, 501), metavar="1..500")
    p.add_argument("--after", help="the id to continue after")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.set_defaults(func=cmd_tokens_list)
    p = tsub.add_parser("show", parents=[common], help="show one token")
    p.add_argument("id")
    p.set_defaults(func=cmd_tokens_show)
    p = tsub.add_parser("update", parents=[common], help="change name, APIs, grants, referers")
    p.add_argument("id")
    _token_flags(p)
    p.add_argument("--no-referers", action="store_true", help="allow any website")
    p.set_defaults(func=cmd_tokens_update)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a token")
    p.add_argument("id")
    p.set_defaults(func=cmd_tokens_revoke)

    clients = sub.add_parser("clients", help="OAuth clients of the Tokens API")
    csub = clients.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = csub.add_parser("create", parents=[common], help="create a client (secret shown once)")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", action="append", choices=SCOPES)
    p.set_defaults(func=cmd_clients_create)
    p = csub.add_parser("list", parents=[common], help="list clients")
    p.set_defaults(func=cmd_clients_list)
    p = csub.add_parser("revoke", parents=[common], help="revoke a client")
    p.add_argument("id")
    p.set_defaults(func=cmd_clients_revoke)

    keys = sub.add_parser("keys", help="OAuth signing keys")
    ksub = keys.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, func, text in (("rotate", cmd_keys_rotate, "add a new signing key"),
                             ("list", cmd_keys_list, "list signing keys")):
        p = ksub.add_parser(name, parents=[common], help=text)
        p.add_argument("--keys", help="key file (default: $TOKEN_GUARD_KEYS or next to the store)")
        p.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME,
                       help="seconds an access token lives (old keys verify this long)")
        p.set_defaults(func=func)

    p = sub.add_parser("audit", parents=[common], help="the management audit log")
    p.add_argument("--limit", type=int, default=100, choices=range(1, 501), metavar="1..500")
    p.add_argument("--before", type=int, help="entries with an id below this")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("check", parents=[common], help="would the guard allow this request?")
    p.add_argument("token", help="the API access token (tgk_...)")
    p.add_argument("method", help="GET, POST, ...")
    p.add_argument("url", help="e.g. https://api.example.com/v3/maps/carto_dw/table?name=...")
    p.add_argument("--origin", help="the Origin header a browser would send")
    p.add_argument("--referer", help="the Referer header")
    p.add_argument("--data", help="the JSON body of a POST")
    p.add_argument("--connection", action="append", metavar="NAME=DIALECT",
                   help="e.g. carto_dw=bigquery (repeat)")
    p.set_defaults(func=cmd_check)

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
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the demo data API", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 refused/not found, 2 usage)."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["demo"]:
        # Everything after 'demo' belongs to the demo's own parser (including --help).
        return cmd_demo(argparse.Namespace(demo_args=given[1:]))
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
    except (Refused, NotFound) as exc:
        print(f"token-guard: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigurationError as exc:
        print(f"token-guard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"token-guard: the store cannot answer: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except StoreError as exc:
        print(f"token-guard: store error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

