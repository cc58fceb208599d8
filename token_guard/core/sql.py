"""SQL sources: which tables a query reads, and a canonical text for query grants.

Security choices (fail closed: whatever cannot be proven a plain read of named tables is
refused with a ``SqlRefusal`` saying why and what would fix it):

* A query is parsed with sqlglot in the connection's dialect. Exactly one statement is
  allowed, and it must be a ``SELECT`` (or a set operation of them). Every node of the
  parsed tree must be of a kind the guard knows (``token_guard.core.sql_nodes`` lists them):
  DML/DDL anywhere (also inside a CTE, as in Postgres ``WITH x AS (DELETE ...)``),
  ``SELECT ... INTO``, locking clauses, sqlglot's ``Command`` fallback and any unknown
  node type are refused.
* Every table reference is resolved: a one-part name that a visible CTE defines is that
  CTE; anything else is a real table, qualified with ``Connection.default_path`` to
  ``Connection.depth`` parts, or refused. A non-recursive CTE does not see itself or the
  CTEs after it, so ``WITH t AS (SELECT * FROM t)`` reads the real ``t``.
* The only functions allowed as a table source are ``UNNEST`` and ``FLATTEN``/``EXPLODE``
  (their arguments are walked like any expression). Table-valued functions, ``TABLE(...)``,
  ``IDENTIFIER(...)``, stages (``@stage``), ``EXTERNAL_QUERY``, ``ML.*``/``AI.*`` and
  file readers are refused, and so are BigQuery wildcard tables (``events_*``).
* Functions sqlglot does not know (user-defined, extension or admin functions such as
  Postgres ``query_to_xml`` or ``pg_read_file``, which can read what no grant covers) are
  refused unless named in ``allowed_functions`` (by default a list of read-only spatial
  functions).
* Names compare per dialect: Postgres folds unquoted identifiers to lower case, Snowflake
  to upper case, case-insensitive dialects fold everything; BigQuery keeps dataset and
  table names as written (they are case-sensitive) and lower-cases the project. Redshift
  keeps PostgreSQL's rule (quoted names exact) although sqlglot folds them: with
  ``enable_case_sensitive_identifier`` on, ``"Secret"`` and ``secret`` are two tables. A
  rule that tells more names apart than the engine only over-asks; the reverse leaks.
* Never narrower than the engine (dialect rules live in the ``token_guard.core.dialects`` table):
  - implicit UNNEST: sqlglot's BigQuery/Redshift parsers turn a joined path whose first
    part names an earlier FROM item (``FROM t, t.arr``) into ``UNNEST(t.arr)``. That is
    accepted only in the engine's own shape: the first identifier is exactly one token of
    the text and matches the range variable by the engine's rule (BigQuery: any case;
    Redshift: PostgreSQL folding). A quoted path (`` `proj.ds.secret` ``, which BigQuery
    reads as a table even when ``proj`` is an alias or CTE) is refused;
  - empty name parts (``a..b``, ``.a.b``, `` `a..b` ``) are refused: sqlglot drops them,
    Snowflake reads ``a..b`` as ``a.PUBLIC.b``;
  - DuckDB two-part names are refused: ``a.b`` is schema.table or catalog.table
    depending on what exists;
  - a comment holding ``/*`` or ``*/`` is refused: engines differ on nesting comments;
    so is BigQuery's ``#legacySQL`` (another language: commas are UNION ALL there);
  - a character sqlglot's tokenizer does not know (an ``UNKNOWN`` token) is refused: it
    may be a quote to the engine (DuckDB quotes identifiers with backticks, so
    ``SELECT `--x` FROM secret`` read secret while sqlglot saw a comment);
  - where a setting decides whether a backslash escapes a quote (PostgreSQL/Redshift
    ``standard_conforming_strings``, Databricks ``escapedStringLiterals``), a query that
    tokenizes differently under the two rules is refused;
  - a BigQuery CTE name matches only as written (sqlglot matches it in any case);
  - only BigQuery names a catalog view with one part more than a table;
  - PostgreSQL (63 bytes) and Redshift (127) truncate longer identifiers: refused;
  - PostgreSQL connections, where ``pglast`` is installed: PostgreSQL's own parser
    (libpg_query) must parse the query and name no relation the guard did not list
    (``token_guard.core.pg_parser``; about a tenth of the analysis cost, cold path only).
* ``allowed_functions`` compare by the dialect's rule, not lower-cased: BigQuery built-in
  (one-part) names in any case, qualified UDF paths with the project lower-cased and the
  dataset and function as written (a quoted `` `a.b.c` `` is the path a.b.c); elsewhere
  each part folds as an identifier (a quoted ``"ST_Area"`` is not ``st_area``).
* Any exception out of sqlglot while analysing (parse, generation, optimisation) is a
  refusal saying the query could not be analysed; the guard never raises on input.
* In Postgres-like dialects an unqualified name starting like a catalog relation
  (``pg_``, Redshift ``stl_``...) is refused: ``pg_catalog`` is searched before the
  default schema, so ``default_path`` cannot say which table it is.
* File reads that look like tables are refused: DuckDB names that look like paths
  (``'data.csv'``), Databricks ``json.`s3://...```.
* Cost: a query over ``max_query_bytes`` is refused before tokenizing; parentheses nested
  deeper than ``MAX_NESTING`` or subqueries summing to more than ``MAX_SUBQUERY_MASS``
  tokens are refused before parsing (sqlglot's BigQuery parser is quadratic in nested
  derived tables).
* The query-grant fingerprint is the statement re-generated by sqlglot without comments,
  with every table written as its fully qualified key; literals stay in it, bound
  parameters (``@city``, ``:city``) stay as names.

``SqlAnalyzer`` caches results (refusals too) in bounded LRU caches; the cache is guarded
by a lock because the WSGI adapter calls it from several threads.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cachetools import LRUCache
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token, TokenType
from sqlglot.tokens import Tokenizer

from token_guard.core import pg_parser, presets
from token_guard.core.catalogue import CATALOGUES
from token_guard.core.connections import Connection
from token_guard.core.dialects import DIALECTS, DialectRules
from token_guard.core.errors import ConfigurationError
from token_guard.core.postgis import PostGIS, is_spatial_operator
from token_guard.core.sql_nodes import (
    DEFAULT_ALLOWED_FUNCTIONS,
    DENY,
    FUNCTION,
    NAMED_FUNCTIONS,
    ROW_SOURCES,
    STATEMENT_WORDS,
    TABLE,
    classify,
)

log = logging.getLogger("token_guard.core.sql")

__all__ = [
    "DEFAULT_ALLOWED_FUNCTIONS",
    "QueryAnalysis",
    "SqlAnalyzer",
    "SqlRefusal",
    "is_system_table",
]

# Parse cost: sqlglot's BigQuery parser copies every derived table once per enclosing
# SELECT, so nested subqueries cost time quadratic in their size (64 KiB of them: ~2.5 s).
# Both limits sit far above hand-written queries; the mass is the summed token length of
# all parenthesised subqueries.
MAX_NESTING = 32
MAX_SUBQUERY_MASS = 25_000

# Tokens that start a subquery after '(' (for the nesting limits).
_SUBQUERY_STARTS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN})
# Tokens after which a '.' starts a name with an empty first part (``FROM .a.b``).
_NO_NAME_BEFORE_DOT = frozenset(
    {TokenType.DOT, TokenType.COMMA, TokenType.FROM, TokenType.JOIN, TokenType.L_PAREN,
     TokenType.SELECT}
)
_NO_NAME_AFTER_DOT = frozenset(
    {TokenType.DOT, TokenType.COMMA, TokenType.FROM, TokenType.R_PAREN}
)
# Tokens after which a value, not a table name, starts (so ``.25`` is a number there).
_VALUE_STARTS = frozenset({TokenType.COMMA, TokenType.L_PAREN, TokenType.SELECT})
# Tokens after which ':' is not a placeholder's start (a slice ``a[x:y]``, a label).
_OPERAND_ENDS = frozenset(
    {TokenType.VAR, TokenType.IDENTIFIER, TokenType.NUMBER, TokenType.STRING,
     TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.NULL, TokenType.TRUE, TokenType.FALSE}
)
# Text that makes a table name (request ``name=``, a grant) more than a name.
_NAME_MARKS = ("--", "/*", "*/", ";", "#", "\n", "\r", "\x00")



def _sqlglot_dialect(name: str) -> Dialect:
    """The sqlglot dialect a connection's queries are read in (PostGIS operators added)."""
    return PostGIS() if DIALECTS[name].postgis_operators else Dialect.get_or_raise(name)


