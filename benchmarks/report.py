"""Rows, targets and guardrails of a benchmark run, and how they are printed, saved and drawn."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Budget:
    """How much work each section does: ``full`` (README), ``quick`` (CI) or ``smoke`` (tests)."""

    mode: str
    rounds: int  # interleaved rounds of every in-process variant
    batch_seconds: float  # time per variant per round
    http_seconds: int  # one wrk run
    http_rounds: int
    sql_samples: int
    sqlite_tokens: int
    lookup_samples: int
    pg_rows: int
    storm_requests: int
    memory_tokens: int
    grants: int
    revocations: int
    traffic_tokens: int = 0  # tokens that each serve 100 distinct tile URLs (memory row)

    @classmethod
    def full(cls) -> Budget:
        """The documented run: about ten minutes on two cores."""
        return cls("full", 15, 0.25, 10, 5, 2000, 5000, 5000, 1_000_000, 10_000,
                   100_000, 10_000, 100, traffic_tokens=5000)

    @classmethod
    def quick(cls) -> Budget:
        """CI: every row, smaller tables and fewer rounds; well under three minutes."""
        return cls("quick", 7, 0.08, 2, 3, 300, 500, 500, 100_000, 10_000,
                   5_000, 10_000, 10, traffic_tokens=400)

    @classmethod
    def smoke(cls) -> Budget:
        """Tests: tiny counts, checks that each section runs and reports well-formed rows."""
        return cls("smoke", 2, 0.002, 1, 1, 5, 20, 20, 2_000, 200, 300, 300, 2, traffic_tokens=20)


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure. ``value`` None means skipped; ``note`` then says why."""

    section: str
    name: str
    value: float | None
    unit: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Threshold:
    """A limit on one figure: a project target (reported) or a gross-regression guardrail
    (fails the run). ``at_most``: the figure must be <= ``limit``, else >= ``limit``."""

    name: str
    value: float | None
    limit: float
    at_most: bool
    unit: str
    gross: bool = False

    @property
    def met(self) -> bool | None:
        """True/False, or None when the figure was not measured."""
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def describe(self) -> str:
        """``name: figure (limit) -> verdict`` for the table."""
        sign = "<=" if self.at_most else ">="
        figure = "—" if self.value is None else f"{format_value(self.value, self.unit)} {self.unit}"
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[self.met]
        if self.gross:
            verdict = {True: "ok", False: "TRIPPED", None: "not measured"}[self.met]
        return f"{self.name}: {figure} (needs {sign} {self.limit:g}) -> {verdict}"


@dataclass(slots=True)
class Results:
    """What the sections produced, in order."""

    mode: str
    rows: list[Row] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    def extend(self, rows: Sequence[Row], thresholds: Sequence[Threshold]) -> None:
        """Add one section's output."""
        self.rows.extend(rows)
        self.thresholds.extend(thresholds)

    def tripped(self) -> list[Threshold]:
        """The guardrails that failed: the run's exit code is non-zero if any did."""
        return [t for t in self.thresholds if t.gross and t.met is False]

    def as_json(self) -> dict[str, Any]:
        """The same figures as the table, for machines."""
        return {
            "mode": self.mode,
            "environment": self.environment,
            "rows": [asdict(r) for r in self.rows],
            "targets": [
                {**asdict(t), "met": t.met} for t in self.thresholds if not t.gross
            ],
            "guardrails": [{**asdict(t), "ok": t.met} for t in self.thresholds if t.gross],
        }


def format_value(value: float | None, unit: str) -> str:
    """A figure with as many digits as it deserves."""
    if value is None:
        return "skipped"
    if math.isnan(value):
        return "n/a"
    if unit in ("calls", "count", "req/s", "B") or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.2f}"


def format_table(results: Results) -> str:
    """The one table: every row, then the targets and the guardrails."""
    lines = []
    width = max([len(r.name) for r in results.rows] + [20])
    section = None
    for row in results.rows:
        if row.section != section:
            section = row.section
            lines.append(f"\n== {section}")
        value = format_value(row.value, row.unit)
        unit = "" if row.value is None else row.unit
        note = f"  {row.note}" if row.note else ""
        lines.append(f"  {row.name:<{width}} {value:>12} {unit:<6}{note}".rstrip())
    lines.append("\n== targets")
    for t in results.thresholds:
        if not t.gross:
            lines.append(f"  {t.describe()}")
    lines.append("\n== gross-regression guardrails (the run fails only on these)")
    for t in results.thresholds:
        if t.gross:
            lines.append(f"  {t.describe()}")
    return "\n".join(lines).lstrip("\n")


def write_json(results: Results, path: Path) -> None:
    """Save the figures as JSON at ``path`` (directories created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.as_json(), indent=2, ensure_ascii=False) + "\n")


def draw_chart(results: Results, path: Path) -> str | None:
    """A bar chart of the target ratios against their limits; None, or why it was not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[dev]')"
    shown = [t for t in results.thresholds if not t.gross and t.value is not None]
    if not shown:
        return "no target was measured"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Each figure is drawn relative to its own limit, so one axis holds µs, B and ratios.
    rel = [t.value / t.limit for t in shown if t.value is not None]
    labels = [f"{t.name}\n{format_value(t.value, t.unit)} {t.unit} (limit {t.limit:g})"
              for t in shown]
    colours = ["#2e7d32" if t.met else "#c62828" for t in shown]
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(shown) + 1.5))
    y = list(range(len(shown)))
    ax.barh(y, rel, color=colours)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("figure / limit  (green: target met; <= limits must stay left of the line, "
                  ">= limits right of it)", fontsize=8)
    ax.set_title(f"token_guard benchmarks ({results.mode} run): targets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
