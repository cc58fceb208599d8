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
from token_guard.core.origins import OriginMatcher, read_site, referer_site
from token_guard.core.records import TokenRecord
from token_guard.core.spec import Grant
from token_guard.core.sql import SqlAnalyzer, SqlRefusal, is_system_table

log = logging.getLogger("token_guard.core.policy")
_T = TypeVar("_T")

_EMPTY_KEYS: frozenset[tuple[str, ...]] = frozenset()
_EMPTY_TEXTS: frozenset[str] = frozenset()
PREPARED_MEMO_SIZE = 8192
"""Remembered preparations of a request's sources (normalised table keys, query analyses
and the refusals that hold for every token), per (connection, sources), for every token;
cleared when full. It grows with distinct sources, not with tokens."""
VERDICTS_MEMO_SIZE = 4096
"""Remembered website answers per (referer list, website) (and page, for lists with path
patterns), for every token; cleared when full. Tokens with one referer list share one."""
ANSWERS_MEMO_SIZE = 8192
"""Remembered website answers per (referer list, Origin, Referer): the one lookup a cached
request makes; for every token, cleared when full. A miss reads the headers and asks the
answers per website (``VERDICTS_MEMO_SIZE``)."""
_CHECKED_MAX_VALUE = 2048  # longer source values (big queries) are not remembered
_MATCHERS_SIZE = 10_000  # distinct referer lists whose matcher is shared

_EXPIRED = Denial(
    401,
    codes.EXPIRED_TOKEN,
    "The API access token has expired.",
    "Create a new token (an expiration date is set only at creation) and use it instead.",
)


def expired(token: CompiledToken, now: float) -> Denial | None:
    """The expiry refusal if ``token`` has expired at ``now`` (checked before a body is read)."""
    if token.expires_at is not None and now >= token.expires_at:
        return _EXPIRED
    return None


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
        # Each memo entry keeps the objects whose id() is in its key, so an id reused by a
        # later object never matches.
        # (connection, sources) -> what they need of any token's grants
        self._prepared: dict[tuple[str, tuple[Source, ...]], _Prepared] = {}
        self._authorities: dict[str, tuple[str, str, int | None] | str] = {}
        # (id(matcher), website or reading) -> (matcher, the 403 or None)
        self._verdicts: dict[tuple[int, Any], tuple[OriginMatcher, Denial | None]] = {}
        # (id(matcher), Origin, Referer) -> (matcher, the 403 or None)
        # (and (id(matcher), Origin, scheme://authority of the Referer, True), see
        # _site_denial)
        self._answers: dict[tuple[Any, ...], tuple[OriginMatcher, Denial | None]] = {}

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

        Nothing here is remembered per token: the website's answer per (referer list,
        headers) (``ANSWERS_MEMO_SIZE``), the sources' preparation per ``what`` object
        (``PREPARED_MEMO_SIZE``; the guard hands one to every request with the same route
        answer and read parameters); then a few set lookups in the token's grants.
        """
        if token.expires_at is not None and now >= token.expires_at:
            return _EXPIRED
        if what.api not in token.apis:
            return _api_denial(token, what.api)
        matcher = token.origins
        if matcher is not None:
            answer = self._answers.get((id(matcher), origin, referer))
            if answer is None or answer[0] is not matcher:
                refused = self._site_denial(matcher, origin, referer)
            else:
                refused = answer[1]
            if refused is not None:
                return refused
        name = what.connection
        if name is None:
            return None
        grants = token.grants.get(name)
        if grants is None:
            return self._connection_denial(name)
        checks = self._prepared.get((name, what.sources))
        if checks is None:
            checks = self._prepare(name, what.sources)
        for check in checks:
            if check.__class__ is tuple:  # a table, not a catalog one (_prepare)
                if check in grants.tables or _by_wildcard(grants, check):
                    continue
                return _table_denial(name, check)
            if check.__class__ is _Query:
                denial = check.denial(name, grants)
                if denial is None:
                    continue
                return denial
            if check.__class__ is _SystemTable:
                if check.key in grants.tables:
                    continue
                return _table_denial(name, check.key)
            return check  # type: ignore[return-value]
        return None

    def _site_denial(
        self, matcher: OriginMatcher, origin: str | None, referer: str | None
    ) -> Denial | None:
        """The 403 for a website ``matcher`` does not allow, or None (remembered)."""
        answers = self._answers
        if len(answers) >= ANSWERS_MEMO_SIZE:
            answers.clear()
        # A matcher without path patterns answers a website's pages alike: remembered per
        # (Origin, the Referer's scheme://authority) too, so a new page is one more lookup.
        site = None
        if referer is not None and not matcher.reads_path:
            site = referer_site(referer)
        if site is not None:
            hit = answers.get((id(matcher), origin, site, True))
            if hit is not None and hit[0] is matcher:
                answers[(id(matcher), origin, referer)] = hit
                return hit[1]
            denial = self._site_verdict(matcher, origin, referer)
            answers[(id(matcher), origin, site, True)] = answers[
                (id(matcher), origin, referer)] = (matcher, denial)
            return denial
        denial = self._site_verdict(matcher, origin, referer)
        answers[(id(matcher), origin, referer)] = (matcher, denial)
        return denial

    def _site_verdict(
        self, matcher: OriginMatcher, origin: str | None, referer: str | None
    ) -> Denial | None:
        read = read_site(origin, referer, self._authorities)
        # A matcher without path patterns reads only the website (or why there is none).
        key = (id(matcher), read if matcher.reads_path or isinstance(read, str) else read[0])
        verdicts = self._verdicts
        hit = verdicts.get(key)
        if hit is not None and hit[0] is matcher:
            return hit[1]
        reason = matcher.check_site(read)
        denial = None if reason is None else Denial(
            403,
            codes.ORIGIN_NOT_ALLOWED,
            reason,
            "Add the website's origin to the token's referers, or call from a "
            "website the token lists.",
        )
        if len(verdicts) >= VERDICTS_MEMO_SIZE:
            verdicts.clear()
        verdicts[key] = (matcher, denial)
        return denial

    def _prepare(self, name: str, sources: tuple[Source, ...]) -> _Prepared:
        """What ``sources`` need of a token's grants on connection ``name`` (a known one)."""
        connection = self.connections[name]
        checks: list[_Check] = []
        sql = self.sql
        for kind, value in sources:
            if kind != "query":
                key = sql.table_key(value, connection)
                if isinstance(key, SqlRefusal):
                    checks.append(Denial(403, codes.SOURCE_NOT_GRANTED, key.reason, key.hint))
                else:  # decide_parts tells checks apart by class
                    table = tuple(key)
                    checks.append(_SystemTable(table) if is_system_table(table) else table)
                continue
            analysis = sql.analyze(value, connection)
            if isinstance(analysis, SqlRefusal):
                checks.append(
                    Denial(403, codes.QUERY_NOT_ALLOWED, analysis.reason, analysis.hint))
            else:
                tables = tuple(analysis.tables)
                checks.append(_Query(analysis.fingerprint, tables,
                                     frozenset(filter(is_system_table, tables))))
        prepared = tuple(checks)
        if all(len(value) <= _CHECKED_MAX_VALUE for _, value in sources):
            memo = self._prepared
            if len(memo) >= PREPARED_MEMO_SIZE:
                memo.clear()
            memo[(name, sources)] = prepared
        return prepared

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