# Each dialect's rules by its sqlglot class, for the steps that are handed only a Dialect.
_RULES_OF: dict[type[Dialect], DialectRules] = {
    type(_sqlglot_dialect(name)): rules for name, rules in DIALECTS.items()
}
_FOLD_AS: dict[type[Dialect], Dialect] = {
    type(_sqlglot_dialect(name)): Dialect.get_or_raise(rules.fold_as)
    for name, rules in DIALECTS.items()
    if rules.fold_as is not None
}
# System names of every dialect together: the policy asks is_system_table without a
# dialect, and calling more names system only narrows '*' and wildcard grants.
_SYSTEM_SCHEMAS: frozenset[str] = frozenset().union(*(r.system_schemas for r in DIALECTS.values()))
_SYSTEM_SCHEMA_PREFIXES = tuple(
    dict.fromkeys(p for r in DIALECTS.values() for p in r.system_schema_prefixes)
)
_SYSTEM_CATALOGS: frozenset[str] = frozenset().union(
    *(r.system_catalogs for r in DIALECTS.values())
)
_DUNDER_META_TABLES = any(r.dunder_meta_tables for r in DIALECTS.values())


def _fold_builtin(name: str, dialect_name: str) -> str:
    """A catalogue name (lower case) as the analyser folds an unquoted call in the dialect."""
    if DIALECTS[dialect_name].names_as_written:
        return name  # BigQuery built-ins compare lower-cased (see _function_path)
    dialect = _sqlglot_dialect(dialect_name)
    ident = exp.Identifier(this=name, quoted=False)
    return _FOLD_AS.get(type(dialect), dialect).normalize_identifier(ident).name


# Each dialect's catalogue folded once, at import: built-in reads (one-part paths) and the
# refused names with their reasons. Lookups on the analysis path are set/dict lookups.
_BUILTIN_READS: dict[str, frozenset[tuple[str, ...]]] = {
    d: frozenset((_fold_builtin(n, d),) for n in CATALOGUES[d].reads)
    for d in DIALECTS if d in CATALOGUES
}
_BUILTIN_REFUSED: dict[str, dict[tuple[str, ...], str]] = {
    d: {(_fold_builtin(n, d),): why for n, why in CATALOGUES[d].refused.items()}
    for d in DIALECTS if d in CATALOGUES
}

_R = TypeVar("_R")
# sqlglot's wrapper of BigQuery's NET.* functions (absent from older sqlglot versions).
_NET_FUNC: tuple[type[exp.Expression], ...] = (
    (exp.NetFunc,) if hasattr(exp, "NetFunc") else ()
)


@dataclass(frozen=True, slots=True)
class QueryAnalysis:
    """What a query reads (``tables``, fully qualified) and its canonical ``fingerprint``."""

    tables: frozenset[tuple[str, ...]]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SqlRefusal:
    """Why a query or name is refused (``reason``) and what would fix it (``hint``)."""

    reason: str
    hint: str


_TOO_DEEP = SqlRefusal(
    "the query nests too deeply for the guard to analyse",
    "flatten the query: fewer nested subqueries or parentheses",
)


def is_system_table(key: tuple[str, ...]) -> bool:
    """True for INFORMATION_SCHEMA and other catalog names: only an exact grant allows these."""
    for part in key:
        upper = part.upper()
        if upper == "INFORMATION_SCHEMA" or upper.startswith("INFORMATION_SCHEMA."):
            return True
        lower = part.lower()
        if lower in _SYSTEM_SCHEMAS or lower.startswith(_SYSTEM_SCHEMA_PREFIXES):
            return True
    if not key:
        return False
    last = key[-1]
    if _DUNDER_META_TABLES and len(last) > 4 and last.startswith("__") and last.endswith("__"):
        return True
    return len(key) >= 3 and key[0].lower() in _SYSTEM_CATALOGS


# Extension types a cast may name although sqlglot does not know them (PostGIS, citext):
# scalar types, not the row type of any table.
# (``record`` is PostgreSQL's anonymous row pseudo-type: no table behind it.)
_EXTENSION_TYPES = frozenset(
    {"box2d", "box3d", "box2df", "gidx", "spheroid", "raster", "citext", "record"}
)


def _named_type(node: exp.DataType) -> SqlRefusal | None:
    """Refuse a type the query names that may be a table's row type or a catalog lookup.

    ``null::db.sch.secret`` or ``json_populate_recordset(null::secret, ...)`` reveals an
    ungranted table's columns (and that it exists), and ``'t'::regclass`` looks a table up
    by name, as the refused ``to_regclass`` does: neither is a read a grant covers.
    """
    if isinstance(node, exp.ObjectIdentifier) and str(node.this).upper() != "OID":
        # (A plain oid is a number; the reg* types look their input up by name.)
        return SqlRefusal(
            f"the query casts to {node.sql()}, which looks a catalog object up by name",
            "remove the cast; read granted tables with a plain SELECT",
        )
    if node.this is not exp.DataType.Type.USERDEFINED:
        return None
    name = node.sql()
    if name.lower() in _EXTENSION_TYPES:
        return None
    return SqlRefusal(
        f"the query names the type {name[:80]!r}, which the guard does not know; a "
        "table's name used as a type reveals that table's columns",
        "cast to a built-in type (int, text, jsonb, geometry, ...)",
    )


