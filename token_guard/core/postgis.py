"""PostGIS's operators for sqlglot's PostgreSQL dialect: ``PostGIS``, which parses them.

sqlglot's Postgres dialect reads some PostGIS operators (``&&``, ``<->``, ``<<->>``, ``&<``,
``&>``, ``<<``, ``>>``, ``~``, ``@>``, ``<@``) and fails on the others (``&&&``, ``~=``,
``<#>``, ``<<#>>``, ``@``, ``|>>``, ``<<|``, ``&<|``, ``|&>``, ``|=|``). ``PostGIS`` reads
those as sqlglot's ``Operator`` node with the operator unqualified, which is what
PostgreSQL reads ``a &&& b`` as (``a OPERATOR(&&&) b``); the guard allows an ``Operator``
only when it is one of these (``is_spatial_operator``) and walks its operands like any other
expression (a subquery operand is checked like any subquery).

How: sqlglot's parser and expressions are compiled (mypyc) and cannot be subclassed, so the
``PostGIS`` dialect only swaps the tokenizer (pure Python): it emits the new operators as
one token type the stock Postgres tokenizer never produces (``_TOKEN``), and this module
registers, once at import, a range parser for that token type. The registration changes
nothing sqlglot reads from text its own Postgres tokenizer produces.

Security choices: only the operator spellings PostGIS defines are added; anything else stays
a parse error, and so does ``@`` in front of an operand (PostgreSQL's prefix ``@``, absolute
value). The operators compare values; none reads a table. Their precedence is sqlglot's
range level (PostgreSQL's "any other operator" binds a little tighter), which can change the
tree's shape but never which tables the query names; PostgreSQL's own parser (pglast) still
reads the query as the server does.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokenizer_core import TokenType

__all__ = ["OPERATORS", "SPATIAL_OPERATORS", "PostGIS", "is_spatial_operator"]

# PostGIS operators sqlglot's Postgres tokenizer does not know (doc/reference_operator.xml).
OPERATORS: tuple[str, ...] = (
    "&&&", "~=", "<#>", "<<#>>", "|>>", "<<|", "&<|", "|&>", "|=|", "@",
)
# A token type the stock Postgres tokenizer never emits (``**`` is not a Postgres operator).
_TOKEN = TokenType.DSTAR


# Every PostGIS operator, spelled as written (the ones sqlglot reads natively included, for
# a query that spells them OPERATOR(&&)).
SPATIAL_OPERATORS: frozenset[str] = frozenset(
    {*OPERATORS, "&&", "<->", "<<->>", "&<", "&>", "<<", ">>", "~", "@>", "<@", "="}
)


def is_spatial_operator(node: exp.Expression) -> bool:
    """True for ``a OPERATOR(op) b`` with ``op`` a PostGIS operator, unqualified."""
    return isinstance(node, exp.Operator) and node.args.get("operator") in SPATIAL_OPERATORS


def _parse_operator(parser: Any, this: exp.Expression | None) -> exp.Expression:
    op = parser._prev.text
    right = parser._parse_bitwise()
    node: exp.Expression = parser.expression(exp.Operator(this=this, operator=op, expression=right))
    return node


class PostGIS(Postgres):
    """sqlglot's Postgres dialect, reading PostGIS's operators too."""

    class Tokenizer(Postgres.Tokenizer):
        KEYWORDS: ClassVar[dict[str, TokenType]] = {
            **Postgres.Tokenizer.KEYWORDS,
            **dict.fromkeys(OPERATORS, _TOKEN),
        }
        # "@" is an operator here, not the start of a parameter.
        SINGLE_TOKENS: ClassVar[dict[str, TokenType]] = {
            k: v for k, v in Postgres.Tokenizer.SINGLE_TOKENS.items() if k != "@"
        }


def _register() -> None:
    ranges = Postgres.Parser.RANGE_PARSERS
    if ranges.get(_TOKEN, _parse_operator) is not _parse_operator:
        raise RuntimeError(f"sqlglot's Postgres parser already reads {_TOKEN}; update postgis.py")
    ranges[_TOKEN] = _parse_operator


_register()
