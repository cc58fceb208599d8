"""Interleaved timing: every variant runs once per round, so drift hits all of them alike."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Mapping, Sequence

Batch = Callable[[int], float]
"""Runs ``n`` iterations of one variant and returns the elapsed seconds."""


def calibrate(batch: Batch, seconds: float) -> int:
    """How many iterations of ``batch`` take about ``seconds`` (at least 1)."""
    batch(3)  # warm-up: caches, lazy imports, the first cache fill
    n = 8
    while True:
        elapsed = batch(n)
        if elapsed >= seconds / 4 or n >= 10_000_000:
            break
        n *= 4
    return max(1, round(n * seconds / max(elapsed, 1e-9)))


def interleaved(
    variants: Mapping[str, Batch], *, rounds: int, batch_seconds: float
) -> dict[str, list[float]]:
    """Seconds per iteration of each variant, one sample per round, variants alternating
    (the order reverses every round so no variant always runs first)."""
    sizes = {name: calibrate(batch, batch_seconds) for name, batch in variants.items()}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            gc.collect()
            n = sizes[name]
            samples[name].append(variants[name](n) / n)
    return samples


def median(samples: Sequence[float]) -> float:
    """The median (NaN for no samples)."""
    return statistics.median(samples) if samples else float("nan")


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank (NaN for no samples)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