def _refuse_node(node: exp.Expr) -> SqlRefusal:
    name = type(node).__name__
    if isinstance(node, exp.Into):
        return SqlRefusal(
            "SELECT ... INTO writes a table", "remove INTO; send a plain SELECT"
        )
    if isinstance(node, exp.Lock):
        return SqlRefusal(
            "the query takes row locks (FOR UPDATE / FOR SHARE)",
            "remove the locking clause; send a plain SELECT",
        )
    if isinstance(node, exp.Command):
        word = str(node.this).upper()
        return SqlRefusal(
            f"the query runs {word}, which the guard cannot analyse; only a SELECT is allowed",
            "send one plain SELECT",
        )
    if name in STATEMENT_WORDS:
        return SqlRefusal(
            f"the query contains {STATEMENT_WORDS[name]}; only a plain SELECT is allowed",
            "send one plain SELECT",
        )
    if isinstance(node, exp.Func):
        return SqlRefusal(
            f"the query calls {node.sql_name()}, which reads or runs something no grant covers",
            "remove that function; read granted tables with a plain SELECT",
        )
    return SqlRefusal(
        f"the query uses {name} syntax, which the guard cannot prove to be a plain read",
        "rewrite it as a plain SELECT over granted tables",
    )


class _Context:
    """State of one analysis: the connection's rules and what the walk found."""

    __slots__ = ("dialect", "name", "prefix", "rewrites", "rules", "starts", "tables", "tokens")

    def __init__(
        self, dialect: Dialect, name: str, prefix: tuple[str, ...], tokens: list[Token]
    ) -> None:
        self.dialect = dialect
        self.name = name
        self.rules = DIALECTS[name]
        self.prefix = prefix
        self.tables: set[tuple[str, ...]] = set()
        self.rewrites: list[tuple[exp.Table, tuple[str, ...]]] = []
        self.tokens = tokens
        self.starts: dict[int, int] | None = None  # token index by start offset, on demand


