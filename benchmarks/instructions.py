"""Section 0: instructions added per request on realistic traffic, counted by callgrind.

Time on two shared cores drifts with load; the number of instructions a request executes
does not. For each workload (``benchmarks.workloads``) and each variant — the bare
Starlette app, Starlette's ``AuthenticationMiddleware`` with a dict backend
(identification only) and ``TokenGuard`` (full check, warm cache) — the figure is

    instructions per request = (I(N2) - I(N1)) / (N2 - N1)

where I(N) counts the instructions of a loop of N requests of the workload's stream
(N1 = 300, N2 = 1,100; quick 150 / 550), and "added" is that minus the bare app's.

How it is counted, so the figure is deterministic:
- One ``valgrind --tool=callgrind --instr-atstart=no`` process, with
  ``PYTHONHASHSEED=0``, imports everything once, then forks one process per workload (two
  at a time, one per core). That one does the set-up uninstrumented (at a fraction of
  callgrind's cost): tokens created through ``store.create_token``, each used once (warm
  cache), the floods' 5,000 pre-requests (TokenGuard's alone: the other variants keep
  no state), every measured request built; then ``gc.collect()``, ``gc.freeze()`` and
  ``gc.disable()``: the cyclic collector's thresholds made the two lengths disagree by
  15 % (its cost shows in the timing sections; ``TG_BENCH_GC=on`` keeps it running).
- It then ``fork``s one child per (variant, N): every child starts from the very same
  memory, so only the loop count differs between the two runs of a variant. The child
  switches instrumentation on with a callgrind client request (issued from a few bytes of
  machine code through ctypes), zeroes the counters, runs its loop, and dumps them
  (``CALLGRIND_DUMP_STATS_AT``); the parent reads the dump's ``summary:`` line.
- The TokenGuard children check that every answer has the status the workload expects,
  so a faster guard that decides wrongly fails the row instead of winning it.
- Cache lifetimes are set to a day (``_deterministic_cache``): under callgrind a run lasts
  minutes of wall time, and an expiry or a timed flush inside it would depend on load.

``python -m benchmarks.instructions --profile tiles`` writes a callgrind profile of the
TokenGuard variant with C function names and prints ``callgrind_annotate``'s inclusive
top, then a cProfile of the same requests (token_guard functions: calls and time per
request). ``--only tiles mixed`` and ``--lengths 300 1100`` run the section by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import mmap
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import Budget, Row, Threshold
from benchmarks.workloads import CONNECTIONS, Request, create_tokens, inner_app, take, workloads

SECTION = "0. instructions per request (callgrind), realistic traffic"
ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("bare", "authmw", "tokenguard")
LENGTHS = {"full": (300, 1100), "quick": (150, 550), "smoke": (4, 12)}
# What main's code cost on the repeated request before the realistic-traffic work (this
# harness: 19,473 at 150/550, 19,490 at 300/1,100), plus 3 % for run-to-run wobble: the
# repeated request may not get worse than this.
REPEATED_BASELINE = 20_100.0


class ClientRequests:
    """Callgrind's client requests (callgrind.h), from Python: a no-op outside valgrind.

    The request is valgrind's magic instruction sequence (four rotates of rdi that sum to
    128 bits, then ``xchg rbx, rbx``) with rax pointing at six request words; x86-64 only.
    """

    _CODE = bytes.fromhex(
        "4889f8"  # mov rax, rdi: the request words
        "4889f2"  # mov rdx, rsi: the default answer
        "48c1c703" "48c1c70d" "48c1c73d" "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
        "4887db"  # xchg rbx, rbx: valgrind answers in rdx
        "4889d0"  # mov rax, rdx
        "c3"  # ret
    )
    _BASE = (ord("C") << 24) | (ord("T") << 16)
    DUMP_STATS_AT, ZERO_STATS, START, STOP = _BASE + 3, _BASE + 1, _BASE + 4, _BASE + 5
    RUNNING_ON_VALGRIND = 0x1001

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(self._CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._call = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong)(address)

    def request(self, code: int, argument: int = 0) -> int:
        """Issue one client request; its answer (0 outside valgrind)."""
        words = (ctypes.c_ulong * 6)(code, argument, 0, 0, 0, 0)
        return int(self._call(ctypes.addressof(words), 0))

    def dump(self, label: str) -> None:
        """Write the counters since the last zero to a dump file described by ``label``."""
        text = ctypes.create_string_buffer(label.encode("ascii"))
        self.request(self.DUMP_STATS_AT, ctypes.addressof(text))


def _deterministic_cache() -> Any:
    """Cache lifetimes of a day (``DETERMINISTIC_CACHE`` in the module docstring)."""
    from token_guard.resolver import CacheSettings

    day = 86_400.0
    return CacheSettings(ttl=day, negative_ttl=day, usage_flush_interval=day)


@dataclass(slots=True)
class Setup:
    """A workload's three apps and the requests each child sends."""

    loop: asyncio.AbstractEventLoop
    apps: dict[str, Any]
    measured: list[Request]
    guard: Any


