"""Microbenchmark of OriginMatcher.check: `python benchmarks/bench_origins.py`.

Prints the best-of-5 time per call for the memo hit (the per-request case), the work done on
a memo miss, and the empty-list fast path. Header values are decoded from bytes inside the
timed call, as the ASGI adapter does; subtract the baseline line for the check alone.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from token_guard.core.origins import OriginMatcher, read_site

PATTERNS = [
    "https://example.com",
    "https://*.example.com",
    "http://localhost:*",
    "https://*.example.org:*",
    "https://example.net/app",
]


def per_call_ns(fn: Callable[[], object], number: int) -> float:
    """Best of five runs, in nanoseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def main() -> None:
    """Measure and print the cases."""
    matcher = OriginMatcher(PATTERNS)
    empty = OriginMatcher([])
    # The ASGI adapter decodes header bytes per request: fresh strings with no cached hash.
    origin = b"https://maps.example.com"
    referer = b"https://maps.example.com/dashboard/42"
    evil = b"https://evil.com"
    cases: dict[str, Callable[[], object]] = {
        "baseline: decode the header bytes": lambda: origin.decode("latin-1"),
        "hit, Origin only (allowed)": lambda: matcher.check(origin.decode("latin-1"), None),
        "hit, Origin + Referer (allowed)": lambda: matcher.check(
            origin.decode("latin-1"), referer.decode("latin-1")
        ),
        "hit, Origin only (denied)": lambda: matcher.check(evil.decode("latin-1"), None),
        "hit, same str objects (hash cached)": lambda: matcher.check("https://a.example.com", None),
        "empty pattern list": lambda: empty.check("https://a.example.com", None),
    }
    for name, fn in cases.items():
        print(f"{name:40s} {per_call_ns(fn, 200_000):8.0f} ns")

    # check() reads the headers every time (the guard remembers readings per header pair
    # in Policy, for all tokens); check_site() is what a token costs once they are read.
    read = read_site("https://maps.example.com", "https://maps.example.com/d/42")

    def miss() -> object:
        return matcher.check("https://maps.example.com", "https://maps.example.com/d/42")

    def miss_path() -> object:
        return matcher.check(None, "https://example.net/app/page?x=1")

    print(f"{'headers already read (check_site)':40s} "
          f"{per_call_ns(lambda: matcher.check_site(read), 200_000):8.0f} ns")

    print(f"{'miss, Origin + Referer (parse + match)':40s} {per_call_ns(miss, 20_000):8.0f} ns")
    print(f"{'miss, Referer with path prefix':40s} {per_call_ns(miss_path, 20_000):8.0f} ns")


if __name__ == "__main__":
    main()