class SqlAnalyzer:
    """Parses queries and names per connection dialect; results are cached (bounded LRU).

    Not a security boundary on its own: it says which tables a query names; the policy
    decides whether the token was granted them.
    """

    __slots__ = (
        "_defaults",
        "_dialects",
        "_function_prefixes",
        "_functions",
        "_kinds",
        "_lock",
        "_max_bytes",
        "_names",
        "_other_tokenizers",
        "_pg_check",
        "_queries",
    )

    def __init__(
        self,
        *,
        max_query_bytes: int = 65536,
        cache_size: int = 4096,
        allowed_functions: Iterable[str] = DEFAULT_ALLOWED_FUNCTIONS,
        postgres_parser_check: bool | None = None,
    ) -> None:
        if postgres_parser_check and not pg_parser.AVAILABLE:
            raise ConfigurationError(
                "postgres_parser_check: needs pglast; install token_guard[pgparser], or "
                "leave it unset to check only where pglast is installed"
            )
        # PostgreSQL connections: PostgreSQL's own parser must agree (None: if installed).
        self._pg_check = (
            pg_parser.AVAILABLE if postgres_parser_check is None else postgres_parser_check
        )
        self._max_bytes = max_query_bytes
        self._queries: LRUCache[tuple[str, str, tuple[str, ...], int], QueryAnalysis | SqlRefusal]
        self._queries = LRUCache(maxsize=cache_size)
        self._names: LRUCache[tuple[str, str, tuple[str, ...], int], tuple[str, ...] | SqlRefusal]
        self._names = LRUCache(maxsize=cache_size)
        self._defaults: LRUCache[tuple[str, tuple[str, ...]], tuple[str, ...] | SqlRefusal]
        self._defaults = LRUCache(maxsize=256)
        self._lock = threading.Lock()
        self._dialects = {name: _sqlglot_dialect(name) for name in DIALECTS}
        self._kinds: dict[type[exp.Expression], int] = {}
        # The same tokenizer with the other backslash rule, where a setting decides it.
        self._other_tokenizers: dict[str, type[Tokenizer]] = {}
        for name, d in self._dialects.items():
            if DIALECTS[name].escape_setting is not None:
                escapes = list(d.tokenizer_class.STRING_ESCAPES)
                other = [e for e in escapes if e != "\\"] if "\\" in escapes else [
                    *escapes, "\\"]
                self._other_tokenizers[name] = type(
                    "OtherEscapes", (d.tokenizer_class,), {"STRING_ESCAPES": other}
                )
        # Per dialect: exact function paths, and "schema.*" prefixes (every function of a
        # schema, e.g. CARTO's "carto-un.carto.*"), folded by the dialect's rule.
        names = presets.expand([f.strip() for f in allowed_functions])
        _check_not_refused(names)
        self._functions: dict[str, frozenset[tuple[str, ...]]] = {}
        self._function_prefixes: dict[str, frozenset[tuple[str, ...]]] = {}
        for dname in self._dialects:
            exact: set[tuple[str, ...]] = set()
            prefixes: set[tuple[str, ...]] = set()
            for n in names:
                wildcard = n.endswith(".*")
                path = n[:-2] if wildcard else n
                idents = [exp.Identifier(this=p, quoted=False) for p in path.split(".")]
                folded = self._function_path(idents, dname)
                (prefixes if wildcard else exact).add(folded)
            # Refused built-ins stay out even when a wildcard or a default names them.
            refused = _BUILTIN_REFUSED.get(dname, {})
            reads = _BUILTIN_READS.get(dname, frozenset())
            self._functions[dname] = frozenset(exact.union(reads).difference(refused))
            self._function_prefixes[dname] = frozenset(prefixes)

    # -- public -------------------------------------------------------------------------

    def analyze(self, query: str, connection: Connection) -> QueryAnalysis | SqlRefusal:
        """Tables and fingerprint of ``query``; cached by (text, dialect, default_path, depth)."""
        key = (query, connection.dialect, connection.default_path, connection.depth)
        try:
            with self._lock:
                return self._queries[key]
        except KeyError:
            pass
        if len(query) > self._max_bytes or (
            len(query) * 4 > self._max_bytes
            and len(query.encode("utf-8", "surrogatepass")) > self._max_bytes
        ):
            # Not cached: oversized keys would fill memory, and the check is cheap.
            return SqlRefusal(
                f"the query is longer than {self._max_bytes} bytes",
                "send a shorter query",
            )
        result = _guarded(self._analyze, query, connection)
        with self._lock:
            self._queries[key] = result
        return result

    def fingerprint(self, query: str, connection: Connection) -> str | SqlRefusal:
        """The fingerprint of a granted query (same as analyze(...).fingerprint)."""
        result = self.analyze(query, connection)
        return result if isinstance(result, SqlRefusal) else result.fingerprint

    def table_key(self, name: str, connection: Connection) -> tuple[str, ...] | SqlRefusal:
        """A table/tileset name (request ``name=`` or table grant), qualified and normalised."""
        key = (name, connection.dialect, connection.default_path, connection.depth)
        try:
            with self._lock:
                return self._names[key]
        except KeyError:
            pass
        if len(name) > 1024 or any(mark in name for mark in _NAME_MARKS):
            # A name ends up inside the backend's own SQL: no comments or statement breaks.
            return SqlRefusal(
                f"{name[:80]!r} is not a plain table name",
                "send a name such as proj.dataset.table, without comments, ';' or newlines",
            )
        result = _guarded(self._table_key, name, connection)
        with self._lock:
            self._names[key] = result
        return result

    def wildcard_prefix(self, source: str, connection: Connection) -> tuple[str, ...] | SqlRefusal:
        """'proj.ds.*' -> normalised ('proj','ds')."""
        hint = f"write it as '{self._example(connection).rsplit('.', 1)[0]}.*'"
        if (
            not source.endswith(".*")
            or len(source) > 1024
            or any(mark in source for mark in _NAME_MARKS)
        ):
            return SqlRefusal(f"{source[:80]!r} is not a wildcard source", hint)
        return _guarded(self._wildcard_prefix, source, connection)

    # -- names --------------------------------------------------------------------------

    def _wildcard_prefix(
        self, source: str, connection: Connection
    ) -> tuple[str, ...] | SqlRefusal:
        hint = f"write it as '{self._example(connection).rsplit('.', 1)[0]}.*'"
        parts = self._parse_name(source[:-2], connection.dialect)
        if isinstance(parts, SqlRefusal):
            return parts
        want = connection.depth - 1
        if len(parts) > want:
            return SqlRefusal(
                f"wildcard {source[:80]!r} has more than {want} parts before '*'", hint
            )
        return self._qualify(parts, want, connection, source[:80], hint)

    def _example(self, connection: Connection) -> str:
        rules = DIALECTS[connection.dialect]
        if rules.example and connection.depth == rules.depth:
            return rules.example
        return ".".join(["database", "schema", "table"][-connection.depth :])

    def _table_key(self, name: str, connection: Connection) -> tuple[str, ...] | SqlRefusal:
        parts = self._parse_name(name, connection.dialect)
        if isinstance(parts, SqlRefusal):
            return parts
        return self._resolve(parts, name[:80], connection)

    def _parse_name(self, name: str, dialect_name: str) -> tuple[str, ...] | SqlRefusal:
        """Parse a bare table name with the dialect's own rules; anything more is refused."""
        bad = SqlRefusal(
            f"{name[:80]!r} is not a table name",
            "send a name such as proj.dataset.table, quoting parts that need it",
        )
        dialect = self._dialects[dialect_name]
        text = f"SELECT * FROM {name}"
        try:
            tokens = dialect.tokenize(text)
            ambiguous = self._token_refusal(tokens, text, dialect_name)
            if ambiguous is not None:
                return ambiguous
            statements = dialect.parser().parse(tokens, text)
        except Exception:
            return bad
        if len(statements) != 1 or not isinstance(statements[0], exp.Select):
            return bad
        select = statements[0]
        present = {k for k, v in select.args.items() if v not in (None, [], False)}
        source = select.args.get("from_")
        if present != {"expressions", "from_"} or not isinstance(source, exp.From):
            return bad
        table = source.this
        if not isinstance(table, exp.Table) or select.comments or table.comments:
            return bad
        for arg, value in table.args.items():
            if value in (None, [], False) or arg in ("this", "db", "catalog"):
                continue
            # BigQuery: sqlglot folds `INFORMATION_SCHEMA.TABLES` into one part and adds an
            # alias equal to the view name; that alias is not part of what was sent.
            if arg == "alias" and "." in table.name and (
                table.alias == table.name.rsplit(".", 1)[-1]
            ):
                continue
            return bad
        return self._parts(table, dialect)

    def _parts(self, table: exp.Table, dialect: Dialect) -> tuple[str, ...] | SqlRefusal:
        parts = table.parts
        names: list[str] = []
        limit = _RULES_OF[type(dialect)].max_identifier_bytes
        for part in parts:
            if not isinstance(part, exp.Identifier) or not part.name:
                return SqlRefusal(
                    f"table {table.sql(dialect=dialect)[:80]!r} has an empty or computed part",
                    "name the table as proj.dataset.table",
                )
            if limit is not None and len(part.name.encode("utf-8", "surrogatepass")) > limit:
                return SqlRefusal(
                    f"the name {part.name[:40]!r}... is longer than {limit} bytes; the "
                    "database truncates it, so the guard cannot tell which table it names",
                    f"use the table's real name (at most {limit} bytes)",
                )
            names.append(self._normalize(part, dialect))
        return tuple(names)

    @staticmethod
    def _normalize(identifier: exp.Identifier, dialect: Dialect) -> str:
        if _RULES_OF[type(dialect)].names_as_written:
            # Dataset and table names are case-sensitive in BigQuery, quoted or not.
            return identifier.name
        copy = exp.Identifier(this=identifier.name, quoted=identifier.quoted)
        return _FOLD_AS.get(type(dialect), dialect).normalize_identifier(copy).name

    def _cte_name(self, identifier: exp.Identifier, dialect: Dialect) -> str:
        # Folded as table names are, not as sqlglot matches CTEs: where names keep their
        # case (BigQuery), one that differs from a CTE only in case is read as a table
        # (asking for a grant the engine may not need is safe; the reverse is not).
        return self._normalize(identifier, dialect)

    def _default_path(self, connection: Connection) -> tuple[str, ...] | SqlRefusal:
        key = (connection.dialect, connection.default_path)
        try:
            with self._lock:
                return self._defaults[key]
        except KeyError:
            pass
        out: list[str] = []
        result: tuple[str, ...] | SqlRefusal
        for part in connection.default_path:
            parsed = self._parse_name(part, connection.dialect)
            if isinstance(parsed, SqlRefusal) or len(parsed) != 1:
                result = SqlRefusal(
                    f"the connection's default_path part {part[:80]!r} is not one name",
                    "fix the connection's default_path in the guard's configuration",
                )
                break
            out.append(parsed[0])
        else:
            result = tuple(out)
        with self._lock:
            self._defaults[key] = result
        return result

    def _qualify(
        self,
        parts: tuple[str, ...],
        want: int,
        connection: Connection,
        shown: str,
        hint: str,
    ) -> tuple[str, ...] | SqlRefusal:
        missing = want - len(parts)
        if missing > 0:
            default = self._default_path(connection)
            if isinstance(default, SqlRefusal):
                return default
            if missing > len(default):
                return SqlRefusal(f"{shown!r} is not fully qualified", hint)
            parts = default[:missing] + parts
        if parts and DIALECTS[connection.dialect].lower_first_part:
            # GCP project ids are lower case; BigQuery accepts them in any case.
            parts = (parts[0].lower(), *parts[1:])
        return parts

    def _resolve(
        self, parts: tuple[str, ...], shown: str, connection: Connection
    ) -> tuple[str, ...] | SqlRefusal:
        example = self._example(connection)
        hint = f"qualify it as {example}"
        if any("*" in p for p in parts):
            return SqlRefusal(
                f"{shown!r} is a wildcard table; the guard cannot tell which tables it reads",
                "name each table, or union the tables you need",
            )
        rules = DIALECTS[connection.dialect]
        if _reads_a_file(parts, rules):
            return SqlRefusal(
                f"{shown!r} names a file, not a table; files are not granted sources",
                "load the file into a table and grant that table",
            )
        depth = connection.depth
        system = (
            len(parts) == depth + 1
            and rules.system_extra_part
            and is_system_table(parts)
        )
        if len(parts) > depth and not system:
            return SqlRefusal(f"{shown!r} has more than {depth} parts", f"write it as {example}")
        if len(parts) == 2 and depth == 3 and rules.two_part_ambiguous:
            return SqlRefusal(
                f"{shown!r} may name catalog.table or schema.table, depending on what exists",
                f"write it as {example}, or as the table name alone",
            )
        if len(parts) == 1:
            prefixes = rules.catalog_prefixes
            if prefixes and parts[0].lower().startswith(prefixes):
                return SqlRefusal(
                    f"{shown!r} may name a system catalog table, which is searched first", hint
                )
        return self._qualify(parts, depth, connection, shown, hint)

    def _function_path(self, idents: list[exp.Identifier], dialect_name: str) -> tuple[str, ...]:
        """A function's name parts folded by the dialect's rule (for the allow-list)."""
        rules = DIALECTS[dialect_name]
        if rules.names_as_written:
            # BigQuery: a quoted `proj.ds.fn` is a path. Built-in names are case-insensitive;
            # in a qualified UDF name the dataset and the function are case-sensitive, the
            # project is not (project ids are lower case).
            parts = [
                p for i in idents for p in (i.name.split(".") if rules.quoted_paths else (i.name,))
            ]
            if len(parts) == 1:
                return (parts[0].lower(),)
            if len(parts) >= 3 and rules.lower_first_part:
                parts[0] = parts[0].lower()
            return tuple(parts)
        dialect = self._dialects[dialect_name]
        return tuple(self._normalize(i, dialect) for i in idents)

    def _function_allowed(self, node: exp.Expression, dialect_name: str) -> bool:
        this = node.this
        idents = [this if isinstance(this, exp.Identifier) else exp.Identifier(
            this=node.name, quoted=False)]
        parent = node.parent
        if isinstance(parent, _NET_FUNC):
            # sqlglot reads BigQuery's NET.HOST(x) as NetFunc(HOST(x)).
            idents = [exp.Identifier(this="net", quoted=False), *idents]
        # BigQuery writes UDFs as `proj`.ds.fn(...): a Dot chain whose last part is the call.
        while isinstance(parent, exp.Dot) and parent.expression is node:
            left = parent.this
            if isinstance(left, exp.Dot | exp.Identifier | exp.Column):
                prefix = _flatten(left)
                if not prefix:
                    return False
                idents = prefix + idents
            else:
                return False
            node = parent
            parent = node.parent
        path = self._function_path(idents, dialect_name)
        if not path or not all(path):
            return False
        if path in self._functions[dialect_name]:
            return True
        if len(path) == 2 and DIALECTS[dialect_name].names_as_written:
            # BigQuery: SAFE.fn() is fn returning NULL on error; NET.HOST, HLL_COUNT.MERGE,
            # KEYS.*... are dotted built-ins (case-insensitive, unlike a dataset.udf path).
            head = path[0].lower()
            tail = ((path[1].lower(),) if head == "safe" else (f"{head}.{path[1].lower()}",))
            if tail in self._functions[dialect_name]:
                return True
        return (
            len(path) > 1
            and path[:-1] in self._function_prefixes[dialect_name]
            and path[-1:] not in _BUILTIN_REFUSED.get(dialect_name, {})
        )

    # -- queries ------------------------------------------------------------------------

    def _analyze(self, query: str, connection: Connection) -> QueryAnalysis | SqlRefusal:
        if not query.strip():
            return SqlRefusal("the query is empty", "send one SELECT")
        dialect = self._dialects[connection.dialect]
        try:
            tokens = dialect.tokenize(query)
            too_nested = _nesting_refusal(tokens)
            if too_nested is not None:
                return too_nested
            ambiguous = self._token_refusal(tokens, query, connection.dialect)
            if ambiguous is not None:
                return ambiguous
            parsed = dialect.parser().parse(tokens, query)
        except ParseError as exc:
            first = exc.errors[0] if exc.errors else {}
            description = str(first.get("description", ""))
            what = "" if "<Token" in description else f": {description[:160]}"
            near = str(first.get("highlight", ""))[:40]
            where = f" near {near!r} (line {first.get('line')}, column {first.get('col')})"
            return SqlRefusal(
                f"the query does not parse as {connection.dialect} SQL"
                f"{where if first else ''}{what}",
                f"fix the SQL; it is read in the {connection.dialect} dialect",
            )
        except RecursionError:
            return _TOO_DEEP
        except Exception as exc:
            # Fail closed on tokenizer errors and anything else sqlglot raises.
            return SqlRefusal(
                f"the query does not parse as {connection.dialect} SQL ({type(exc).__name__})",
                f"fix the SQL; it is read in the {connection.dialect} dialect",
            )
        statements = [s for s in parsed if s is not None]
        if not statements:
            return SqlRefusal("the query is empty", "send one SELECT")
        if len(statements) > 1:
            return SqlRefusal(
                f"the query runs {len(statements)} statements; send one SELECT",
                "remove every statement but the SELECT, and any ';' inside it",
            )
        root = statements[0]
        if not isinstance(root, exp.Select | exp.SetOperation | exp.Subquery):
            return _refuse_node(root)
        prefix = self._default_path(connection)
        if isinstance(prefix, SqlRefusal):
            return prefix
        ctx = _Context(dialect, connection.dialect, prefix, tokens)
        try:
            refusal = self._walk(root, frozenset(), ctx, connection)
            if refusal is not None:
                return refusal
            for table, key in ctx.rewrites:
                _write_key(table, key)
            text = root.sql(dialect=dialect, comments=False)
        except RecursionError:
            return _TOO_DEEP
        analysis = QueryAnalysis(frozenset(ctx.tables), text)
        if self._pg_check and DIALECTS[connection.dialect].postgres_parser:
            disagreement = self._postgres_disagrees(
                _bound_for_postgres(query, tokens), analysis, connection
            )
            if disagreement is not None:
                return disagreement
        return analysis

    def _postgres_disagrees(
        self, query: str, analysis: QueryAnalysis, connection: Connection
    ) -> SqlRefusal | None:
        """Refuse when PostgreSQL's own parser reads a relation the guard did not list."""
        try:
            names = pg_parser.relations(query)
        except pg_parser.PgParseError as exc:
            return SqlRefusal(
                f"PostgreSQL's parser rejects the query: {str(exc)[:160]}",
                "fix the SQL; it is read in the postgres dialect",
            )
        hint = f"qualify it as {self._example(connection)}"
        for catalog, schema, name in names:
            parts = tuple(p for p in (catalog, schema, name) if p is not None)
            key = self._qualify(parts, connection.depth, connection, name, hint)
            if isinstance(key, SqlRefusal) or key not in analysis.tables:
                shown = ".".join(parts)[:80]
                return SqlRefusal(
                    f"PostgreSQL's parser reads {shown!r}, which the guard's reading of the "
                    "query does not list",
                    "write the query more plainly (name each table once, fully qualified)",
                )
        return None

    def _kind(self, node_type: type[exp.Expression]) -> int:
        kind = self._kinds.get(node_type)
        if kind is None:
            kind = classify(node_type)
            self._kinds[node_type] = kind
        return kind

    def _token_refusal(
        self, tokens: list[Token], query: str, dialect_name: str
    ) -> SqlRefusal | None:
        """Refuse text that the engine may split into tokens or names unlike sqlglot."""
        rules = DIALECTS[dialect_name]
        last = len(tokens) - 1
        for i, token in enumerate(tokens):
            kind = token.token_type
            if kind is TokenType.UNKNOWN:
                # A character sqlglot's tokenizer does not know may be a quote to the engine:
                # DuckDB quotes identifiers with `, so `--x` FROM t is no comment there.
                return SqlRefusal(
                    f"the query contains {token.text[:20]!r}, which the guard's "
                    f"{dialect_name} tokenizer does not know; the database may read it "
                    "as a quote or an operator",
                    "remove that character, or quote names the dialect's own way",
                )
            if kind is TokenType.DOT and (
                i == 0
                or i == last
                or tokens[i - 1].token_type in _NO_NAME_BEFORE_DOT
                or tokens[i + 1].token_type in _NO_NAME_AFTER_DOT
            ) and not _leading_dot_number(tokens, i):
                return SqlRefusal(
                    "a name in the query has an empty part (as in a..b); engines fill it "
                    "differently (Snowflake reads a..b as a.PUBLIC.b)",
                    "write every part of the name, e.g. database.schema.table",
                )
            if (
                rules.quoted_paths
                and kind is TokenType.IDENTIFIER
                and "." in token.text
                and "" in token.text.split(".")
            ):
                return SqlRefusal(
                    f"the quoted name {token.text[:80]!r} has an empty part",
                    "write every part of the name, e.g. `proj.dataset.table`",
                )
            for comment in token.comments or ():
                if rules.mode_comments and comment.strip().lower().startswith(
                    rules.mode_comments
                ):
                    return SqlRefusal(
                        f"the comment {comment.strip()[:40]!r} switches {dialect_name} to "
                        "another SQL language, which the guard does not read",
                        "remove the comment; queries are read as standard SQL",
                    )
                if "/*" in comment or "*/" in comment:
                    return SqlRefusal(
                        "a comment in the query contains '/*' or '*/'; engines differ on "
                        "whether comments nest, so the guard cannot tell where it ends",
                        "remove the comment, or the '/*' inside it",
                    )
        other = self._other_tokenizers.get(dialect_name)
        if other is not None and "\\" in query:
            mine = [(t.token_type, t.start, t.end) for t in tokens]
            theirs = other(dialect=self._dialects[dialect_name]).tokenize(query)
            if mine != [(t.token_type, t.start, t.end) for t in theirs]:
                return SqlRefusal(
                    "a string in the query ends at a different place depending on whether "
                    f"a backslash escapes a quote ({rules.escape_setting})",
                    "write a quote inside a string as '' and avoid a backslash before it",
                )
        return None

    def _range_name(self, identifier: exp.Identifier, ctx: _Context) -> str:
        if ctx.rules.range_names_any_case:
            return identifier.name.lower()  # BigQuery range variables are case-insensitive
        return self._normalize(identifier, ctx.dialect)

    def _implicit_unnests(self, select: exp.Select, ctx: _Context) -> SqlRefusal | None:
        """``FROM t, t.arr``: check each path sqlglot turned into an UNNEST of a column.

        sqlglot's BigQuery and Redshift parsers rewrite a joined path whose first part
        names an earlier FROM item into ``UNNEST(path)``, so the guard sees no table. The
        engine agrees only when the first identifier, as written, is that range variable:
        a quoted identifier holding dots (`t.ds.x`) is a table path there, and a match that
        holds only after sqlglot's case folding may not hold in the engine. Anything but
        the plain shape is refused.
        """
        source = select.args.get("from_")
        names: set[str] = set()
        if isinstance(source, exp.From):
            name = _range_identifier(source.this)
            if name is not None:
                names.add(self._range_name(name, ctx))
        for join in select.args.get("joins") or ():
            item = join.this
            if isinstance(item, exp.Unnest) and not self._written_unnest(item, ctx):
                column = item.expressions[0] if len(item.expressions) == 1 else None
                idents = _flatten(column) if isinstance(column, exp.Column | exp.Dot) else []
                shown = ".".join(p.name for p in idents)[:80]
                if (
                    len(idents) < 2
                    or self._range_name(idents[0], ctx) not in names
                    or any(self._quoted_path(i, ctx) for i in idents)
                ):
                    first = idents[0].name if idents else ""
                    return SqlRefusal(
                        f"{shown!r} starts like the range variable {first!r} but the engine "
                        "may read it as a table path",
                        f"write UNNEST({first}.column) for an array column, or give the "
                        "table an alias that no other name starts with",
                    )
            name = _range_identifier(item)
            if name is not None:
                names.add(self._range_name(name, ctx))
        return None

    def _written_unnest(self, unnest: exp.Unnest, ctx: _Context) -> bool:
        """True when the query text says UNNEST( right before the unnested expression."""
        expressions = unnest.expressions
        if len(expressions) != 1 or not isinstance(expressions[0], exp.Column | exp.Dot):
            return True  # sqlglot's rewrite makes UNNEST(<column path>) only
        starts = [i.meta.get("start") for i in expressions[0].find_all(exp.Identifier)]
        if not starts or not all(isinstance(v, int) for v in starts):
            return False
        start = min(v for v in starts if isinstance(v, int))
        if ctx.starts is None:
            ctx.starts = {t.start: i for i, t in enumerate(ctx.tokens)}
        index = ctx.starts.get(start)
        if index is None or index < 2:
            return False
        tokens = ctx.tokens
        return (
            tokens[index - 1].token_type is TokenType.L_PAREN
            and tokens[index - 2].token_type is TokenType.UNNEST
        )

    def _quoted_path(self, identifier: exp.Identifier, ctx: _Context) -> bool:
        """True unless the identifier is exactly one token of the text (not split from `a.b`).

        sqlglot splits a quoted `a.b` into identifiers that all carry the position of the
        path's last token, so a name that differs from the token at its position was split.
        """
        if "." in identifier.name:
            return True
        start = identifier.meta.get("start")
        if not isinstance(start, int) or ctx.starts is None:
            return True
        index = ctx.starts.get(start)
        return index is None or ctx.tokens[index].text != identifier.name

    def _walk(
        self,
        node: exp.Expression,
        visible: frozenset[str],
        ctx: _Context,
        connection: Connection,
    ) -> SqlRefusal | None:
        kind = self._kind(type(node))
        if kind == DENY and not (ctx.rules.postgis_operators and is_spatial_operator(node)):
            return _refuse_node(node)
        if kind == FUNCTION and not self._function_allowed(node, ctx.name):
            call = node.name or type(node).__name__
            why = _BUILTIN_REFUSED.get(ctx.name, {}).get(
                self._function_path([exp.Identifier(this=call, quoted=False)], ctx.name)
            )
            if why is not None:
                return SqlRefusal(
                    f"the query calls {call}, which {why}",
                    "remove that function; read granted tables with a plain SELECT",
                )
            return SqlRefusal(
                f"the query calls {call}, which the guard does not know to be read-only",
                "remove it, or ask the operator to list it in allowed_functions",
            )
        if isinstance(node, exp.DataType) and ctx.name != "sqlite":
            refusal = _named_type(node)
            if refusal is not None:
                return refusal
        if kind == TABLE:
            assert isinstance(node, exp.Table)
            refusal = self._table(node, visible, ctx, connection)
            if refusal is not None:
                return refusal
        elif (
            isinstance(node, exp.Lateral | exp.TableFromRows)
            and not isinstance(node.this, (exp.Subquery, *ROW_SOURCES))
            and not _builtin_row_source(node.this, ctx)
        ):
            return _table_function(node.this, ctx)
        elif ctx.rules.implicit_unnest and isinstance(node, exp.Select) and node.args.get(
            "joins"
        ):
            refusal = self._implicit_unnests(node, ctx)
            if refusal is not None:
                return refusal
        with_ = node.args.get("with_")
        if with_ is not None:
            result = self._with(with_, visible, ctx, connection)
            if isinstance(result, SqlRefusal):
                return result
            visible = result
        for arg, value in node.args.items():
            if arg == "with_":
                continue
            children = value if isinstance(value, list) else (value,)
            for child in children:
                if isinstance(child, exp.Expression):
                    refusal = self._walk(child, visible, ctx, connection)
                    if refusal is not None:
                        return refusal
        return None

    def _with(
        self,
        with_: exp.Expression,
        visible: frozenset[str],
        ctx: _Context,
        connection: Connection,
    ) -> frozenset[str] | SqlRefusal:
        if not isinstance(with_, exp.With):
            return _refuse_node(with_)
        recursive = bool(with_.args.get("recursive"))
        defined: list[str] = []
        for cte in with_.expressions:
            if not isinstance(cte, exp.CTE):
                return _refuse_node(cte)
            alias = cte.args.get("alias")
            if not isinstance(alias, exp.TableAlias) or not isinstance(
                alias.this, exp.Identifier
            ):
                return _refuse_node(cte)
            name = self._cte_name(alias.this, ctx.dialect)
            # A non-recursive CTE sees only the CTEs before it; a recursive one also itself.
            # Forward references stay real tables: over-asking is safe, under-asking is not.
            sees = visible.union(defined, (name,) if recursive else ())
            refusal = self._walk(cte, sees, ctx, connection)
            if refusal is not None:
                return refusal
            defined.append(name)
        search = with_.args.get("search")
        inner = visible.union(defined)
        if isinstance(search, exp.Expression):
            refusal = self._walk(search, inner, ctx, connection)
            if refusal is not None:
                return refusal
        return inner

    def _table(
        self,
        table: exp.Table,
        visible: frozenset[str],
        ctx: _Context,
        connection: Connection,
    ) -> SqlRefusal | None:
        target = table.this
        if isinstance(target, ROW_SOURCES):
            return None
        if not isinstance(target, exp.Identifier | exp.Dot):
            qualified = table.args.get("db") or table.args.get("catalog")
            if not qualified and _builtin_row_source(target, ctx):
                return None  # its arguments are walked like any expression's
            return _table_function(target, ctx)
        if (
            isinstance(target, exp.Identifier)
            and not table.args.get("db")
            and not table.args.get("catalog")
            and self._cte_name(target, ctx.dialect) in visible
        ):
            return None
        parts = self._parts(table, ctx.dialect)
        if isinstance(parts, SqlRefusal):
            return parts
        shown = ".".join(p.name for p in table.parts)[:80]
        key = self._resolve(parts, shown, connection)
        if isinstance(key, SqlRefusal):
            return key
        ctx.tables.add(key)
        ctx.rewrites.append((table, key))
        return None


