"""The demo's own tokens: made on first start, kept in ``demo-secrets.json``, shown as curl.

The store keeps only hashes of secrets, so the demo keeps its *own* secrets in
``<data-dir>/demo-secrets.json`` (mode 0600) to print the same ready-to-paste ``curl`` lines
on every start. That file is a convenience for a demo on one machine: a real deployment never
writes secrets to disk like this (they are shown once, at creation, and the holder keeps them).

When the file is missing, unreadable, or no longer matches ``tokens.db`` (a token was deleted,
revoked, or the database was replaced), a fresh set of demo tokens and a fresh OAuth client are
created and the file is rewritten; earlier demo tokens stay in the store as they were.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from token_guard.core import decision as codes
from token_guard.core.secret import hash_secret
from token_guard.demo.app import CONNECTION_NAME
from token_guard.management.clients import (
    READ_SCOPE,
    WRITE_SCOPE,
    create_client,
    hash_client_secret,
)
from token_guard.stores.base import TokenStore

SECRETS_FILE = "demo-secrets.json"
TOKENS_DB = "tokens.db"
KEYS_FILE = "tokens.keys"
SECRETS_VERSION = 1
ACTOR = "demo"
BROWSER_REFERER = "http://localhost:*"
_WARNING = (
    "DEMO ONLY: secrets of the token_guard demo's own tokens, kept so 'token-guard demo' can "
    "print the same curl lines on every start. Never keep real secrets like this. Delete this "
    "file to get fresh demo tokens."
)


@dataclass(frozen=True, slots=True)
class DemoTokenPlan:
    """One demo token: its key in the secrets file, the Tokens API body, and whether to revoke."""

    key: str
    body: Mapping[str, Any]
    revoked: bool = False


def _grants(*sources: str) -> list[dict[str, str]]:
    return [{"connection_name": CONNECTION_NAME, "source": s} for s in sources]


PLANS: tuple[DemoTokenPlan, ...] = (
    DemoTokenPlan("full", {
        "name": "demo: full access to the demo connection",
        "grants": _grants("*"), "allowed_apis": ["sql", "maps", "lds"], "referers": [],
    }),
    DemoTokenPlan("maps_stores", {
        "name": "demo: Maps API, table stores only",
        "grants": _grants("stores"), "allowed_apis": ["maps"], "referers": [],
    }),
    DemoTokenPlan("browser", {
        "name": f"demo: browser token for {BROWSER_REFERER}",
        "grants": _grants("stores", "cities"), "allowed_apis": ["sql", "maps"],
        "referers": [BROWSER_REFERER],
    }),
    DemoTokenPlan("revoked", {
        "name": "demo: revoked",
        "grants": _grants("stores"), "allowed_apis": ["sql"], "referers": [],
    }, revoked=True),
)
CLIENT_NAME = "demo: management client"
CLIENT_SCOPES: tuple[str, ...] = (READ_SCOPE, WRITE_SCOPE)


@dataclass(frozen=True, slots=True)
class DemoToken:
    """A demo token's public id and its secret."""

    id: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DemoSecrets:
    """Everything the demo prints: its tokens by key, and its OAuth client's credentials."""

    tokens: Mapping[str, DemoToken]
    client_id: str
    client_secret: str = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        """The content of ``demo-secrets.json``."""
        return {
            "warning": _WARNING,
            "version": SECRETS_VERSION,
            "tokens": {k: {"id": t.id, "token": t.token} for k, t in self.tokens.items()},
            "oauth_client": {"client_id": self.client_id, "client_secret": self.client_secret,
                             "scopes": list(CLIENT_SCOPES)},
        }


