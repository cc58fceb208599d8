"""Section 0b: instructions per request through Flask, bare and guarded, counted by callgrind.

The deterministic counterpart of section 3's time ratio (``wsgi_bench.py``): the same Flask
app (``wsgi_bench.flask_app``) bare, with ``app.wsgi_app = TokenGuardWSGI(...)`` (the
documented setup) and (full run) with ``FlaskTokenGuard`` (refusals through the app's hooks,
the token on ``flask.g``), on the ``repeated`` and ``mixed`` workloads
(``benchmarks.workloads``; each request the environ waitress would build, the response
consumed and closed). Per request is (I(N2) - I(N1)) / (N2 - N1) as in section 0
(``benchmarks.instructions``), and the target is wrapped / bare per request <= 1.10.

The report counts these as jobs of section 0's own valgrind process (``instructions.run``),
which then imports Python, Flask and token_guard once for both (under valgrind the imports
alone take a dozen seconds): one forked set-up per workload, one forked counting child per
(variant, N), ``PYTHONHASHSEED=0``, collector frozen and off. What is WSGI's own:
- The set-up uses each token the measured requests send once (a cache miss, resolved on the
  guard's loop thread), not every token of the workload: the measured requests find the
  same warm cache, and the set-up, which runs under valgrind, is a fraction as long.
- ``fork`` keeps only the forking thread, so each counting child starts its guards' loop
  threads again (``guard.call``) before it counts: a miss in the measured requests (the
  mixed stream's unknown tokens) then costs its thread hop, not a loop start.
- The guarded children check every status against the workload's expectation.

``python -m benchmarks.instructions_wsgi [--quick] [--variants flask wrapped extension]``
runs the section by hand; ``--profile mixed [--variant extension]`` prints callgrind's top C
functions for one variant and a cProfile of token_guard's functions.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.instructions import (
    _collector_for_counting,
    _deterministic_cache,
    callgrind_top,
    check_statuses,
    count_in_child,
    per_request,
    print_profile,
)
from benchmarks.report import Row, Threshold
from benchmarks.workloads import CONNECTIONS, Request, create_tokens, take, workloads

SECTION = "0b. instructions per request (callgrind), Flask bare and guarded"
VARIANTS = ("flask", "wrapped", "extension")
GUARDED = ("wrapped", "extension")
NAMES = ("repeated", "mixed")
# The repeated request costs the same every time: fewer of them measure it as well.
LENGTHS = {
    "full": {"repeated": (100, 300), "mixed": (300, 1100)},
    "quick": {"repeated": (40, 120), "mixed": (150, 550)},
    "smoke": {"repeated": (4, 12), "mixed": (4, 12)},
}
# FlaskTokenGuard's row costs a third more set-up under valgrind: the full run only.
MEASURED = {"full": VARIANTS, "quick": VARIANTS[:2], "smoke": VARIANTS[:2]}
TARGET = 1.10
"""Issue 13's Flask target (wrapped / bare per request), here on instruction counts."""


@dataclass(slots=True)
class Setup:
    """A workload's Flask apps, their guards and the requests each child sends."""

    apps: dict[str, Any]
    guards: list[Any]
    measured: list[Request]


def build(name: str, count: int, *, mixed_tokens: int = 1000,
          variants: Sequence[str] = VARIANTS) -> Setup:
    """Tokens, the three apps, warm caches, ``count`` requests (nothing counted yet)."""
    from benchmarks.wsgi_bench import flask_app
    from token_guard.adapters.flask import FlaskTokenGuard
    from token_guard.adapters.wsgi import TokenGuardWSGI
    from token_guard.stores.memory import MemoryStore

    workload = workloads(mixed_tokens=mixed_tokens)[name]
    store = MemoryStore()  # no loop of its own: both guards read it from their loops
    loop = asyncio.new_event_loop()
    secrets = loop.run_until_complete(create_tokens(store, workload.plans))
    loop.close()
    apps: dict[str, Any] = {"flask": flask_app()}
    guards: list[Any] = []
    if "wrapped" in variants:
        wrapped = flask_app()
        guard = TokenGuardWSGI(wrapped.wsgi_app, store=store, connections=CONNECTIONS,
                               cache=_deterministic_cache())
        wrapped.wsgi_app = guard  # type: ignore[method-assign]
        apps["wrapped"] = wrapped
        guards.append(guard)
    if "extension" in variants:
        extended = flask_app()
        extension = FlaskTokenGuard(extended, store=store, connections=CONNECTIONS,
                                    cache=_deterministic_cache())
        apps["extension"] = extended
        guards.append(extension.wsgi)
    stream = workload.requests(secrets)
    prefill = take(stream, workload.prefill)
    measured = take(stream, count)
    warm = _warmup(workload.warmup(secrets), len(workload.plans), measured)
    for variant, app in apps.items():
        before = warm + prefill if variant in GUARDED else warm
        statuses = drive(app, [r.environ() for r in before])
        if variant in GUARDED:
            check_statuses(before, statuses)
    return Setup(apps, guards, measured)


