"""Store URLs, parsed in one place: ``--store``, ``TOKEN_GUARD_STORE``, ``open_store``.

Accepted forms:

* ``sqlite:///relative/tokens.db`` and ``sqlite:////absolute/tokens.db``; the path is
  percent-decoded (``sqlite:///my%20tokens.db`` is the file ``my tokens.db``), as in
  SQLAlchemy's URLs. ``sqlite:///:memory:`` is an in-memory database.
* a bare path (``tokens.db``, ``/var/lib/app/tokens.db``): a SQLite file, as people type
  it; it is taken literally, with no decoding.
* ``postgresql://...`` or ``postgres://...``: passed on to libpq unchanged (it does its
  own decoding of user, password and options).

Anything else is refused with a message saying what to write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from token_guard.core.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "ENV_VAR", "StoreURL", "parse_store_url"]

ENV_VAR = "TOKEN_GUARD_STORE"
DEFAULT_URL = "sqlite:///tokens.db"

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


@dataclass(frozen=True, slots=True)
class StoreURL:
    """Which store a URL names: ``kind`` and its ``target`` (a file path, or a libpq DSN)."""

    kind: Literal["sqlite", "postgresql"]
    target: str


def parse_store_url(
    url: str | None = None,
    *,
    default: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StoreURL:
    """The store ``url`` names; without it ``$TOKEN_GUARD_STORE``, else ``default``."""
    env = os.environ if environ is None else environ
    url = url or env.get(ENV_VAR) or default
    if not url:
        raise ConfigurationError(
            f"store: none configured; pass a URL or set {ENV_VAR}, e.g. "
            "sqlite:///tokens.db or postgresql://user@host:5432/db"
        )
    if "://" not in url:
        return StoreURL("sqlite", url)  # a bare path
    scheme = urlsplit(url).scheme.lower()
    if scheme in _POSTGRES_SCHEMES:
        return StoreURL("postgresql", url)
    if scheme == "sqlite":
        prefix = "sqlite:///"
        path = unquote(url[len(prefix) :]) if url.lower().startswith(prefix) else ""
        if not path:
            raise ConfigurationError(
                f"store: sqlite URL {url!r} names no file; write sqlite:///tokens.db "
                "(relative) or sqlite:////abs/path/tokens.db"
            )
        return StoreURL("sqlite", path)
    raise ConfigurationError(
        f"store: unknown URL scheme {scheme or '(none)'!r}; use sqlite:///path or "
        "postgresql://user@host:5432/db"
    )