def _check_not_refused(names: Iterable[str]) -> None:
    """allowed_functions may not name a refused built-in: it would read what no grant covers."""
    for name in names:
        last = name.rsplit(".", 1)[-1].lower()
        schema = name.rsplit(".", 1)[0].lower() if "." in name else ""
        for dialect, catalogue in CATALOGUES.items():
            why = catalogue.refused.get(last)
            if why is not None and schema in ("", "pg_catalog", "main"):
                raise ConfigurationError(
                    f"allowed_functions: {name!r} is a {dialect} built-in that {why}; it "
                    "stays refused (remove it from allowed_functions)"
                )
        if schema in ("pg_catalog", "information_schema") and last == "*":
            raise ConfigurationError(
                f"allowed_functions: {name!r} would allow the catalog's functions, some of "
                "which read or change what no grant covers; list the functions you need"
            )


def _leading_dot_number(tokens: list[Token], i: int) -> bool:
    """True for a number written ``.25`` (a DOT right before digits, where a value starts)."""
    if i == len(tokens) - 1 or (i > 0 and tokens[i - 1].token_type is TokenType.DOT):
        return False
    after = tokens[i + 1]
    return (
        after.token_type is TokenType.NUMBER
        and after.start == tokens[i].end + 1
        and after.text.isdigit()
        and (i == 0 or tokens[i - 1].token_type in _VALUE_STARTS)
    )


