"""What each SQL dialect's engine does with names and text: one ``DialectRules`` per dialect.

``DIALECTS`` is the one table of per-dialect rules; ``token_guard.core.connections`` takes the
dialect names and depths from it and ``token_guard.core.sql`` reads every other rule from it.
Adding a dialect (one that sqlglot knows by the same name) is adding one entry here.

Security choice: a rule that tells more names apart than the engine, or calls more names
system tables, only over-asks (a grant the engine would not need); the reverse leaks. So
where unsure, an entry is finer than the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DIALECTS", "DialectRules"]


@dataclass(frozen=True, slots=True)
class DialectRules:
    """Where a dialect's engine reads names or text differently from sqlglot's defaults."""

    # Name parts of a fully qualified table.
    depth: int
    # A fully qualified name as people write it there, for hints ("" = database.schema.table).
    example: str = ""

    # -- case ----------------------------------------------------------------------------
    # Table names keep their case, quoted or not (sqlglot's folding is not used); one-part
    # function names (built-ins) compare in any case.
    names_as_written: bool = False
    # The first part of a qualified name is lower-cased (BigQuery project ids).
    lower_first_part: bool = False
    # Range variables (``FROM t, t.arr``) match in any case.
    range_names_any_case: bool = False
    # Fold identifiers with this dialect's rule instead of sqlglot's for the dialect.
    fold_as: str | None = None

    # -- names and text ------------------------------------------------------------------
    # ``FROM t, t.arr`` navigates a column of the range variable ``t`` (BigQuery arrays,
    # Redshift PartiQL); sqlglot rewrites such joins to UNNEST, the guard decides itself.
    implicit_unnest: bool = False
    # A quoted identifier holding dots is a path (BigQuery `a.b.c`).
    quoted_paths: bool = False
    # The engine setting that makes a backslash in '...' an escape, or not (None: fixed).
    escape_setting: str | None = None
    # A two-part name may be catalog.table or schema.table, depending on what exists.
    two_part_ambiguous: bool = False
    # Longer identifiers are truncated by the engine, so two spellings name one table.
    max_identifier_bytes: int | None = None
    # Comments that switch the engine to another SQL language (lower case, stripped).
    mode_comments: tuple[str, ...] = ()
    # PostgreSQL's own parser (pglast, where installed) must agree on the relations read.
    postgres_parser: bool = False
    # PostGIS's operators (&&&, <#>, @, |>>...) parse (token_guard.core.postgis).
    postgis_operators: bool = False

    # -- system tables -------------------------------------------------------------------
    # Unqualified names that may resolve in a catalog schema searched before the default
    # one (``pg_catalog`` comes first in a Postgres search path): refused.
    catalog_prefixes: tuple[str, ...] = ()
    # Schemas (lower case; exact, or by prefix) and first parts of a name of three or more
    # parts (catalogs) that hold the engine's own tables: only an exact grant allows them.
    system_schemas: frozenset[str] = frozenset()
    system_schema_prefixes: tuple[str, ...] = ()
    system_catalogs: frozenset[str] = frozenset()
    # Meta-tables named ``__NAME__`` list a dataset's tables (BigQuery ``ds.__TABLES__``).
    dunder_meta_tables: bool = False
    # A catalog view may take one part more than a table (BigQuery
    # `proj.region-us.INFORMATION_SCHEMA.TABLES`); elsewhere the engine reads such a name
    # otherwise (DuckDB drops a part of `a.b.information_schema.tables`).
    system_extra_part: bool = False

    # -- file readers --------------------------------------------------------------------
    # A name part holding one of these characters is a file path to the engine (DuckDB
    # reads 'data.csv' when no table has that name; Spark `json`.`s3://...`).
    file_path_chars: str = ""
    # ``format.path`` two-part names that read files (Spark/Databricks), lower case.
    file_formats: frozenset[str] = frozenset()


_PG_CATALOG = "pg_catalog"

DIALECTS: Mapping[str, DialectRules] = MappingProxyType(
    {
        # "#legacySQL" runs the query as legacy SQL: commas are UNION ALL, [p:d.t] names.
        "bigquery": DialectRules(
            depth=3,
            example="proj.dataset.table",
            names_as_written=True,
            lower_first_part=True,
            range_names_any_case=True,
            implicit_unnest=True,
            quoted_paths=True,
            mode_comments=("legacysql",),
            dunder_meta_tables=True,
            system_extra_part=True,
        ),
        "snowflake": DialectRules(
            depth=3,
            example="database.schema.table",
            system_catalogs=frozenset({"snowflake"}),  # the shared ACCOUNT_USAGE database
        ),
        "databricks": DialectRules(
            depth=3,
            example="catalog.schema.table",
            escape_setting="spark.sql.parser.escapedStringLiterals",
            system_catalogs=frozenset({"system"}),
            file_path_chars="/:",
            file_formats=frozenset(
                {"avro", "binaryfile", "csv", "delta", "json", "orc", "parquet", "text", "xml"}
            ),
        ),
        # database.schema.table, as CARTO names them.
        "postgres": DialectRules(
            depth=3,
            escape_setting="standard_conforming_strings",
            max_identifier_bytes=63,
            postgres_parser=True,
            postgis_operators=True,
            catalog_prefixes=("pg_",),
            system_schemas=frozenset({_PG_CATALOG, "pg_toast"}),
            system_schema_prefixes=("pg_temp", "pg_toast_temp"),
        ),
        # sqlglot folds quoted Redshift names too; with enable_case_sensitive_identifier on,
        # "Secret" and secret are two tables, so names keep PostgreSQL's rule (finer is safe).
        "redshift": DialectRules(
            depth=3,
            fold_as="postgres",
            implicit_unnest=True,
            escape_setting="standard_conforming_strings",
            max_identifier_bytes=127,
            catalog_prefixes=("pg_", "stl_", "stv_", "svl_", "svv_", "svcs_", "stcs_", "sys_"),
            system_schemas=frozenset({_PG_CATALOG, "pg_internal"}),
            system_schema_prefixes=("pg_temp",),
        ),
        # catalog.schema.table
        "duckdb": DialectRules(
            depth=3,
            two_part_ambiguous=True,
            catalog_prefixes=("pg_", "duckdb_", "sqlite_"),
            system_schemas=frozenset({_PG_CATALOG}),
            file_path_chars="./\\:",
        ),
        "sqlite": DialectRules(depth=1, catalog_prefixes=("sqlite_",)),
    }
)
