"""What a request asks for, as the guard sees it: API, connection, data sources, origin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

API_NAMES: frozenset[str] = frozenset({"maps", "sql", "lds", "imports"})

SourceKind = Literal["table", "tileset", "query"]


@dataclass(frozen=True, slots=True)
class Source:
    """One data source a request reads: a table/tileset name, or a SQL query text.

    For ``query`` sources, ``value`` is the query text as sent; query parameters are bound
    values and are not part of what is authorised.
    """

    kind: SourceKind
    value: str


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything the policy needs about one request, extracted without I/O."""

    api: str
    connection: str | None
    sources: tuple[Source, ...]
    origin: str | None = None
    referer: str | None = None