def _warmup(warm: list[Request], tokens: int, measured: Sequence[Request]) -> list[Request]:
    """The workload's warm-up without the first use of tokens no measured request sends:
    each measured token still finds its cache entry, and the set-up (run under valgrind,
    uninstrumented but about ten times slower) does a fraction of the misses."""
    used = {r.header(b"authorization") for r in measured}
    return [r for i, r in enumerate(warm) if i >= tokens or r.header(b"authorization") in used]


def drive(app: Any, environs: Iterable[dict[str, Any]]) -> list[int]:
    """Send every environ to ``app`` in turn, consuming and closing each response."""
    statuses: list[int] = []
    append = statuses.append

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> Callable[[bytes], object]:
        append(int(status[:3]))
        return _write

    for environ in environs:
        out = app(environ, start_response)
        for _ in out:
            pass
        close = getattr(out, "close", None)
        if close is not None:
            close()
    return statuses


def _write(data: bytes) -> None:
    return None


async def _nothing() -> None:
    return None


def measure_in_child(setup: Setup, variant: str, n: int, label: str) -> int:
    """Fork; the child counts ``n`` requests of ``variant`` and exits. Its exit status."""

    def prepare() -> list[dict[str, Any]]:
        for guard in setup.guards:
            guard.call(_nothing)  # the loop thread did not survive the fork: start it
        return [r.environ() for r in setup.measured[:n]]

    return count_in_child(
        label, prepare, lambda environs: drive(setup.apps[variant], environs),
        (lambda statuses: check_statuses(setup.measured[:n], statuses))
        if variant in GUARDED else None,
    )


def _quiet_fork() -> None:
    # The guards' loop threads are idle in epoll when the set-up forks; the children start
    # their own. Python's warning about forking a threaded process is expected here.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")


def _prepared(name: str, count: int, variants: Sequence[str] = VARIANTS) -> Setup:
    setup = build(name, count, variants=variants)
    gc.collect()
    gc.freeze()
    _collector_for_counting()
    return setup


def preimport() -> None:
    """What section 0's valgrind process imports once, before it forks a job."""
    import flask  # noqa: F401

    import benchmarks.wsgi_bench  # noqa: F401
    import token_guard.adapters.flask  # noqa: F401

    _quiet_fork()


def jobs(mode: str, names: Sequence[str] = NAMES,
         variants: Sequence[str] | None = None) -> list[str]:
    """Section 0's child jobs for ``names``: ``wsgi:<workload>:<N1>,<N2>:<variant>+...``."""
    chosen = "+".join(variants or MEASURED[mode])
    return [f"{JOB}{name}:{','.join(map(str, LENGTHS[mode][name]))}:{chosen}"
            for name in names]


JOB = "wsgi:"


def job_main(job: str) -> int:
    """In a process forked from section 0's valgrind process: set one workload up, then
    fork a counting child per (variant, length). Its exit status."""
    name, lengths, variants = job.removeprefix(JOB).split(":")
    counts = [int(n) for n in lengths.split(",")]
    chosen = variants.split("+")
    setup = _prepared(name, max(counts), chosen)
    code = 0
    for variant in chosen:
        for n in counts:
            code |= measure_in_child(setup, variant, n, f"tg-bench {name} {variant} {n}")
    return code


