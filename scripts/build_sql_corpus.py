"""Rebuild tests/data/sql_corpus.jsonl: valid read queries from public SQL suites.

Run from the repository root: ``python scripts/build_sql_corpus.py [--mirror DIR]``. The
queries are data taken from these suites (no code is copied); each entry names its source:

* postgres: PostGIS's regression suite (github.com/postgis/postgis regress/core/*.sql, which
  holds the OGC conformance tests regress_ogc*.sql) and the SQL examples of its reference
  documentation (doc/reference_*.xml ``<programlisting>``);
* bigquery: the SQL examples of ZetaSQL's function reference (github.com/google/zetasql
  docs/*functions*.md, BigQuery's language): geography, JSON, string, date, math,
  aggregate and window functions;
* duckdb: the examples of the spatial extension's reference (github.com/duckdb/duckdb-spatial
  docs/functions.md).

Kept: statements that are one SELECT (a read) by the engine's own parser where one runs
here (pglast for PostgreSQL) and by sqlglot otherwise; left out: statements that name
the engine's catalogs (pg_*, information_schema: refused by design, not map queries), psql
variables, calls of functions the same script creates or of internal helpers (names
starting with '_'), and anything that writes. The selection is by syntax only, so the corpus holds
queries the guard refuses for real reasons too (table functions, unknown functions).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "sql_corpus.jsonl"
CATALOG_NAMES = re.compile(r"\b(pg_[a-z_]+|information_schema|postgis_[a-z_]+)\b", re.I)


def git(repo: Path, *args: str) -> str:
    git_dir = repo / ".git" if (repo / ".git").exists() else repo
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True,
                          capture_output=True, text=True).stdout


def files(repo: Path, under: str, pattern: str) -> list[str]:
    return [p for p in git(repo, "ls-tree", "-r", "--name-only", "HEAD", under).split()
            if re.search(pattern, p)]


def pg_reads(text: str) -> list[str]:
    """The single SELECT statements of a PostgreSQL script, by PostgreSQL's own parser."""
    from pglast import parse_sql, split  # build-time only
    from pglast.parser import ParseError

    out = []
    try:
        statements = split(text, with_parser=False)
    except Exception:
        return out
    for statement in statements:
        stmt = statement.strip()
        if not stmt.lower().startswith(("select", "with")) or CATALOG_NAMES.search(stmt):
            continue
        if re.search(r"(^|[^:]):[a-z_]|\\\\|\binto\b|\bfor\s+update\b", stmt, re.I):
            continue
        try:
            tree = parse_sql(stmt)
        except ParseError:
            continue
        if len(tree) == 1 and type(tree[0].stmt).__name__ == "SelectStmt":
            out.append("\n".join(line.strip() for line in stmt.splitlines() if line.strip()))
    return out


def sqlglot_reads(text: str, dialect: str) -> list[str]:
    """The single SELECT statements of a script, by sqlglot."""
    import sqlglot  # build-time only
    from sqlglot import exp

    out = []
    for chunk in re.split(r";\s*(?:\n|$)", text):
        stmt = chunk.strip()
        if not stmt.lower().startswith(("select", "with")) or CATALOG_NAMES.search(stmt):
            continue
        try:
            parsed = sqlglot.parse(stmt, read=dialect)
        except Exception:  # noqa: S112 - not valid in the dialect: not part of the corpus
            continue
        if len(parsed) == 1 and isinstance(parsed[0], exp.Select | exp.SetOperation):
            out.append("\n".join(line.strip() for line in stmt.splitlines() if line.strip()))
    return out


_UDF = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?(?:AGGREGATE\s+)?"
                  r"(?:TABLE\s+)?FUNCTION\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z0-9_.\"`]+)", re.I)


_INTERNAL_CALL = re.compile(r"(?<![A-Za-z0-9_.])_[A-Za-z0-9_]+\s*\(")


def without_local_udfs(script: str, queries: list[str]) -> list[str]:
    """Drop queries calling a function the script creates (a test's own UDF) or an internal one.

    Internal: a name starting with '_' (PostGIS's undocumented helpers, the suite's own).
    """
    queries = [q for q in queries if not _INTERNAL_CALL.search(q)]
    names = {n.strip('"`').rsplit(".", 1)[-1] for n in _UDF.findall(script)}
    if not names:
        return queries
    calls = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\s*\(", re.I)
    return [q for q in queries if not calls.search(q)]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sql|zetasql|googlesql)?\n(.*?)```", text, re.S)


def strip_comments(block: str) -> str:
    block = re.sub(r"/\*.*?\*/", "", block, flags=re.S)  # results drawn under examples
    return "\n".join(line.split("--")[0] if "--" in line and "'" not in line else line
                     for line in block.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    args = parser.parse_args(argv)
    entries: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(dialect: str, source: str, queries: list[str]) -> None:
        for q in queries:
            if (dialect, q) not in seen and len(q) < 4000:
                seen.add((dialect, q))
                entries.append({"dialect": dialect, "source": source, "query": q})

    postgis = args.mirror / "postgis+postgis" / "repo"
    commit = git(postgis, "rev-parse", "HEAD").strip()
    for path in files(postgis, "regress/core", r"\.sql$"):
        script = git(postgis, "show", f"HEAD:{path}")
        add("postgres", f"postgis/postgis@{commit[:12]}:{path}",
            without_local_udfs(script, pg_reads(script)))
    for path in files(postgis, "doc", r"reference_.*\.xml$"):
        text = git(postgis, "show", f"HEAD:{path}")
        for block in re.findall(r"<programlisting>(.*?)</programlisting>", text, re.S):
            block = html.unescape(re.sub(r"<[^>]+>", "", block))
            add("postgres", f"postgis/postgis@{commit[:12]}:{path}", pg_reads(block))
    zeta = args.mirror / "google+zetasql" / "repo"
    commit = git(zeta, "rev-parse", "HEAD").strip()
    for path in files(zeta, "docs", r"(functions|conditional_expressions).*\.md$"):
        if "docs/graph-" in path or "protocol_buffer" in path or "aggregate-dp" in path:
            continue
        for block in code_blocks(git(zeta, "show", f"HEAD:{path}")):
            add("bigquery", f"google/zetasql@{commit[:12]}:{path}",
                without_local_udfs(block, sqlglot_reads(strip_comments(block), "bigquery")))
    spatial = args.mirror / "duckdb+duckdb-spatial" / "repo"
    commit = git(spatial, "rev-parse", "HEAD").strip()
    for block in code_blocks(git(spatial, "show", "HEAD:docs/functions.md")):
        add("duckdb", f"duckdb/duckdb-spatial@{commit[:12]}:docs/functions.md",
            sqlglot_reads(strip_comments(block), "duckdb"))
    OUT.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["dialect"]] = counts.get(e["dialect"], 0) + 1
    print(f"{OUT.relative_to(ROOT)}: {len(entries)} queries {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
