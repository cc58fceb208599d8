"""What a request asks for, as the guard sees it: API, connection, data sources, origin."""

from __future__ import annotations

from typing import Literal, NamedTuple

API_NAMES: frozenset[str] = frozenset({"maps", "sql", "lds", "imports"})

SourceKind = Literal["table", "tileset", "query"]


class Source(NamedTuple):
    """One data source a request reads: a table/tileset name, or a SQL query text.

    For ``query`` sources, ``value`` is the query text as sent; query parameters are bound
    values and are not part of what is authorised.
    """

    kind: SourceKind
    value: str


class RequestFacts(NamedTuple):
    """Everything the policy needs about one request, extracted without I/O.

    A named tuple, like ``Source``: immutable and hashable, and built at C speed on every
    request (a frozen dataclass's ``__init__`` costs several times more).
    """

    api: str
    connection: str | None
    sources: tuple[Source, ...]
    origin: str | None = None
    referer: str | None = None