def section(mode: str, names: Sequence[str], counts: dict[tuple[str, str, int], int],
            error: str | None, elapsed: float | None = None,
            variants: Sequence[str] | None = None) -> tuple[list[Row], list[Threshold]]:
    """The rows and targets for ``names``, from the counts of their jobs."""
    variants = variants or MEASURED[mode]
    described = workloads()
    rows: list[Row] = []
    thresholds: list[Threshold] = []
    for name in names:
        lengths = LENGTHS[mode][name]
        per = {v: per_request(counts, name, v, lengths) for v in variants}
        bare = per["flask"]
        note = error if error and None in per.values() else (
            f"{described[name].description}; N = {lengths[0]} and {lengths[1]}")
        rows.append(Row(SECTION, f"{name}: bare Flask per request", bare, "count", note))
        for variant, label in (("wrapped", "TokenGuardWSGI"), ("extension", "FlaskTokenGuard")):
            if variant not in variants:
                continue
            x = per[variant]
            added = None if x is None or bare is None else x - bare
            ratio = None if x is None or not bare else x / bare
            rows += [
                Row(SECTION, f"{name}: {label} added", added, "count"),
                Row(SECTION, f"{name}: ratio {label} / bare per request", ratio, "x"),
            ]
            if variant == "wrapped":
                thresholds.append(Threshold(
                    f"instructions, Flask {name}: wrapped / bare per request", ratio, TARGET,
                    True, "x"))
    if elapsed is not None:
        rows.append(Row(SECTION, "callgrind wall time", elapsed, "", f"{len(names)} workloads"))
    return rows, thresholds


def profile(name: str, requests: int, out: Path, variant: str) -> None:
    """Callgrind (C functions, self cost) and cProfile (token_guard functions, inclusive)
    of ``variant`` on ``requests`` requests of workload ``name``."""
    instructions = callgrind_top("benchmarks.instructions_wsgi", f"wsgi-{name}", name,
                                 variant, requests, out, f"{variant} (Flask included)")
    cprofile(name, requests, instructions, variant)


def cprofile(name: str, requests: int, instructions: float, variant: str,
             top: int = 25) -> None:
    """token_guard functions by inclusive cost per request (cProfile; calls are exact)."""
    import cProfile
    import pstats

    setup = build(name, requests, variants=[variant])
    environs = [r.environ() for r in setup.measured]
    with cProfile.Profile() as profiler:
        drive(setup.apps[variant], environs)
    for guard in setup.guards:
        guard.close()
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    whole = 0.0
    for (filename, line, function), (_, calls, _tt, cumulative, _) in entries.items():
        if function == "__call__" and filename.endswith("flask/app.py"):
            whole = max(whole, cumulative)
        if "token_guard" in filename:
            short = filename[filename.index("token_guard"):]
            rows.append((cumulative, calls, f"{short}:{line}({function})"))
    rows.sort(reverse=True)
    whole = whole or (rows[0][0] if rows else float("nan"))
    print_profile(
        f"{variant} on {name}, {requests} requests: token_guard functions, inclusive;"
        " '~instructions' is the share of the time in Flask's __call__ times the callgrind"
        " count (a wait for the loop thread counts as time)", rows[:top], whole,
        instructions, requests)


def main(argv: list[str] | None = None) -> int:
    """Run the section by hand, profile one workload, or be the profile's callgrind child."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions_wsgi")
    parser.add_argument("--child", nargs=2, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, default="wrapped", help="for --profile")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="variants counted")
    parser.add_argument("--profile", metavar="WORKLOAD", choices=NAMES)
    parser.add_argument("--requests", type=int, default=1000, help="for --profile")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tg-profile")
    parser.add_argument("--only", nargs="+", choices=NAMES)
    parser.add_argument("--lengths", nargs=2, type=int, metavar=("N1", "N2"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.child:  # the --profile child: one variant, one length
        requests, name = args.child
        _quiet_fork()
        setup = _prepared(name, int(requests), [args.variant])
        return measure_in_child(setup, args.variant, int(requests),
                                f"tg-bench {name} {args.variant} {requests}")
    if args.profile:
        profile(args.profile, args.requests, args.out, args.variant)
        return 0
    from benchmarks.instructions import count
    from benchmarks.report import Results, format_table

    mode = "quick" if args.quick else "full"
    if args.lengths:
        LENGTHS[mode] = {name: tuple(args.lengths) for name in NAMES}
    variants = ["flask", *[v for v in args.variants or MEASURED[mode] if v != "flask"]]
    names = args.only or list(NAMES)
    started = time.perf_counter()
    counts, error = count(jobs(mode, names, variants), [1, 2])  # lengths: in the jobs
    rows, thresholds = section(mode, names, counts, error, time.perf_counter() - started,
                               variants)
    results = Results(mode)
    results.extend(rows, thresholds)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
