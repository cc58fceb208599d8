"""Section 1b: realistic traffic in process, interleaved CPU time (the instruction counts'
noisy twin, from the same workloads and the same three variants).

Each variant reads its own copy of the workload's stream (same seed: same requests), so no
variant ever sees a request twice and the memos cannot turn distinct traffic into one
repeated request. A batch builds its scopes first and then times only the requests
(``time.thread_time``, as section 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.instructions import _deterministic_cache, check_statuses, drive
from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import interleaved, median
from benchmarks.workloads import CONNECTIONS, Request, create_tokens, inner_app, take, workloads

SECTION = "1b. realistic traffic in process, CPU time per request (interleaved)"
VARIANTS = ("bare", "authmw", "tokenguard")


def _batch(loop: asyncio.AbstractEventLoop, app: Any, stream: Iterator[Request],
           check: bool) -> Callable[[int], float]:
    import time

    def batch(n: int) -> float:
        requests = take(stream, n)
        scopes = [r.scope() for r in requests]
        started = time.thread_time()
        statuses = loop.run_until_complete(drive(app, scopes))
        elapsed = time.thread_time() - started
        if check:
            check_statuses(requests, statuses)
        return elapsed

    return batch


def variants_for(loop: asyncio.AbstractEventLoop, name: str, tokens: int, mixed_tokens: int,
                 guards: list[Any]) -> dict[str, Callable[[int], float]]:
    """The three variants' batches for workload ``name`` (tokens created and warmed)."""
    from starlette.middleware.authentication import AuthenticationMiddleware

    from benchmarks.inprocess import DictBackend
    from token_guard.adapters.asgi import TokenGuard
    from token_guard.stores.memory import MemoryStore

    workload = workloads(tokens, mixed_tokens)[name]
    store = MemoryStore()
    secrets = loop.run_until_complete(create_tokens(store, workload.plans))
    inner = inner_app()
    backend = DictBackend({secret: f"app {i}" for i, secret in enumerate(secrets)})
    apps = {"bare": inner, "authmw": AuthenticationMiddleware(inner, backend=backend),
            "tokenguard": TokenGuard(inner, store=store, connections=CONNECTIONS,
                                     cache=_deterministic_cache())}
    guards.append(apps["tokenguard"])
    out = {}
    for variant, app in apps.items():
        stream = workload.requests(secrets)
        before = workload.warmup(secrets) + take(stream, workload.prefill)
        statuses = loop.run_until_complete(drive(app, [r.scope() for r in before]))
        if variant == "tokenguard":
            check_statuses(before, statuses)
        out[f"{name}/{variant}"] = _batch(loop, app, stream, variant == "tokenguard")
    return out


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Every workload's three variants, interleaved together; rows (no targets: the
    instruction counts carry them)."""
    tokens, mixed_tokens = (10, 50) if budget.mode == "smoke" else (100, 1000)
    loop = asyncio.new_event_loop()
    guards: list[Any] = []
    try:
        batches: dict[str, Callable[[int], float]] = {}
        names = list(workloads())
        for name in names:
            batches.update(variants_for(loop, name, tokens, mixed_tokens, guards))
        # 18 variants: fewer, shorter rounds than section 1 keep --quick under 3 minutes.
        samples = interleaved(batches, rounds=min(budget.rounds, 5),
                              batch_seconds=budget.batch_seconds / 2)
    finally:
        for guard in guards:
            loop.run_until_complete(guard.guard.resolver.close())
        loop.close()
    us = {key: median(s) * 1e6 for key, s in samples.items()}
    rows = []
    for name in names:
        bare = us[f"{name}/bare"]
        auth = us[f"{name}/authmw"] - bare
        tg = us[f"{name}/tokenguard"] - bare
        rows += [
            Row(SECTION, f"{name}: bare per request", bare, "µs"),
            Row(SECTION, f"{name}: AuthMiddleware added", auth, "µs"),
            Row(SECTION, f"{name}: TokenGuard added", tg, "µs"),
            Row(SECTION, f"{name}: ratio TokenGuard / AuthMiddleware (added)",
                tg / auth if auth > 0 else float("nan"), "x",
                "noisy: the instruction count is the target"),
        ]
    return rows, []