def read_secrets(path: Path) -> DemoSecrets | None:
    """The secrets file at ``path``, or None when it is missing or not in the expected shape."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["version"] != SECRETS_VERSION:
            return None
        tokens = {k: DemoToken(str(v["id"]), str(v["token"])) for k, v in data["tokens"].items()}
        client = data["oauth_client"]
        return DemoSecrets(tokens, str(client["client_id"]), str(client["client_secret"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_secrets(path: Path, secrets: DemoSecrets) -> None:
    """Write ``secrets`` to ``path`` atomically, readable by this user only (0600)."""
    fd, tmp = tempfile.mkstemp(prefix=".demo-secrets.", dir=path.parent)
    try:
        # mkstemp creates the file 0600 already; fchmod states it and survives odd umasks.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(secrets.as_json(), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def matches_store(store: TokenStore, secrets: DemoSecrets) -> bool:
    """Whether every secret still names its token (same id, same revoked state) and client."""
    for plan in PLANS:
        known = secrets.tokens.get(plan.key)
        if known is None:
            return False
        record = await store.get_by_secret_hash(hash_secret(known.token))
        if record is None or record.id != known.id:
            return False
        if (record.revoked_at is not None) != plan.revoked:
            return False
    found = await store.get_client(secrets.client_id)
    if found is None:
        return False
    client, stored_hash = found
    return client.revoked_at is None and stored_hash == hash_client_secret(secrets.client_secret)


async def create_demo_secrets(store: TokenStore) -> DemoSecrets:
    """Create the demo tokens (revoking the one meant to show a revocation) and OAuth client."""
    tokens: dict[str, DemoToken] = {}
    for plan in PLANS:
        issued = await store.create_token(plan.body, actor=ACTOR)
        if plan.revoked:
            await store.revoke_token(issued.id, actor=ACTOR)
        tokens[plan.key] = DemoToken(issued.id, issued.token)
    client, secret = await create_client(store, CLIENT_NAME, CLIENT_SCOPES, actor=ACTOR)
    return DemoSecrets(tokens, client.client_id, secret)


@dataclass(frozen=True, slots=True)
class Prepared:
    """The demo's secrets and whether this start created them."""

    secrets: DemoSecrets
    created: bool


async def reconcile(store: TokenStore, known: DemoSecrets | None) -> Prepared:
    """Keep ``known`` if it matches ``store``; otherwise create fresh demo secrets (not saved)."""
    if known is not None and await matches_store(store, known):
        return Prepared(known, created=False)
    return Prepared(await create_demo_secrets(store), created=True)


def save(path: Path, prepared: Prepared) -> None:
    """Write fresh secrets to ``path``; for reused ones, make sure the file is 0600."""
    if prepared.created:
        write_secrets(path, prepared.secrets)
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)


# --- the walkthrough: curl lines ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    """One step of the walkthrough: what it shows, the expected answer, and shell lines."""

    title: str
    status: int
    code: str | None
    lines: tuple[str, ...]

    def expectation(self) -> str:
        """``expect 200`` or ``expect 403 api_not_allowed``."""
        return f"expect {self.status}" + (f" {self.code}" if self.code else "")


def _curl(url: str, *headers: str, **params: str) -> str:
    # Readable SQL in the line: curl URL-encodes it (-G puts it in the query string).
    parts = ["curl", "-sS"]
    plain: dict[str, str] = {}
    for key, value in params.items():
        if value.replace("_", "").isalnum():
            plain[key] = value
        else:
            parts += ["-G", "--data-urlencode", shlex.quote(f"{key}={value}")]
    for header in headers:
        parts += ["-H", shlex.quote(header)]
    if plain:
        url = f"{url}?{urlencode(plain)}"
    return " ".join([*parts, shlex.quote(url)])


def _bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


