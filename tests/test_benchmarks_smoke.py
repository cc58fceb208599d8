"""The benchmarks run end to end with tiny counts and report well-formed rows and JSON.

Not timing: figures at these counts mean nothing; the shape of the output does.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import SECTIONS
from benchmarks.report import Budget, Results, Row, Threshold, format_table

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"µs", "ms", "x", "req/s", "B", "calls", "count", ""}


def check_rows(rows: list[Row], thresholds: list[Threshold]) -> None:
    assert rows, "a section must report at least one row"
    for row in rows:
        assert row.section and row.name and row.unit in UNITS, row
        if row.value is None:
            assert row.note, f"skipped row {row.name!r} must say why"
        else:
            assert isinstance(row.value, float | int) and not math.isinf(row.value), row
    for t in thresholds:
        assert t.limit > 0 and t.name, t


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SECTIONS])
def test_section_reports_well_formed_rows(name: str) -> None:
    module = importlib.import_module(SECTIONS[name])
    rows, thresholds = module.run(Budget.smoke())
    check_rows(rows, thresholds)
    assert not any(r.name == "section failed" for r in rows)
    results = Results("smoke")
    results.extend(rows, thresholds)
    table = format_table(results)
    assert all(row.name in table for row in rows)
    assert "== targets" in table and "guardrails" in table


def test_skipped_rows_print_with_their_reason() -> None:
    results = Results("smoke")
    results.extend([Row("s", "needs a service", None, "", "PostgreSQL not reachable")], [])
    line = format_table(results).splitlines()[1]
    assert "skipped" in line and "PostgreSQL not reachable" in line


def test_a_tripped_guardrail_is_reported_and_a_missed_target_is_not_a_failure() -> None:
    results = Results("quick")
    results.extend([], [
        Threshold("target", 1.5, 1.0, True, "x"),
        Threshold("guard", 2.5, 2.0, True, "x", gross=True),
        Threshold("unmeasured guard", None, 0.5, False, "x", gross=True),
    ])
    assert [t.name for t in results.tripped()] == ["guard"]
    assert "NOT MET" in format_table(results) and "TRIPPED" in format_table(results)


def test_command_prints_one_table_and_writes_the_same_figures_as_json(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    chart = tmp_path / "chart.png"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--only", "inprocess", "wsgi",
         "--json", str(out), "--chart", str(chart)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["mode"] == "smoke"
    assert {"rows", "targets", "guardrails", "environment"} <= set(figures)
    for row in figures["rows"]:
        assert set(row) == {"section", "name", "value", "unit", "note"}
        assert row["name"] in done.stdout
    assert {t["name"] for t in figures["targets"]} >= {
        "TokenGuard full check / AuthenticationMiddleware (overheads)",
        "Flask wrapped / bare per request",
    }
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_workloads_are_seeded_distinct_and_answered_as_expected() -> None:
    import asyncio

    from benchmarks.workloads import create_tokens, inner_app, status_of, take, workloads
    from token_guard.adapters.asgi import TokenGuard
    from token_guard.core.secret import is_well_formed
    from token_guard.stores.memory import MemoryStore

    async def check() -> None:
        for name, workload in workloads(tokens=10, mixed_tokens=50).items():
            store = MemoryStore()
            secrets = await create_tokens(store, workload.plans)
            first = take(workload.requests(secrets), 200)
            assert first == take(workload.requests(secrets), 200), f"{name} is not seeded"
            targets = {(r.target(), r.header(b"authorization")) for r in first}
            assert len(targets) == (1 if name == "repeated" else 200), name
            guard = TokenGuard(inner_app(), store=store, connections={"carto_dw": "bigquery"})
            for r in workload.warmup(secrets):
                assert await status_of(guard, r) == 200, r.target()
            for r in first:
                assert await status_of(guard, r) == r.status, (name, r.target(), r.status)
            await guard.guard.resolver.close()
            if name == "mixed":
                paths = {r.path.split("/")[2] for r in first}
                assert paths == {"maps", "sql", "lds"}
                assert 0 < sum(r.status != 200 for r in first) < 30
            if name == "flood_tokens":
                tokens = {r.header(b"authorization") for r in first}
                assert len(tokens) == 200 and all(
                    is_well_formed(t.decode()[len("Bearer "):]) for t in tokens if t)
    asyncio.run(check())


def test_instruction_counts_come_back_from_callgrind() -> None:
    import shutil

    from benchmarks.instructions import section

    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    rows, _ = section(Budget.smoke(), ["repeated"])
    added = {r.name: r.value for r in rows}
    assert added["repeated: bare app per request"] is not None
    assert added["repeated: TokenGuard added"] is not None
