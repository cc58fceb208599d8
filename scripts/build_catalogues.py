"""Rebuild token_guard/core/catalogues/<dialect>.tsv from each engine's function reference.

Run from the repository root: ``python scripts/build_catalogues.py [--mirror DIR]``.

Sources (data only; no code is copied):

* postgres: the live PostgreSQL's ``pg_proc`` (``pg_catalog``: name, ``provolatile``,
  ``prokind``, argument types), plus PostGIS's install scripts (``postgis.sql.in``,
  ``geography.sql.in``, ``rtpostgis.sql.in``, ``sfcgal.sql.in``: every CREATE FUNCTION /
  CREATE AGGREGATE with its volatility) from a checkout of github.com/postgis/postgis.
* redshift: the PostgreSQL list (Redshift's leader node is PostgreSQL 8) plus
  scripts/catalogue_sources/redshift.txt (the documented spatial and H3 functions).
* duckdb: ``duckdb_functions()`` of the installed duckdb package, plus the spatial
  extension's docs/functions.md (github.com/duckdb/duckdb-spatial).
* bigquery: the function headings of ZetaSQL's docs/*functions*.md (github.com/google/zetasql,
  BigQuery's SQL language) plus scripts/catalogue_sources/bigquery.txt.
* snowflake, databricks: scripts/catalogue_sources/<dialect>.txt (names from the documented
  function references; each file names its pages).

Each output line is ``name<TAB>read`` or ``name<TAB>refused<TAB>reason``; names are lower case
(built-in names are case-insensitive in every engine; the analyser folds them per dialect).
A name is refused when any overload is: it writes, reads files or tables named by text,
runs SQL given as text, changes or reveals session state, or is volatile in a way a read
does not need.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "token_guard" / "core" / "catalogues"
SOURCES = Path(__file__).resolve().parent / "catalogue_sources"

# -- refusals shared by PostgreSQL-like engines ----------------------------------------
WRITES = "writes or changes the database"
RUNS_SQL = "runs SQL given as text, which the guard cannot check"
READS_FILES = "reads files or the server's environment"
NAMES_TABLES = "reads a table or catalog object named by its arguments, which no grant covers"
SESSION = "changes or reveals session or server state"
OTHER_DB = "reaches another database or server"

# Name patterns refused whatever their volatility (checked in order).
PG_REFUSED_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^(query|cursor)_to_xml", RUNS_SQL),
    (r"^(table|schema|database)_to_xml", NAMES_TABLES),
    (r"^dblink", OTHER_DB),
    (r"^lo_|^loread$|^lowrite$", READS_FILES),
    (r"^pg_(read|ls|stat_file|file)", READS_FILES),
    (r"^pg_", SESSION),
    (r"^has_.*_privilege$", NAMES_TABLES),
    (r"^(set_config|current_setting|setseed|nextval|setval|currval|lastval)$", SESSION),
    (r"^to_reg", NAMES_TABLES),
    # regclass(text) is a cast by name: regclass('db.sch.t') looks the table up.
    (r"^reg(class|proc|procedure|namespace|role|type|oper|operator|config|dictionary|"
     r"collation)$", NAMES_TABLES),
    (r"^(txid_|xmin$|xmax$)", SESSION),
    (r"^pgr_", RUNS_SQL),
    (r"^(addgeometrycolumn|dropgeometrycolumn|dropgeometrytable|updategeometrysrid|"
     r"populate_geometry_columns|addrasterconstraints|droprasterconstraints|"
     r"addoverviewconstraints|dropoverviewconstraints|st_createoverview)$", WRITES),
    (r"^(st_estimatedextent|find_srid|st_find_extent|st_findextent|"
     r"postgis_.*|_postgis_.*|st_memcollect_x|st_asx3d_x)$", NAMES_TABLES),
    (r"^(unlockrows|lockrow|addauth|checkauth|disablelongtransactions|"
     r"enablelongtransactions|gettransactionid|st_pixelaspoints_x)$", WRITES),
)
# Argument types that name catalog objects.
PG_CATALOG_TYPES = {"regclass", "regproc", "regprocedure", "regnamespace", "regrole",
                    "regtype", "regoper", "regoperator", "regconfig", "regdictionary",
                    "regcollation", "oid", "name", "xid", "xid8", "pg_lsn", "tid", "cid"}
# Volatile functions that only compute: random numbers, clocks, ids.
SAFE_VOLATILE = {"random", "random_normal", "clock_timestamp", "timeofday",
                 "gen_random_uuid", "uuid_generate_v4", "statement_timestamp",
                 "st_generatepoints", "st_clusterkmeans", "st_rotation", "st_setvalue",
                 "st_setvalues", "st_setbandnodatavalue", "st_symmetricdifference"}
# Catalog-typed arguments that are harmless where the name is a pure computation.
# (age(xid) only tells a transaction's age; age(timestamp) is what queries call).
SAFE_CATALOG_ARGS = {"format_type", "age"}


def pg_classify(name: str, volatility: str, argtypes: Iterable[str]) -> str | None:
    """None for a pure read, else the reason it is refused."""
    for pattern, reason in PG_REFUSED_PATTERNS:
        if re.search(pattern, name):
            return reason
    if volatility == "v" and name not in SAFE_VOLATILE:
        return "volatile: may write or change state (not a pure read)"
    if name not in SAFE_CATALOG_ARGS and any(t in PG_CATALOG_TYPES for t in argtypes):
        return WEAK + NAMES_TABLES
    return None


# A refusal only for catalog-typed overloads (max(oid), length(tsvector)...): the name is
# refused only when every overload takes such an argument (see merge).
WEAK = "weak:"


def postgres_builtins() -> dict[str, str | None]:
    """Every pg_catalog function of the live server, classified."""
    sql = (
        "SELECT p.proname, p.provolatile, p.prokind, "
        "coalesce(string_agg(t.typname, ',' ORDER BY a.ord), '') "
        "FROM pg_proc p LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) "
        "WITH ORDINALITY AS a(oid, ord) ON true LEFT JOIN pg_type t ON t.oid = a.oid "
        "WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind <> 'p' "
        "GROUP BY p.oid, p.proname, p.provolatile, p.prokind"
    )
    rows = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-AtF", "\t", "-c", sql],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    out: dict[str, str | None] = {}
    for row in rows:
        name, volatility, _kind, args = row.split("\t")
        if name.endswith("_in") or name.endswith(("_recv", "_send", "_out", "_support")):
            # Type I/O functions: called by casts, not by people; leave them unlisted.
            continue
        types = [a for a in args.split(",") if a]
        if any(t in {"internal", "cstring", "trigger", "event_trigger", "fdw_handler",
                     "index_am_handler", "tsm_handler", "table_am_handler",
                     "language_handler"} for t in types):
            continue
        merge(out, name.lower(), pg_classify(name.lower(), volatility, types))
    return out


_CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|AGGREGATE)\s+"
    r"(?:@extschema@\.|topology\.)?([A-Za-z_][A-Za-z0-9_]*)\s*\(([^)]*)\)",
    re.IGNORECASE,
)


def postgis(mirror: Path) -> dict[str, str | None]:
    """PostGIS functions and aggregates from its install scripts, classified."""
    repo = mirror / "postgis+postgis" / "repo"
    files = ["postgis/postgis.sql.in", "postgis/geography.sql.in", "postgis/postgis_nurbs.sql.in",
             "postgis/postgis_letters.sql",
             "raster/rt_pg/rtpostgis.sql.in", "sfcgal/sfcgal.sql.in"]
    out: dict[str, str | None] = {}
    for path in files:
        text = git_show(repo, path)
        matches = list(_CREATE.finditer(text))
        for i, m in enumerate(matches):
            kind, name, args = m.group(1).upper(), m.group(2).lower(), m.group(3).lower()
            if name.startswith("_"):
                continue  # internal helpers, not part of the documented surface
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            chunk = text[m.end():end]
            tail = chunk.rsplit("$$", 1)[-1]
            if kind == "AGGREGATE" or re.search(r"\bIMMUTABLE\b", tail, re.IGNORECASE):
                volatility = "i"
            elif re.search(r"\bSTABLE\b|_STABLE", tail, re.IGNORECASE):
                volatility = "s"
            else:
                volatility = "v"
            types = re.findall(r"\b(regclass|oid|name)\b", args)
            if re.search(r"\b(table_name|tablename|schema_name|column_name|"
                         r"tbl|sql|query)\b", args):
                types.append("name")
            merge(out, name, pg_classify(name, volatility, types))
    return out


def duckdb_core() -> dict[str, str | None]:
    """duckdb_functions() of the installed duckdb, classified."""
    import duckdb  # build-time only: the package does not need duckdb

    rows = duckdb.connect().sql(
        "SELECT DISTINCT function_name, function_type FROM duckdb_functions() "
        "WHERE schema_name IN ('main', 'pg_catalog')"
    ).fetchall()
    out: dict[str, str | None] = {}
    values = {str(n).lower() for n, k in rows if k not in ("table", "table_macro", "pragma")}
    for name, kind in rows:
        lname = str(name).lower()
        reason: str | None = None
        if kind == "pragma":
            continue  # PRAGMA names are statements, not callable in a SELECT
        if kind in ("table", "table_macro") and (lname in values or lname == "unnest"):
            continue  # also a scalar (range, unnest...): listed by that entry
        if kind in ("table", "table_macro"):
            reason = "a table function (reads files, the catalog or SQL text), not a value"
        elif kind == "pragma":
            reason = SESSION
        elif re.search(r"^(read_|glob$|getenv$|parquet_|sniff_csv|file_|iceberg_|delta_)",
                       lname):
            reason = READS_FILES
        elif re.search(r"^(current_setting|getvariable|setseed|nextval|currval|"
                       r"set_|enable_|disable_|checkpoint|force_checkpoint|"
                       r"duckdb_|pg_|has_.*_privilege|query|query_table)", lname):
            reason = SESSION
        elif not re.fullmatch(r"[a-z_][a-z0-9_]*", lname):
            continue  # operators (+, ~~, ...) are syntax, not names
        merge(out, lname, reason)
    return out


def duckdb_spatial(mirror: Path) -> dict[str, str | None]:
    """The spatial extension's documented functions (ST_Read* read files)."""
    text = git_show(mirror / "duckdb+duckdb-spatial" / "repo", "docs/functions.md")
    out: dict[str, str | None] = {}
    for name in re.findall(r"^\| \[`([A-Za-z0-9_]+)`\]", text, re.MULTILINE):
        lname = name.lower()
        reads = lname.startswith(("st_read", "st_drivers", "st_list")) or lname == "shapefile"
        merge(out, lname, READS_FILES if reads else None)
    return out


