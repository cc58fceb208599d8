"""Where a request's instructions go: each step of the guard's path counted alone.

``python -m benchmarks.segments tiles mixed`` sets up a workload as section 0 does
(``benchmarks.instructions.build``: tokens created, caches warm), precomputes each step's
inputs for the measured requests, and counts under callgrind, per request, as the
difference of two loop lengths:

- ``adapter+check``: ``TokenGuard`` on the ASGI scope, minus the bare app (section 0's figure);
- ``check``: ``Guard.check`` on the arguments the adapter reads;
- ``match``, ``query_facts``, ``bearer``, ``lookup``, ``decide_parts``: the steps inside it,
  each on its own inputs (the memos as the workload leaves them);
- ``redaction``: the adapter's log-redaction test on the query string;
- ``call``: a call of a no-op with the same arguments (the loop's own cost, subtracted).

These are diagnostics for people changing the hot path, not targets.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.instructions import (
    ROOT,
    ClientRequests,
    build,
    drive,
    read_dumps,
    valgrind_command,
)

SEGMENTS = ("call", "adapter+check", "bare", "check", "match", "query_facts", "bearer",
            "lookup", "decide_parts", "redaction")


def _header(request: Any, name: bytes) -> str | None:
    value = request.header(name)
    return None if value is None else value.decode("latin-1")


def loops(setup: Any) -> dict[str, Callable[[int], None]]:
    """One loop per segment, over the measured requests' precomputed inputs."""
    from token_guard.adapters.asgi import TokenGuard
    from token_guard.core.policy import CompiledToken
    from token_guard.core.querystrings import may_hold_token, redacted_query
    from token_guard.core.routes import RouteMatch

    tg: TokenGuard = setup.apps["tokenguard"]
    guard = tg.guard
    requests = setup.measured
    args = [(r.method, r.path.encode("ascii"), r.query, r.header(b"authorization"),
             _header(r, b"origin"), _header(r, b"referer")) for r in requests]
    matches = [guard.routes.match(a[0], a[1]) for a in args]
    tokens = [guard._token(a[3], a[4], a[5], a[2], False) for a in args]
    compiled = [guard.resolver.lookup(t) if isinstance(t, str) else None for t in tokens]
    facts = [guard.routes.query_facts(m, a[2]) if isinstance(m, RouteMatch) else None
             for m, a in zip(matches, args, strict=True)]
    now = 1.0e9

    def call(n: int) -> None:
        noop = _noop
        for a in args[:n]:
            noop(*a)

    def asgi(app: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            scopes = [r.scope() for r in requests[:n]]
            setup.loop.run_until_complete(drive(app, scopes))
        return run

    def check(n: int) -> None:
        c = guard.check
        for a in args[:n]:
            c(*a)

    def match(n: int) -> None:
        m = guard.routes.match
        for a in args[:n]:
            m(a[0], a[1])

    def query_facts(n: int) -> None:
        q = guard.routes.query_facts
        for m, a in zip(matches[:n], args[:n], strict=True):
            if isinstance(m, RouteMatch):
                q(m, a[2])

    def bearer(n: int) -> None:
        t = guard._token
        for a in args[:n]:
            t(a[3], a[4], a[5], a[2], False)

    def lookup(n: int) -> None:
        look = guard.resolver.lookup
        for t in tokens[:n]:
            if isinstance(t, str):
                look(t)

    def decide_parts(n: int) -> None:
        d = guard.policy.decide_parts
        for c, f, a in zip(compiled[:n], facts[:n], args[:n], strict=True):
            if isinstance(c, CompiledToken) and f is not None and not hasattr(f, "status"):
                d(c, f, a[4], a[5], now)

    def redaction(n: int) -> None:
        for a in args[:n]:
            if may_hold_token(a[2]):
                redacted_query(a[2])

    return {"call": call, "adapter+check": asgi(tg), "bare": asgi(setup.apps["bare"]),
            "check": check, "match": match, "query_facts": query_facts, "bearer": bearer,
            "lookup": lookup, "decide_parts": decide_parts, "redaction": redaction}


def _noop(*args: Any) -> None:
    return None


def child(name: str, lengths: Sequence[int]) -> int:
    setup = build(name, max(lengths))
    runs = loops(setup)
    gc.collect()
    gc.freeze()
    gc.disable()
    failed = 0
    for segment in SEGMENTS:
        for n in lengths:
            pid = os.fork()
            if pid:
                failed |= os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                continue
            code = 0
            try:
                cg = ClientRequests()
                cg.request(cg.START)
                cg.request(cg.ZERO_STATS)
                runs[segment](n)
                cg.dump(f"tg-bench {name} {segment} {n}")
                cg.request(cg.STOP)
            except BaseException as exc:
                print(f"{segment}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                code = 3
            os._exit(code)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segments")
    parser.add_argument("workloads", nargs="+")
    parser.add_argument("--lengths", nargs=2, type=int, default=(300, 1100))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = list(args.lengths)
    if args.child:
        return child(args.workloads[0], lengths)
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    for name in args.workloads:
        with tempfile.TemporaryDirectory(prefix="tg-seg-") as tmp:
            command = [*valgrind_command(str(Path(tmp) / "cg.%p")), sys.executable, "-m",
                       "benchmarks.segments", "--child", "--lengths", *map(str, lengths),
                       name]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  check=False)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
            counts = read_dumps(Path(tmp))
        n1, n2 = lengths
        per = {s: (counts[(name, s, n2)] - counts[(name, s, n1)]) / (n2 - n1)
               for s in SEGMENTS if (name, s, n1) in counts and (name, s, n2) in counts}
        base = per.get("call", 0.0)
        print(f"== {name}: instructions per request (steps minus a no-op call's {base:,.0f})")
        for segment in SEGMENTS[1:]:
            if segment in per:
                value = per[segment] - (per["bare"] if segment == "adapter+check" else
                                        0.0 if segment == "bare" else base)
                print(f"  {segment:<16} {value:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
