"""The decision: may this compiled token make this request? Pure: no I/O, no framework.

A token is compiled once per cache fill (``Policy.compile``): grants become per-connection
sets of normalised table keys, wildcard prefixes and query fingerprints, so a decision is a
handful of set lookups however many grants a token has. ``Policy.decide`` then checks, in
order: expiry, API, website, connection, and every data source the request reads.

Security choices (fail closed):
- a request naming a connection the guard was not configured with is refused: without a
  dialect, names cannot be compared;
- a wildcard ``proj.ds.*`` covers the tables directly in ``proj.ds``, nothing deeper;
- catalog views (INFORMATION_SCHEMA) need an exact grant: neither a wildcard nor ``*``
  covers them;
- a grant the guard cannot parse, analyse or compile for its connection grants nothing
  (logged once, as a warning naming the token id, never the secret); the token's other
  grants keep working, so one bad query grant never turns the token into a 401;
- a query that matches a granted query must still pass the SQL safety checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from token_guard.core import decision as codes
from token_guard.core.connections import Connection, normalize_connections
from token_guard.core.decision import Denial
from token_guard.core.errors import InvalidTokenSpec, did_you_mean
from token_guard.core.facts import RequestFacts, Source
from token_guard.core.limits import LimitRule
from token_guard.core.origins import OriginMatcher, RequestSite, read_site
from token_guard.core.records import TokenRecord
from token_guard.core.spec import Grant
from token_guard.core.sql import SqlAnalyzer, SqlRefusal, is_system_table

log = logging.getLogger("token_guard.core.policy")
_T = TypeVar("_T")

_EMPTY_KEYS: frozenset[tuple[str, ...]] = frozenset()
_EMPTY_TEXTS: frozenset[str] = frozenset()
SOURCES_MEMO_SIZE = 65_536
"""Remembered answers per (compiled grants, source): one dict for every token, cleared when
full. Tokens with equal grants on a connection share one ``ConnectionGrants`` (interned)."""
DECISIONS_MEMO_SIZE = 16_384
"""Remembered answers per (compiled token, facts object, headers' reading), all tokens;
cleared when full. An entry keeps the objects, so an ``id`` reused later never matches."""
SITES_MEMO_SIZE = 4096
"""Remembered readings of (Origin, Referer) header pairs, for every token; cleared when full."""
_CHECKED_MAX_VALUE = 2048  # longer source values (big queries) are not remembered
_MATCHERS_SIZE = 10_000  # distinct referer lists whose matcher is shared

_EXPIRED = Denial(
    401,
    codes.EXPIRED_TOKEN,
    "The API access token has expired.",
    "Create a new token (an expiration date is set only at creation) and use it instead.",
)


@dataclass(frozen=True, slots=True)
class ConnectionGrants:
    """A token's grants on one connection, compiled for set lookups."""

    connection: Connection
    everything: bool
    tables: frozenset[tuple[str, ...]]
    prefixes: frozenset[tuple[str, ...]]
    prefix_lengths: tuple[int, ...]
    queries: frozenset[str]


@dataclass(frozen=True, slots=True)
class CompiledToken:
    """A token record compiled against the guard's connections; what the cache holds.

    It holds no memo of its own: answers are remembered by the ``Policy``, bounded for all
    tokens together, so a token's size does not grow with the requests it serves.
    """

    record: TokenRecord
    apis: frozenset[str]
    expires_at: float | None
    origins: OriginMatcher | None
    grants: Mapping[str, ConnectionGrants]
    #: The token's rules per API (``Limits.by_api``); None: no limits, nothing to count.
    limits: Mapping[str, tuple[LimitRule, ...]] | None = None
    #: Allowed-request counters per API (``next`` counts one), set by the guard's usage
    #: recorder when it compiles the token; None when compiled elsewhere.
    uses: Mapping[str, Any] | None = None


class Policy:
    """Compiles tokens and decides requests against the configured connections."""

    def __init__(
        self,
        connections: Mapping[str, str | Connection],
        *,
        sql: SqlAnalyzer | None = None,
    ) -> None:
        self.connections = normalize_connections(connections)
        self.sql = sql if sql is not None else SqlAnalyzer()
        # Tokens with the same referers share one matcher (and its memo of header values).
        self._matchers: dict[tuple[str, ...], OriginMatcher] = {}
        self._interned: dict[frozenset[Any], frozenset[Any]] = {}
        self._grants: dict[ConnectionGrants, ConnectionGrants] = {}
        # (id of interned grants, kind, value) -> (those grants, answer); the entry keeps
        # the grants, so an id reused by a later object never matches.
        self._sources: dict[tuple[int, str, str], tuple[ConnectionGrants, Denial | None]] = {}
        self._sites: dict[tuple[str | None, str | None], RequestSite | str] = {}
        self._authorities: dict[str, tuple[str, str, int | None] | str] = {}
        self._decided: dict[
            tuple[int, int, int],
            tuple[CompiledToken, RequestFacts, RequestSite | str | None, Denial | None],
        ] = {}

    # -- compile (once per cache fill) -------------------------------------------------
    def compile(self, record: TokenRecord) -> CompiledToken:
        """Precompute everything a decision needs from a token record."""
        spec = record.spec
        sql = self.sql
        everything: set[str] = set()
        per_conn: dict[str, tuple[set[tuple[str, ...]], set[tuple[str, ...]], set[str]]] = {}
        for number, grant in enumerate(spec.grants, 1):
            name = grant.connection_name
            conn = self.connections.get(name)
            if conn is None:
                continue  # no dialect to compare names in: requests there are refused
            tables, prefixes, queries = per_conn.setdefault(name, (set(), set(), set()))
            kind = grant.kind
            if kind == "all":
                everything.add(name)
                continue
            compiled: tuple[str, ...] | str | SqlRefusal
            try:
                if kind == "table":
                    compiled = sql.table_key(grant.source, conn)
                elif kind == "wildcard":
                    compiled = sql.wildcard_prefix(grant.source, conn)
                else:
                    compiled = sql.fingerprint(grant.source, conn)
            except Exception as exc:
                # One grant never breaks a token: the others keep working.
                compiled = SqlRefusal(f"it could not be compiled ({type(exc).__name__})", "")
            if isinstance(compiled, SqlRefusal):
                log.warning(
                    "token %s: grant #%d (%s on %r) grants nothing: %s",
                    record.id, number, kind, name, compiled.reason,
                )
            elif isinstance(compiled, str):
                queries.add(compiled)
            else:
                (tables if kind == "table" else prefixes).add(compiled)
        grants: dict[str, ConnectionGrants] = {}
        for name, (tables, prefixes, queries) in per_conn.items():
            built = ConnectionGrants(
                connection=self.connections[name],
                everything=name in everything,
                tables=self._intern(frozenset(tables)) if tables else _EMPTY_KEYS,
                prefixes=self._intern(frozenset(prefixes)) if prefixes else _EMPTY_KEYS,
                prefix_lengths=tuple(sorted({len(p) for p in prefixes})),
                queries=self._intern(frozenset(queries)) if queries else _EMPTY_TEXTS,
            )
            grants[name] = self._grants.setdefault(built, built)
        exp = spec.expiration_date
        return CompiledToken(
            record=record,
            apis=self._intern(frozenset(spec.allowed_apis)),
            expires_at=exp.timestamp() if exp is not None else None,
            origins=self._matcher(spec.referers) if spec.referers else None,
            grants=grants,
            limits=spec.limits.by_api if spec.limits is not None else None,
        )

    def check_grants(self, grants: Sequence[Grant]) -> None:
        """Raise ``InvalidTokenSpec`` naming the first grant this guard could never serve:
        one on a connection it was not configured with, or one whose source does not
        qualify (or parse) in that connection's dialect (what ``compile`` would ignore)."""
        known = sorted(self.connections)
        for index, grant in enumerate(grants):
            name = grant.connection_name
            conn = self.connections.get(name)
            if conn is None:
                raise InvalidTokenSpec(
                    f"grants[{index}].connection_name",
                    f"unknown connection {name!r}{did_you_mean(name, known)}; the API serves "
                    f"{', '.join(repr(k) for k in known)}",
                )
            kind = grant.kind
            if kind == "all":
                continue
            try:
                if kind == "table":
                    compiled: object = self.sql.table_key(grant.source, conn)
                elif kind == "wildcard":
                    compiled = self.sql.wildcard_prefix(grant.source, conn)
                else:
                    compiled = self.sql.fingerprint(grant.source, conn)
            except Exception as exc:
                compiled = SqlRefusal(f"it could not be compiled ({type(exc).__name__})", "")
            if isinstance(compiled, SqlRefusal):
                hint = f"; {compiled.hint}" if compiled.hint else ""
                raise InvalidTokenSpec(
                    f"grants[{index}].source",
                    f"on connection {name!r} ({conn.dialect}) this {kind} grant would grant "
                    f"nothing: {compiled.reason}{hint}",
                )

    def _intern(self, value: frozenset[_T]) -> frozenset[_T]:
        # Many tokens share API lists and grant sets: one copy each keeps a cached token
        # small (a frozenset is 216 bytes even with one member).
        found = self._interned.get(value)
        if found is not None:
            return found
        if len(self._interned) < _MATCHERS_SIZE:
            self._interned[value] = value
        return value

    def _matcher(self, referers: tuple[str, ...]) -> OriginMatcher:
        matcher = self._matchers.get(referers)
        if matcher is None:
            matcher = OriginMatcher(referers)
            if len(self._matchers) < _MATCHERS_SIZE:
                self._matchers[referers] = matcher
        return matcher

    # -- decide (every request) --------------------------------------------------------
    def decide(self, token: CompiledToken, facts: RequestFacts, now: float) -> Denial | None:
        """None to allow; otherwise the Denial saying what is wrong and how to fix it."""
        return self.decide_parts(token, facts, facts.origin, facts.referer, now)

    def decide_parts(
        self,
        token: CompiledToken,
        what: RequestFacts,
        origin: str | None,
        referer: str | None,
        now: float,
    ) -> Denial | None:
        """``decide`` with the headers apart: ``what``'s own origin and referer are not read.

        Expiry is checked every time. The headers are read once per (Origin, Referer) pair
        for all tokens (``SITES_MEMO_SIZE``); the answer is remembered per (compiled token,
        ``what`` object, that reading) — the guard hands one ``what`` to every request with
        the same route answer and query string (``DECISIONS_MEMO_SIZE``, all tokens).
        """
        if token.expires_at is not None and now >= token.expires_at:
            return _EXPIRED
        read: RequestSite | str | None = None
        if token.origins is not None:
            site_key = (origin, referer)
            sites = self._sites
            read = sites.get(site_key)
            if read is None:
                read = read_site(origin, referer, self._authorities)
                if len(sites) >= SITES_MEMO_SIZE:
                    sites.clear()
                sites[site_key] = read
        key = (id(token), id(what), id(read))
        decided = self._decided
        hit = decided.get(key)
        if hit is not None and hit[0] is token and hit[1] is what and hit[2] is read:
            return hit[3]
        answer = self._decide_request(token, what, read)
        if len(decided) >= DECISIONS_MEMO_SIZE:
            decided.clear()
        decided[key] = (token, what, read, answer)
        return answer

    def _decide_request(
        self, token: CompiledToken, what: RequestFacts, read: RequestSite | str | None
    ) -> Denial | None:
        if what.api not in token.apis:
            return _api_denial(token, what.api)
        if token.origins is not None and read is not None:
            reason = token.origins.check_site(read)
            if reason is not None:
                return Denial(
                    403,
                    codes.ORIGIN_NOT_ALLOWED,
                    reason,
                    "Add the website's origin to the token's referers, or call from a "
                    "website the token lists.",
                )
        return self._sources_denial(token, what)

    def _sources_denial(self, token: CompiledToken, facts: RequestFacts) -> Denial | None:
        name = facts.connection
        if name is None:
            return None
        grants = token.grants.get(name)
        if grants is None:
            return self._connection_denial(name)
        memo = self._sources
        for kind, value in facts.sources:
            source_key = (id(grants), kind, value)
            hit = memo.get(source_key)
            if hit is not None and hit[0] is grants:
                denial = hit[1]
            else:
                denial = self._check_source(grants, name, Source(kind, value))
                if len(value) <= _CHECKED_MAX_VALUE:
                    if len(memo) >= SOURCES_MEMO_SIZE:
                        memo.clear()
                    memo[source_key] = (grants, denial)
            if denial is not None:
                return denial
        return None

    def _check_source(
        self, grants: ConnectionGrants, name: str, source: Source
    ) -> Denial | None:
        sql = self.sql
        if source.kind != "query":
            key = sql.table_key(source.value, grants.connection)
            if isinstance(key, SqlRefusal):
                return Denial(403, codes.SOURCE_NOT_GRANTED, key.reason, key.hint)
            if _granted(grants, key):
                return None
            return _table_denial(name, key)
        analysis = sql.analyze(source.value, grants.connection)
        if isinstance(analysis, SqlRefusal):
            return Denial(403, codes.QUERY_NOT_ALLOWED, analysis.reason, analysis.hint)
        if analysis.fingerprint in grants.queries:
            return None
        for key in analysis.tables:
            if not _granted(grants, key):
                return _table_denial(name, key)
        return None

    def _connection_denial(self, name: str) -> Denial:
        if name not in self.connections:
            return Denial(
                403,
                codes.UNKNOWN_CONNECTION,
                f"Connection '{name}' is not known to this API.",
                "Check the connection name in the URL; the guard's operator declares "
                "connections in TokenGuard(connections=...).",
            )
        return Denial(
            403,
            codes.CONNECTION_NOT_GRANTED,
            f"The token has no grants on connection '{name}'.",
            f"Add a grant with connection_name '{name}' to the token, or use a token "
            "that has one.",
        )


def _granted(grants: ConnectionGrants, key: tuple[str, ...]) -> bool:
    if key in grants.tables:
        return True
    if is_system_table(key):
        return False
    if grants.everything:
        return True
    n = len(key)
    for length in grants.prefix_lengths:
        if n == length + 1 and key[:length] in grants.prefixes:
            return True
    return False


def _table_denial(connection: str, key: tuple[str, ...]) -> Denial:
    table = ".".join(key)
    parent = ".".join(key[:-1])
    wildcard = f" or a wildcard '{parent}.*'" if len(key) >= 3 else ""
    return Denial(
        403,
        codes.SOURCE_NOT_GRANTED,
        f"The token may not read '{table}' on connection '{connection}'.",
        f"Add a grant {{connection_name: '{connection}', source: '{table}'}}{wildcard} "
        "to the token, or use a token that has one.",
    )


def _api_denial(token: CompiledToken, api: str) -> Denial:
    allowed = ", ".join(sorted(token.apis))
    return Denial(
        403,
        codes.API_NOT_ALLOWED,
        f"The token may not call the {api} API (it allows: {allowed}).",
        f"Use a token whose allowed_apis include '{api}'."
        + (" Tokens for 'imports' cannot include other APIs." if api == "imports" else ""),
    )