def build(name: str, count: int, *, tokens: int = 100, mixed_tokens: int = 1000,
          cache: Any = None) -> Setup:
    """Everything before the measured loop: tokens, apps, warm caches, ``count`` requests."""
    from starlette.middleware.authentication import AuthenticationMiddleware

    from benchmarks.inprocess import DictBackend
    from token_guard.adapters.asgi import TokenGuard
    from token_guard.stores.memory import MemoryStore

    workload = workloads(tokens, mixed_tokens)[name]
    loop = asyncio.new_event_loop()
    store = MemoryStore()
    secrets = loop.run_until_complete(create_tokens(store, workload.plans))
    inner = inner_app()
    guard = TokenGuard(inner, store=store, connections=CONNECTIONS,
                       cache=cache or _deterministic_cache())
    backend = DictBackend({secret: f"app {i}" for i, secret in enumerate(secrets)})
    apps = {"bare": inner, "authmw": AuthenticationMiddleware(inner, backend=backend),
            "tokenguard": guard}
    stream = workload.requests(secrets)
    warm = workload.warmup(secrets)
    prefill = take(stream, workload.prefill)
    measured = take(stream, count)
    for variant, app in apps.items():
        # Only TokenGuard keeps state across requests: the floods' prefill is its alone.
        before = warm + prefill if variant == "tokenguard" else warm
        statuses = loop.run_until_complete(drive(app, [r.scope() for r in before]))
        if variant == "tokenguard":
            check_statuses(before, statuses)
    return Setup(loop, apps, measured, guard)


_BODY = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _BODY


async def drive(app: Any, scopes: Sequence[dict[str, Any]]) -> list[int]:
    """Send every scope to ``app`` in turn; the statuses answered."""
    statuses: list[int] = []
    status = 0

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    for scope in scopes:
        await app(scope, _receive, send)
        statuses.append(status)
    return statuses


def check_statuses(requests: Sequence[Request], statuses: Sequence[int]) -> None:
    """Raise if TokenGuard answered any request with another status than expected."""
    wrong = [(r.target()[:90], r.status, s) for r, s in zip(requests, statuses, strict=True)
             if r.status != s]
    if wrong:
        raise RuntimeError(f"TokenGuard answered {len(wrong)} of {len(requests)} requests "
                           f"wrongly (target, expected, got), e.g. {wrong[:3]}")


