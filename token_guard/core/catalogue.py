"""Each dialect's built-in functions, classified: pure reads, and refusals with their reason.

The data lives in ``token_guard/core/catalogues/<dialect>.tsv``, generated from each engine's
documented function reference by ``scripts/build_catalogues.py`` (PostgreSQL's ``pg_proc``
and PostGIS's install scripts, ``duckdb_functions()``, ZetaSQL's docs for BigQuery, the
Snowflake, Databricks and Redshift references). It is read once, at import, into frozensets:
a lookup on the analysis path is a set lookup.

Security choices: a name is refused when any of its overloads writes, reads files or tables
named by text, runs SQL given as text, or changes or reveals session state; a refused name
cannot be allowed by ``allowed_functions`` (that is a start-up error). Names are stored in
lower case and folded per dialect when the analyser builds its allow-list (Snowflake folds
unquoted names to upper case); a quoted name that differs from the folded one is not a
built-in there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

__all__ = ["CATALOGUES", "Catalogue"]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """One dialect's built-in functions: ``reads`` (allowed) and ``refused`` (name -> reason)."""

    reads: frozenset[str]
    refused: Mapping[str, str]


def _load(dialect: str) -> Catalogue:
    text = resources.files("token_guard.core").joinpath(f"catalogues/{dialect}.tsv").read_text(
        encoding="utf-8"
    )
    reads: set[str] = set()
    refused: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, kind, *reason = line.split("\t")
        if kind == "read":
            reads.add(name)
        else:
            refused[name] = reason[0] if reason else "not a pure read"
    return Catalogue(frozenset(reads), MappingProxyType(refused))


CATALOGUES: Mapping[str, Catalogue] = MappingProxyType(
    {
        dialect: _load(dialect)
        for dialect in ("bigquery", "snowflake", "databricks", "postgres", "redshift", "duckdb",
                        "sqlite")
    }
)