def bigquery(mirror: Path) -> dict[str, str | None]:
    """ZetaSQL's documented function headings (BigQuery's language), classified."""
    repo = mirror / "google+zetasql" / "repo"
    names = subprocess.run(
        ["git", "--git-dir", str(repo / ".git") if (repo / ".git").exists() else str(repo),
         "ls-tree", "-r", "--name-only", "HEAD", "docs/"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    out: dict[str, str | None] = {}
    for path in names:
        if not re.search(r"functions.*\.md$|conditional_expressions\.md$", path):
            continue
        if "docs/graph-" in path or "protocol_buffer" in path:
            continue  # GQL and protocol buffers: not BigQuery functions
        for name in re.findall(r"^## `([A-Za-z0-9_.]+)`", git_show(repo, path), re.MULTILINE):
            merge(out, name.lower(), None)
    return out


_TOOLBOX_CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+)?(?:SECURE\s+)?(AGGREGATE\s+FUNCTION|TABLE\s+FUNCTION|"
    r"FUNCTION|PROCEDURE)\s+`?@@[A-Z_]+@@\.([A-Za-z0-9_]+)`?",
    re.IGNORECASE,
)


def analytics_toolbox(mirror: Path) -> list[tuple[str, str, str]]:
    """(warehouse, NAME, function|procedure|table function) of CARTO's Analytics Toolbox core.

    From github.com/CartoDB/analytics-toolbox-core clouds/<warehouse>/modules/sql/; names
    starting with '_' are internal helpers.
    """
    repo = mirror / "CartoDB+analytics-toolbox-core" / "repo"
    git_dir = repo / ".git" if (repo / ".git").exists() else repo
    paths = subprocess.run(
        ["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", "HEAD", "clouds/"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    out: set[tuple[str, str, str]] = set()
    for path in paths:
        parts = path.split("/")
        if len(parts) < 5 or parts[2:4] != ["modules", "sql"] or not path.endswith(".sql"):
            continue
        for kind, name in _TOOLBOX_CREATE.findall(git_show(repo, path)):
            if not name.startswith("_"):
                out.add((parts[1], name.upper(), " ".join(kind.lower().split())))
    return sorted(out)


def curated(dialect: str) -> dict[str, str | None]:
    """scripts/catalogue_sources/<dialect>.txt: ``name`` or ``name  refused: reason``."""
    out: dict[str, str | None] = {}
    for line in (SOURCES / f"{dialect}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        reason = rest.removeprefix("refused:").strip() if rest.startswith("refused:") else None
        merge(out, name.lower(), reason)
    return out


def merge(out: dict[str, str | None], name: str, reason: str | None) -> None:
    """Add one overload's verdict: a firm refusal wins; a weak one only if none is pure."""
    old = out.get(name, WEAK)
    if old is not None and not old.startswith(WEAK):
        return  # firmly refused already
    if reason is None or not reason.startswith(WEAK):
        out[name] = reason  # firm refusal, or a pure overload lifting a weak refusal
    elif name not in out:
        out[name] = reason


def git_show(repo: Path, path: str) -> str:
    git_dir = repo / ".git" if (repo / ".git").exists() else repo
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"],
        check=True, capture_output=True, text=True,
    ).stdout


def write(dialect: str, entries: dict[str, str | None], provenance: str) -> None:
    lines = [f"# {dialect} function catalogue, generated by scripts/build_catalogues.py",
             f"# sources: {provenance}",
             "# name<TAB>read | name<TAB>refused<TAB>reason"]
    for name in sorted(entries):
        reason = entries[name]
        reason = reason.removeprefix(WEAK) if reason is not None else None
        lines.append(f"{name}\tread" if reason is None else f"{name}\trefused\t{reason}")
    (OUT / f"{dialect}.tsv").write_text("\n".join(lines) + "\n")
    refused = sum(r is not None for r in entries.values())
    print(f"{dialect}: {len(entries)} functions, {refused} refused")


def combine(*parts: dict[str, str | None]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for part in parts:
        for name, reason in part.items():
            merge(out, name, reason)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"),
                        help="directory holding <owner>+<repo>/repo git mirrors")
    args = parser.parse_args(argv)
    pg = postgres_builtins()
    gis = postgis(args.mirror)
    write("postgres", combine(pg, gis, curated("postgres")),
          "PostgreSQL 15 pg_proc; postgis/postgis install scripts; catalogue_sources/postgres.txt")
    write("redshift", combine(pg, curated("redshift")),
          "PostgreSQL pg_proc; catalogue_sources/redshift.txt (Redshift SQL reference)")
    write("duckdb", combine(duckdb_core(), duckdb_spatial(args.mirror), curated("duckdb")),
          "duckdb_functions(); duckdb/duckdb-spatial docs/functions.md")
    write("bigquery", combine(bigquery(args.mirror), curated("bigquery")),
          "google/zetasql docs/*functions*.md; catalogue_sources/bigquery.txt")
    write("snowflake", curated("snowflake"), "catalogue_sources/snowflake.txt")
    write("databricks", curated("databricks"), "catalogue_sources/databricks.txt")
    rows = analytics_toolbox(args.mirror)
    (OUT / "carto_analytics_toolbox.tsv").write_text(
        "# CARTO Analytics Toolbox (core), generated by scripts/build_catalogues.py from\n"
        "# github.com/CartoDB/analytics-toolbox-core clouds/<warehouse>/modules/sql\n"
        "# warehouse<TAB>NAME<TAB>function | aggregate function | procedure | table function\n"
        + "".join(f"{w}\t{n}\t{k}\n" for w, n, k in rows)
    )
    print(f"analytics toolbox: {len(rows)} entries")
    write("sqlite", curated("sqlite"), "catalogue_sources/sqlite.txt (sqlite.org/lang_corefunc)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