def _mistyped(token: str) -> str:
    # One changed character breaks the checksum: refused before any store lookup.
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def examples(base: str, secrets: DemoSecrets) -> tuple[Example, ...]:
    """The walkthrough for a demo listening at ``base`` (e.g. ``http://127.0.0.1:8000``)."""
    full = secrets.tokens["full"].token
    maps = secrets.tokens["maps_stores"].token
    browser = secrets.tokens["browser"].token
    revoked = secrets.tokens["revoked"].token
    sql = f"{base}/v3/sql/{CONNECTION_NAME}/query"
    table = f"{base}/v3/maps/{CONNECTION_NAME}/table"
    top_stores = "SELECT name, storetype, revenue FROM stores ORDER BY revenue DESC LIMIT 3"
    big_cities = "SELECT name, country, population FROM cities ORDER BY population DESC LIMIT 3"
    oauth = (
        f"ACCESS=$(curl -sS -u {shlex.quote(f'{secrets.client_id}:{secrets.client_secret}')} "
        f"-d grant_type=client_credentials {shlex.quote(base + '/oauth/token')} "
        "| python3 -c 'import json, sys; print(json.load(sys.stdin)[\"access_token\"])')"
    )
    return (
        Example("allowed: the full-access token runs a query on the SQL API", 200, None,
                (_curl(sql, _bearer(full), q=top_stores),)),
        Example("allowed: the maps-only token instantiates a map of table stores", 200, None,
                (_curl(table, _bearer(maps), name="stores"),)),
        Example(f"allowed: the browser token from a website it allows ({BROWSER_REFERER})",
                200, None, (_curl(sql, _bearer(browser), "Origin: http://localhost:3000",
                                  q=big_cities),)),
        Example("refused: no token", 401, codes.MISSING_TOKEN, (_curl(sql, q=top_stores),)),
        Example("refused: a mistyped token, caught by its checksum before any lookup", 401,
                codes.MALFORMED_TOKEN, (_curl(sql, _bearer(_mistyped(full)), q=top_stores),)),
        Example("refused: the maps-only token on the SQL API", 403, codes.API_NOT_ALLOWED,
                (_curl(sql, _bearer(maps), q=top_stores),)),
        Example("refused: the maps-only token on a table it was not granted", 403,
                codes.SOURCE_NOT_GRANTED, (_curl(table, _bearer(maps), name="customers"),)),
        Example("refused: the browser token from a website it does not allow", 403,
                codes.ORIGIN_NOT_ALLOWED,
                (_curl(sql, _bearer(browser), "Origin: https://evil.example", q=big_cities),)),
        Example("refused: a revoked token", 401, codes.REVOKED_TOKEN,
                (_curl(sql, _bearer(revoked), q=top_stores),)),
        Example("Tokens API: an OAuth access token for the demo client, then list the tokens",
                200, None,
                (oauth, f'curl -sS -H "Authorization: Bearer $ACCESS" '
                        f"{shlex.quote(base + '/v3/tokens')}")),
    )


CONFIG_FILE = "token_guard.toml"
"""The demo's configuration file in its data directory, read by the demo and the CLI."""

CONFIG_TEXT = f"""\
# token_guard demo configuration. The demo server reads it, and so does the CLI, so that
# 'token-guard check --config THIS_FILE' decides exactly as the demo's API does and
# 'token-guard tokens create --config THIS_FILE' refuses grants the API could never serve.
store = "sqlite:///{TOKENS_DB}"   # relative to this file

[connections]
{CONNECTION_NAME} = "sqlite"
"""


def write_config(data_dir: Path) -> Path:
    """``<data_dir>/token_guard.toml``, written if missing (a user's edits are kept)."""
    path = data_dir / CONFIG_FILE
    if not path.exists():
        path.write_text(CONFIG_TEXT, "utf-8")
    return path


def render(base: str, data_dir: Path, secrets: Prepared, *,
           extra_links: Sequence[tuple[str, str]] = ()) -> str:
    """The text ``token-guard demo`` prints at start: tokens, links and the curl walkthrough."""
    s = secrets.secrets
    origin = "created now" if secrets.created else "reused"
    store_url = f"sqlite:///{(data_dir / TOKENS_DB).resolve()}"
    out = [
        f"token_guard demo: a CARTO-style API on {base}/v3/ behind TokenGuard",
        f"Demo tokens ({origin}; secrets in {data_dir / SECRETS_FILE}, demo only):",
    ]
    for plan in PLANS:
        t = s.tokens[plan.key]
        out.append(f"  {plan.key:<12} {t.id}  {t.token}  ({plan.body['name']})")
    out.append(f"  OAuth client {s.client_id} with {' '.join(CLIENT_SCOPES)} "
               "(secret in the file above)")
    out.append("Links:")
    out.append(f"  OpenAPI of the Tokens API   {base}/openapi.json")
    for label, url in extra_links:
        out.append(f"  {label:<27} {url}")
    out.append(f"  CLI on the same store       token-guard tokens list --store "
               f"{shlex.quote(store_url)}")
    config = shlex.quote(str(data_dir / CONFIG_FILE))
    maps = s.tokens["maps_stores"].token
    out.append(f"  Why refused? (same config)  echo {maps} | token-guard check --config "
               f"{config} GET {shlex.quote(base + f'/v3/sql/{CONNECTION_NAME}/query?q=SELECT 1')}")
    out.append("Try it (paste into a shell):")
    for example in examples(base, s):
        out.append(f"  # {example.title} ({example.expectation()})")
        out.extend(f"  {line}" for line in example.lines)
    out.append("Ctrl-C stops the demo.")
    return "\n".join(out)