def count_in_child(label: str, prepare: Callable[[], Any], run: Callable[[Any], Any],
                   check: Callable[[Any], None] | None = None) -> int:
    """Fork; the child runs ``prepare()`` uninstrumented, then ``run`` on what it returned
    with callgrind's counters on (dumped as ``label``), then ``check`` on run's answer, and
    exits. The child's exit status (3: something raised, said on stderr)."""
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    code = 0
    try:
        prepared = prepare()
        cg = ClientRequests()
        cg.request(cg.START)
        cg.request(cg.ZERO_STATS)
        answer = run(prepared)
        cg.dump(label)
        cg.request(cg.STOP)
        if check is not None:
            check(answer)
    except BaseException as exc:  # the child must never return into the parent's code
        print(f"{label}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 3
    os._exit(code)


def measure_in_child(setup: Setup, variant: str, n: int, label: str) -> int:
    """Fork; the child counts ``n`` requests of ``variant`` and exits. Its exit status."""
    return count_in_child(
        label,
        lambda: [r.scope() for r in setup.measured[:n]],
        lambda scopes: setup.loop.run_until_complete(drive(setup.apps[variant], scopes)),
        (lambda statuses: check_statuses(setup.measured[:n], statuses))
        if variant == "tokenguard" else None,
    )


def child_main(names: Sequence[str], lengths: Sequence[int], parallel: int = 2) -> int:
    """In the valgrind process: import once, then per workload (``parallel`` at a time) a
    forked process that sets up and forks one counting child per (variant, length)."""
    import starlette.middleware.authentication  # noqa: F401 (imported once, before forking)

    import benchmarks.inprocess  # noqa: F401
    import token_guard.adapters.asgi  # noqa: F401
    from benchmarks import instructions_wsgi

    if any(name.startswith(instructions_wsgi.JOB) for name in names):
        instructions_wsgi.preimport()  # section 0b's Flask jobs run in this process too
    running: dict[int, str] = {}
    failed = 0
    for name in [*names, *[None] * parallel]:
        while len(running) >= parallel or (name is None and running):
            pid, status = os.wait()
            failed |= os.waitstatus_to_exitcode(status)
            running.pop(pid, None)
            if name is None:
                break
        if name is None:
            continue
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                if name.startswith(instructions_wsgi.JOB):
                    code = instructions_wsgi.job_main(name)
                else:
                    code = _workload_main(name, lengths)
            except BaseException as exc:
                print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            os._exit(code)
        running[pid] = name
    return failed


def _collector_for_counting() -> None:
    # With the cyclic collector running, its generation thresholds land differently in runs
    # of 150/550 and 300/1,100 requests (AuthenticationMiddleware's "added" moved 15 %);
    # off, the two agree within 2 %. TG_BENCH_GC=on keeps it running.
    if os.environ.get("TG_BENCH_GC") != "on":
        gc.disable()


def _workload_main(name: str, lengths: Sequence[int]) -> int:
    setup = build(name, max(lengths))
    gc.collect()
    gc.freeze()
    _collector_for_counting()
    failed = 0
    for variant in VARIANTS:
        for n in lengths:
            failed |= measure_in_child(setup, variant, n, f"tg-bench {name} {variant} {n}")
    return failed


_DUMP = re.compile(r"^desc: Trigger: Client Request: tg-bench (\S+) (\S+) (\d+)$", re.M)
_SUMMARY = re.compile(r"^summary: (\d+)$", re.M)


def read_dumps(directory: Path) -> dict[tuple[str, str, int], int]:
    """(workload, variant, N) -> instructions, from every callgrind dump in ``directory``."""
    found: dict[tuple[str, str, int], int] = {}
    for path in directory.iterdir():
        text = path.read_text(errors="replace")
        label, total = _DUMP.search(text), _SUMMARY.search(text)
        if label and total:
            found[(label[1], label[2], int(label[3]))] = int(total[1])
    return found


def valgrind_command(out: str, extra: Sequence[str] = ()) -> list[str]:
    """The callgrind command line the section runs its children under."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
            f"--callgrind-out-file={out}", *extra]


def run_children(names: Sequence[str], lengths: Sequence[int], directory: Path) -> str | None:
    """The one callgrind process for every workload; None, or what went wrong."""
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    command = [*valgrind_command(str(directory / "cg.%p")), sys.executable, "-m",
               "benchmarks.instructions", "--child", ",".join(map(str, lengths)), *names]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if not line.startswith("==")]
        return f"exit {done.returncode}: " + " | ".join(lines[-3:])[:300]
    return None


def count(names: Sequence[str], lengths: Sequence[int]
          ) -> tuple[dict[tuple[str, str, int], int], str | None]:
    """Instructions per (workload, variant, N); and what went wrong, if anything did."""
    with tempfile.TemporaryDirectory(prefix="tg-bench-cg-") as tmp:
        error = run_children(names, lengths, Path(tmp))
        return read_dumps(Path(tmp)), error


def per_request(counts: dict[tuple[str, str, int], int], name: str, variant: str,
                lengths: Sequence[int]) -> float | None:
    """(I(N2) - I(N1)) / (N2 - N1), or None if a run is missing."""
    n1, n2 = lengths
    a, b = counts.get((name, variant, n1)), counts.get((name, variant, n2))
    if a is None or b is None:
        return None
    return (b - a) / (n2 - n1)


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Count every workload (smoke: the repeated request only), and section 0b's Flask
    workloads in the same valgrind process; rows, targets, guardrail."""
    names = ["repeated"] if budget.mode == "smoke" else list(workloads())
    return section(budget, names, flask=True)


GUARDRAIL = 3.5
"""The run fails when TokenGuard adds more than this many times AuthenticationMiddleware's
instructions on the mixed workload. The issue's guardrail is 2.0; the guard measures about
2.65 at the full lengths and 2.97 at the quick ones today (see benchmarks/README.md), so 2.0
is printed as a target until it is met, and CI fails on a regression past 3.5 (it was 4.0
while the ratio was 2.9, 5.0 while it was 3.7)."""


def section(budget: Budget, names: Sequence[str], flask: bool = False
            ) -> tuple[list[Row], list[Threshold]]:
    """The rows and thresholds for ``names`` at ``budget``'s lengths; with ``flask``, section
    0b's too (``instructions_wsgi``: Flask bare and guarded, on those of ``names`` it
    has), counted by the same valgrind process, which imports everything once."""
    from benchmarks import instructions_wsgi

    flask_names = [n for n in instructions_wsgi.NAMES if n in names] if flask else []
    lengths = LENGTHS[budget.mode]
    guard = Threshold(f"instructions: TokenGuard / AuthMiddleware on mixed > {GUARDRAIL}",
                      None, GUARDRAIL, True, "x", gross=True)
    if shutil.which("valgrind") is None:
        why = "valgrind is not installed (apt-get install valgrind)"
        return [Row(SECTION, "instructions", None, "", why)], [guard]
    started = time.perf_counter()
    # The Flask jobs first: the longest, they run alongside the rest, two at a time.
    counts, error = count([*instructions_wsgi.jobs(budget.mode, flask_names), *names],
                          lengths)
    elapsed = time.perf_counter() - started
    described = workloads()
    rows: list[Row] = []
    thresholds: list[Threshold] = []
    added: dict[str, dict[str, float | None]] = {}
    for name in names:
        per = {v: per_request(counts, name, v, lengths) for v in VARIANTS}
        bare = per["bare"]
        over = {v: None if x is None or bare is None else x - bare for v, x in per.items()}
        added[name] = over
        note = described[name].description
        if error and None in per.values():
            note = error
        tg, auth = over["tokenguard"], over["authmw"]
        r = None if tg is None or auth is None or auth <= 0 else tg / auth
        rows += [
            Row(SECTION, f"{name}: bare app per request", bare, "count", note),
            Row(SECTION, f"{name}: AuthMiddleware added", auth, "count",
                "" if auth is not None else note),
            Row(SECTION, f"{name}: TokenGuard added", tg, "count",
                "" if tg is not None else note),
            Row(SECTION, f"{name}: ratio TokenGuard / AuthMiddleware", r, "x",
                "" if r is not None else note),
        ]
        if name in described and described[name].realistic:
            thresholds += [
                Threshold(f"instructions, {name}: TokenGuard / AuthMiddleware", r, 1.0, True,
                          "x"),
                Threshold(f"instructions, {name}: TokenGuard / AuthMiddleware (stretch)", r,
                          0.5, True, "x"),
            ]
    if "repeated" in added:
        thresholds.append(Threshold("instructions, repeated: TokenGuard added (main's figure)",
                                    added["repeated"]["tokenguard"], REPEATED_BASELINE, True,
                                    "count"))
    mixed = added.get("mixed", {}).get("tokenguard")
    for flood in ("flood_urls", "flood_tokens"):
        if flood in added:
            f = added[flood]["tokenguard"]
            r = None if f is None or mixed is None or mixed <= 0 else f / mixed
            rows.append(Row(SECTION, f"{flood}: TokenGuard added / mixed's", r, "x",
                            "a flood may cost at most 2x the realistic figure"))
            thresholds.append(Threshold(f"instructions, {flood} / mixed (TokenGuard added)", r,
                                        2.0, True, "x"))
    rows.append(Row(SECTION, "callgrind wall time", elapsed, "", f"N = {lengths[0]} and "
                    f"{lengths[1]}; {len(names)} workloads, 2 at a time"
                    + (f", and {len(flask_names)} through Flask (0b)" if flask_names else "")))
    if "mixed" in added:
        m = added["mixed"]
        tg, auth = m["tokenguard"], m["authmw"]
        ratio = None if tg is None or not auth else tg / auth
        thresholds.append(Threshold("instructions, mixed: TokenGuard / AuthMiddleware (the "
                                    "guardrail asked for)", ratio, 2.0, True, "x"))
        guard = Threshold(guard.name, ratio, GUARDRAIL, True, "x", gross=True)
    if flask_names:
        flask_rows, flask_thresholds = instructions_wsgi.section(budget.mode, flask_names,
                                                                 counts, error)
        rows += flask_rows
        thresholds += flask_thresholds
    return rows, [*thresholds, guard]


def callgrind_top(module: str, prefix: str, name: str, variant: str, requests: int,
                  out: Path, what: str) -> float:
    """Run ``python -m module --child requests name --variant variant`` under callgrind
    (dumps named ``prefix*`` in ``out``), print the C functions' top (self cost), and
    return the instructions per request."""
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{prefix}.*"):
        old.unlink()
    command = [*valgrind_command(str(out / f"{prefix}.%p")), sys.executable, "-m", module,
               "--child", str(requests), name, "--variant", variant]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    dump = next(p for p in out.glob(f"{prefix}.*")
                if "Client Request" in p.read_text(errors="replace"))
    total = _SUMMARY.search(dump.read_text(errors="replace"))
    per_request = int(total[1]) / requests if total else float("nan")
    print(f"== callgrind, {what} on {name}, {requests} requests: "
          f"{per_request:,.0f} instructions per request; {dump}")
    print(f"   (callgrind_annotate {dump}; --inclusive=yes only shows the interpreter loop)")
    annotated = subprocess.run(["callgrind_annotate", str(dump)], check=True,
                               capture_output=True, text=True).stdout
    lines = annotated.splitlines()
    start = next((i for i, line in enumerate(lines) if "file:function" in line), 0)
    for line in lines[start + 2:start + 27]:
        print("  " + re.sub(r"\S*/Python-3[.0-9]*/", "", line))
    return per_request


def profile(name: str, requests: int, out: Path) -> None:
    """Callgrind (C functions, self cost) and cProfile (token_guard functions, inclusive)
    of the TokenGuard variant on ``requests`` requests of workload ``name``."""
    per_request = callgrind_top("benchmarks.instructions", name, name, "tokenguard", requests,
                                out, "TokenGuard (app included)")
    cprofile(name, requests, per_request)


def cprofile(name: str, requests: int, instructions: float, top: int = 15) -> None:
    """token_guard functions by inclusive cost per request (cProfile; calls are exact)."""
    import cProfile
    import pstats

    setup = build(name, requests)
    scopes = [r.scope() for r in setup.measured]
    with cProfile.Profile() as profiler:
        setup.loop.run_until_complete(drive(setup.apps["tokenguard"], scopes))
    setup.loop.run_until_complete(setup.guard.guard.resolver.close())
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, _tt, cumulative, _) in entries.items():
        if "token_guard" in filename:
            short = filename[filename.index("token_guard"):]
            rows.append((cumulative, calls, f"{short}:{line}({function})"))
    rows.sort(reverse=True)
    whole = rows[0][0] if rows else float("nan")  # asgi.TokenGuard.__call__: the request
    print_profile(
        f"TokenGuard on {name}, {requests} requests: token_guard functions, inclusive. Calls"
        " are exact; '~instructions' is the function's share of the request's profiled time"
        " times the callgrind count (the profiler's own cost per call overstates small"
        " functions)", rows[:top], whole, instructions, requests)