@dataclass(frozen=True, slots=True)
class _Query:
    """A query source, analysed: allowed by its fingerprint, else by all its tables.

    ``system``: those of ``tables`` that are catalog tables (``is_system_table``), which
    only an exact grant allows; told apart once, when the query is prepared."""

    fingerprint: str
    tables: tuple[tuple[str, ...], ...]
    system: frozenset[tuple[str, ...]] = frozenset()

    def denial(self, name: str, grants: ConnectionGrants) -> Denial | None:
        """None if ``grants`` allow the query; else the refusal of its first table not granted."""
        if self.fingerprint in grants.queries:
            return None
        for key in self.tables:
            if key in grants.tables:
                continue
            if key in self.system or not _by_wildcard(grants, key):
                return _table_denial(name, key)
        return None


@dataclass(frozen=True, slots=True)
class _SystemTable:
    """A table source that is a catalog table (``is_system_table``): only an exact grant
    allows it. Any other table source is prepared as its bare key (a tuple)."""

    key: tuple[str, ...]


# One source's check: a table key, a catalog table, a query, or a refusal that holds for
# every token (a name that is not one, a query the SQL checks refuse).
_Check = tuple[str, ...] | _SystemTable | _Query | Denial
_Prepared = tuple[_Check, ...]


def _by_wildcard(grants: ConnectionGrants, key: tuple[str, ...]) -> bool:
    """Whether ``grants`` allow table ``key`` without naming it: by a grant of everything or
    a wildcard. Only for a key known not to be a catalog table (``_prepare`` tells them
    apart once: ``is_system_table`` costs ~12 k instructions on a three-part name), which
    only an exact grant allows."""
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