def _nesting_refusal(tokens: list[Token]) -> SqlRefusal | None:
    starts: list[int] = []
    mass = 0
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        kind = token.token_type
        if kind is TokenType.L_PAREN:
            subquery = i < last and tokens[i + 1].token_type in _SUBQUERY_STARTS
            starts.append(i if subquery else -1)
            if len(starts) > MAX_NESTING:
                return _TOO_DEEP
        elif kind is TokenType.R_PAREN and starts:
            start = starts.pop()
            if start >= 0:
                mass += i - start
    if mass > MAX_SUBQUERY_MASS:
        return SqlRefusal(
            "the query's nested subqueries are too large for the guard to analyse quickly",
            "flatten the query: use CTEs (WITH) instead of deeply nested subqueries",
        )
    return None


def _guarded(
    analyse: Callable[[str, Connection], _R | SqlRefusal], text: str, connection: Connection
) -> _R | SqlRefusal:
    """Run one analysis step; any exception out of sqlglot becomes a refusal, never a 500."""
    try:
        return analyse(text, connection)
    except RecursionError:
        return _TOO_DEEP
    except Exception as exc:
        # sqlglot raises from generation and optimisation on trees it parsed (KeyError,
        # TypeError, OptimizeError...). The text is not logged: it may hold literals.
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        log.debug(
            "%s SQL analysis failed: %s at %s:%s", connection.dialect, type(exc).__name__,
            frame.filename, frame.lineno,
        )
        return SqlRefusal(
            f"the query could not be analysed by the guard ({type(exc).__name__} "
            f"in the {connection.dialect} SQL analyser)",
            "rewrite the query more plainly (another spelling of the same function or "
            "clause usually works)",
        )


