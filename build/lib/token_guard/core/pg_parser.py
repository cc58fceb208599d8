"""A second reading of PostgreSQL queries, by PostgreSQL's own parser (optional: pglast).

``pglast`` wraps libpg_query, the PostgreSQL server's parser. When it is installed, the
analyser asks it which relations a query names and refuses the query if PostgreSQL would
read one that sqlglot's reading did not list (see ``SqlAnalyzer``). It costs about a tenth
of the guard's own analysis (the JSON parse tree, walked as plain dicts), on the cold path
only: results are cached per query text with the rest of the analysis.

Security choices: a query PostgreSQL's parser rejects is refused; a one-part name is taken
for a CTE when any enclosing WITH defines that name (a wider rule than the guard's, so
this reading never lists a table the guard rightly took for a CTE).
"""

from __future__ import annotations

import json
from typing import Any

try:
    from pglast.parser import ParseError, parse_sql_json
except ImportError:  # pragma: no cover - exercised where pglast is not installed
    AVAILABLE = False
else:
    AVAILABLE = True

__all__ = ["AVAILABLE", "PgParseError", "relations"]

Name = tuple[str | None, str | None, str]


class PgParseError(ValueError):
    """PostgreSQL's parser rejects the query; ``str()`` is its message."""


def relations(query: str) -> set[Name]:
    """(catalog, schema, relation) of every relation the query names, outside CTE names."""
    if not AVAILABLE:
        raise RuntimeError("pglast is not installed")
    try:
        tree = json.loads(parse_sql_json(query))
    except ParseError as exc:
        raise PgParseError(str(exc)) from None
    out: set[Name] = set()
    _walk(tree, frozenset(), out)
    return out


def _walk(node: Any, ctes: frozenset[str], out: set[Name]) -> None:
    if isinstance(node, list):
        for child in node:
            _walk(child, ctes, out)
        return
    if not isinstance(node, dict):
        return
    relation = node.get("RangeVar")
    if isinstance(relation, dict):
        catalog, schema = relation.get("catalogname"), relation.get("schemaname")
        name = str(relation.get("relname", ""))
        if catalog is None and schema is None and name in ctes:
            return
        out.add((catalog, schema, name))
        return
    with_clause = node.get("withClause")
    if isinstance(with_clause, dict):
        names = {
            str(cte["CommonTableExpr"].get("ctename", ""))
            for cte in with_clause.get("ctes", [])
            if isinstance(cte, dict) and isinstance(cte.get("CommonTableExpr"), dict)
        }
        ctes = ctes | names
    for value in node.values():
        if isinstance(value, dict | list):
            _walk(value, ctes, out)
