"""``python -m benchmarks [--quick] [--json PATH] [--chart PATH] [--only SECTION ...]``.

Runs every section, prints one table (rows, then targets, then guardrails), writes the same
figures as JSON and a chart of the targets. Exit code 0, or 1 when a gross-regression
guardrail trips (never on an absolute time); 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks.report import Budget, Results, Row, Threshold, draw_chart, format_table, write_json

SectionRun = Callable[[Budget], tuple[list[Row], list[Threshold]]]

SECTIONS = {
    "instructions": "benchmarks.instructions",
    "inprocess": "benchmarks.inprocess",
    "realistic": "benchmarks.realistic",
    "http": "benchmarks.http_load",
    "wsgi": "benchmarks.wsgi_bench",
    "cold": "benchmarks.cold",
    "scale": "benchmarks.scale",
    "revocation": "benchmarks.revocation",
}
RESULTS = Path(__file__).resolve().parent / "results"


def run_sections(budget: Budget, names: list[str], log: Callable[[str], None]) -> Results:
    """Run the named sections in order; a section that crashes becomes one failed row."""
    results = Results(budget.mode)
    results.environment = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    for name in names:
        module = importlib.import_module(SECTIONS[name])
        run: SectionRun = module.run
        started = time.perf_counter()
        log(f"running {name} ...")
        try:
            rows, thresholds = run(budget)
        except Exception as exc:
            traceback.print_exc()
            # Not a guardrail: a crash is reported loudly, but the table still prints.
            rows = [Row(module.SECTION, "section failed", None, "", f"{type(exc).__name__}: {exc}")]
            thresholds = []
        results.extend(rows, thresholds)
        log(f"  {name} took {time.perf_counter() - started:.1f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, print, save; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI size: under 3 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny counts (tests)")
    parser.add_argument("--json", type=Path, help="where to write the figures as JSON")
    parser.add_argument("--chart", type=Path, help="where to draw the targets chart (PNG)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="sections to run")
    args = parser.parse_args(argv)
    budget = Budget.smoke() if args.smoke else Budget.quick() if args.quick else Budget.full()
    suffix = "" if budget.mode == "full" else f"-{budget.mode}"
    json_path: Path = args.json or RESULTS / f"results{suffix}.json"
    chart_path: Path = args.chart or RESULTS / f"ratios{suffix}.png"
    started = time.perf_counter()
    results = run_sections(budget, args.only or list(SECTIONS),
                           lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(results))
    write_json(results, json_path)
    unchartable = draw_chart(results, chart_path)
    print(f"\n{budget.mode} run in {time.perf_counter() - started:.0f} s; figures in {json_path}"
          + (f"; chart not drawn: {unchartable}" if unchartable else f"; chart in {chart_path}"))
    tripped = results.tripped()
    for t in tripped:
        print(f"GROSS REGRESSION: {t.describe()}", file=sys.stderr)
    # Smoke counts are too small to be measurements: they check the plumbing only.
    return 1 if tripped and budget.mode != "smoke" else 0


if __name__ == "__main__":
    sys.exit(main())