def print_profile(title: str, rows: Sequence[tuple[float, int, str]], whole: float,
                  instructions: float, requests: int) -> None:
    """A cProfile table: (inclusive seconds, calls, function) rows, per request, with the
    share of ``whole`` (seconds) of the callgrind count ``instructions``."""
    print(f"\n== cProfile, {title}")
    print(f"{'~instructions':>13} {'µs (profiled)':>13} {'calls':>6}  function   (per request)")
    for cumulative, calls, where in rows:
        print(f"{cumulative / whole * instructions:>13,.0f} {cumulative / requests * 1e6:>13.2f}"
              f" {calls / requests:>6.2f}  {where}")


def main(argv: list[str] | None = None) -> int:
    """Run the section by hand, profile one workload, or be the callgrind child."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="WORKLOAD", choices=list(workloads()))
    parser.add_argument("--requests", type=int, default=1000, help="for --profile")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tg-profile")
    parser.add_argument("--only", nargs="+", choices=list(workloads()))
    parser.add_argument("--lengths", nargs=2, type=int, metavar=("N1", "N2"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--flask", action="store_true",
                        help="also section 0b (Flask bare and guarded, instructions_wsgi)")
    args = parser.parse_args(argv)
    if args.child:
        counts, *names = args.child
        lengths = [int(n) for n in counts.split(",")]
        if args.variant:
            setup = build(names[0], lengths[0])
            gc.collect()
            gc.freeze()
            _collector_for_counting()
            return measure_in_child(setup, args.variant, lengths[0],
                                    f"tg-bench {names[0]} {args.variant} {lengths[0]}")
        return child_main(names, lengths)
    if args.profile:
        profile(args.profile, args.requests, args.out)
        return 0
    budget = Budget.quick() if args.quick else Budget.full()
    if args.lengths:
        LENGTHS[budget.mode] = tuple(args.lengths)
    rows, thresholds = section(budget, args.only or list(workloads()), flask=args.flask)
    from benchmarks.report import Results, format_table

    results = Results(budget.mode)
    results.extend(rows, thresholds)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