def _bound_for_postgres(query: str, tokens: list[Token]) -> str:
    """The query with ``:name`` and ``?`` placeholders as ``$1``, as PostgreSQL receives it.

    The backend binds these before PostgreSQL parses the query; PostgreSQL's parser would
    reject them. A span misjudged here only makes that parser refuse (a false refusal).
    """
    pieces: list[str] = []
    last = 0
    i = 0
    n = len(tokens)
    while i < n:
        token = tokens[i]
        end = -1
        if token.token_type is TokenType.PLACEHOLDER and token.text == "?":
            end = token.end
        elif (
            token.token_type is TokenType.COLON
            and i + 1 < n
            and tokens[i + 1].start == token.end + 1
            and tokens[i + 1].token_type is TokenType.VAR
            and (i == 0 or tokens[i - 1].token_type not in _OPERAND_ENDS)
        ):
            end = tokens[i + 1].end
            i += 1
        if end >= 0:
            pieces.append(query[last : token.start])
            pieces.append("$1")
            last = end + 1
        i += 1
    if not pieces:
        return query
    pieces.append(query[last:])
    return "".join(pieces)


def _reads_a_file(parts: tuple[str, ...], rules: DialectRules) -> bool:
    """True when the engine may read the name as a file: a path, or Spark's format.path."""
    chars = rules.file_path_chars
    return any(ch in part for part in parts for ch in chars) or (
        len(parts) == 2 and parts[0].lower() in rules.file_formats
    )


def _flatten(node: exp.Expression) -> list[exp.Identifier]:
    if isinstance(node, exp.Identifier):
        return [node]
    if isinstance(node, exp.Dot):
        return _flatten(node.this) + _flatten(node.expression)
    if isinstance(node, exp.Column):
        return [p for p in node.parts if isinstance(p, exp.Identifier)]
    return []


# sqlglot's nodes for built-in set-returning functions, by the name the catalogue lists.
_ROW_FUNCTION_NAMES: dict[type[exp.Expression], str] = {
    getattr(exp, cls): name
    for cls, name in (("GenerateSeries", "generate_series"),
                      ("ExplodingGenerateSeries", "generate_series"))
    if hasattr(exp, cls)
}


def _builtin_row_source(target: exp.Expression | None, ctx: _Context) -> bool:
    """True for an unqualified built-in the catalogue lists as a pure read (``FROM ST_Dump(g)``).

    Such a function reads only its arguments, which the walk checks. Functions named only in
    ``allowed_functions`` (UDFs) are not trusted as table sources: one may read a table.
    """
    if isinstance(target, exp.Cast):
        return True  # FROM CAST('POINT(0 1)' AS geometry) AS g: one row, its value
    if not isinstance(target, exp.Func) or isinstance(target.parent, exp.Dot):
        return False
    if isinstance(target, NAMED_FUNCTIONS):
        if not isinstance(target.this, str):
            return False
        name = target.this
    else:
        name = _ROW_FUNCTION_NAMES.get(type(target), target.sql_name())
    ident = exp.Identifier(this=name, quoted=False)
    reads = _BUILTIN_READS.get(ctx.name, frozenset())
    path = (name.lower(),) if ctx.rules.names_as_written else (
        _FOLD_AS.get(type(ctx.dialect), ctx.dialect).normalize_identifier(ident).name,
    )
    return classify(type(target)) != DENY and path in reads


def _table_function(target: exp.Expression | None, ctx: _Context) -> SqlRefusal:
    if isinstance(target, exp.Var) and str(target.this).startswith("@"):
        return SqlRefusal(
            f"the query reads the stage {target.this!s}; stages are files, not granted tables",
            "load the files into a table and grant that table",
        )
    if isinstance(target, exp.Func):
        name = target.name if isinstance(target, NAMED_FUNCTIONS) else target.sql_name()
        why = _BUILTIN_REFUSED.get(ctx.name, {}).get((name.lower(),)) or _BUILTIN_REFUSED.get(
            ctx.name, {}).get((name.upper(),))
        if why is not None:
            return SqlRefusal(
                f"the query reads from {name}, which {why}",
                "read granted tables directly; only UNNEST/FLATTEN of a column may be a table "
                "source",
            )
        what = f"the table function {name}" if name else "a table function"
    else:
        what = "a computed table source"
    return SqlRefusal(
        f"the query reads from {what}; the guard cannot tell which tables that reads",
        "read granted tables directly; only UNNEST/FLATTEN of a column may be a table source",
    )


def _write_key(table: exp.Table, key: tuple[str, ...]) -> None:
    """Spell a resolved table as its quoted key, so the fingerprint names the real table."""
    idents = [exp.Identifier(this=p, quoted=True) for p in key]
    # BigQuery otherwise re-prints `p.d.t` as written, so spellings would differ.
    table.meta.pop("quoted_table", None)
    if len(idents) >= 3:
        this: exp.Expression = idents[2]
        for extra in idents[3:]:
            this = exp.Dot(this=this, expression=extra)
        table.set("this", this)
        table.set("db", idents[1])
        table.set("catalog", idents[0])
    elif len(idents) == 2:
        table.set("this", idents[1])
        table.set("db", idents[0])
        table.set("catalog", None)
    else:
        table.set("this", idents[0])
        table.set("db", None)
        table.set("catalog", None)


def _range_identifier(item: exp.Expression) -> exp.Identifier | None:
    """The range variable a FROM item defines: its alias, else a table's last name part."""
    alias = item.args.get("alias")
    if isinstance(alias, exp.TableAlias):
        if isinstance(alias.this, exp.Identifier):
            return alias.this
        # BigQuery's UNNEST(x) AS a keeps the alias as the only column name.
        columns = alias.args.get("columns") or []
        if isinstance(item, exp.Unnest) and len(columns) == 1:
            column = columns[0]
            return column if isinstance(column, exp.Identifier) else None
    if isinstance(item, exp.Unnest) and len(item.expressions) == 1:
        path = _flatten(item.expressions[0])
        return path[-1] if path else None
    if isinstance(item, exp.Table):
        parts = item.parts
        if parts and isinstance(parts[-1], exp.Identifier):
            return parts[-1]
    return None

