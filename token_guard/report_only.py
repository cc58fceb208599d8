"""Report-only rollout: the guard decides every request as usual, but lets the refusals
through, recording what it would have refused.

An existing API adopts token_guard in this mode first and watches its would-be refusals (a
WARNING log line each, ``DecisionEvent.report_only``, optional response header, counters)
before enforcing. ``report_only=True`` covers every request under the prefix;
``report_only={"maps"}`` only requests the guard classifies as those APIs.

Security choices, stated once:
- It can never look enforced by accident: turning it on logs a WARNING and raises a
  ``ReportOnlyWarning`` (``warnings.warn``) at start-up, every would-be refusal is logged at
  WARNING, ``Guard.report_only`` is visible to ``/metrics`` and ``stats()``, and
  ``token-guard check --report-only`` says "not enforced".
- Per-API mode fails closed: a refusal whose API cannot be known (a path no route classifies,
  dot segments, a bad escape) is enforced, since no API was put in report-only for it.
- A request let through reaches the app exactly as it came (the body the guard read is
  replayed unchanged, the Authorization header untouched), but with no token in
  ``scope["token_guard.token"]`` / ``environ``: the app sees no verified token, as before the
  guard was added.
- A CORS preflight and paths outside the prefix are never the guard's: unchanged.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from token_guard.core.errors import ConfigurationError
from token_guard.core.facts import API_NAMES

__all__ = ["HEADER", "ReportOnly", "ReportOnlyWarning", "parse_report_only"]

log = logging.getLogger("token_guard")

HEADER = b"x-token-guard-would-refuse"
"""The response header naming the code a report-only guard would have refused with."""


class ReportOnlyWarning(UserWarning):
    """token_guard runs in report-only mode: refusals are recorded, not enforced."""


@dataclass(slots=True)
class ReportOnly:
    """Which refusals are let through (``apis`` None: all), and what is recorded."""

    apis: frozenset[str] | None
    header: bool = False
    # Would-be refusals by code: the hook /metrics reads (token_guard.metrics, when present).
    would_refuse: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def covers(self, api: str | None) -> bool:
        """Whether a refusal of a request to ``api`` (None: unknown) is let through."""
        if self.apis is None:
            return True
        return api is not None and api in self.apis

    def count(self, code: str) -> None:
        """Count one would-be refusal (WSGI counts from request threads)."""
        with self._lock:
            self.would_refuse[code] += 1

    def describe(self) -> str:
        """For people: what is not enforced."""
        if self.apis is None:
            return "every API"
        return "the " + ", ".join(sorted(self.apis)) + " API" + ("s" if len(self.apis) > 1 else "")

    def stats(self) -> dict[str, object]:
        """The mode and the would-be refusals so far, by code."""
        with self._lock:
            return {"report_only": sorted(self.apis) if self.apis else "all",
                    "would_refuse": dict(self.would_refuse)}


def parse_report_only(value: object, header: object = False) -> ReportOnly | None:
    """``report_only`` as given to TokenGuard: False/None (enforce), True, or API names."""
    if not isinstance(header, bool):
        raise ConfigurationError(f"report_only_header: must be True or False, got {header!r}")
    if value is None or value is False:
        if header:
            raise ConfigurationError(
                "report_only_header=True needs report_only (True or a set of APIs)"
            )
        return None
    if value is True:
        mode = ReportOnly(None, header)
    else:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ConfigurationError(
                f"report_only: give True or a set of API names, e.g. {{'maps'}}, got {value!r}"
            )
        names = frozenset(value)
        unknown = sorted(str(n) for n in names - API_NAMES)
        if unknown or not names:
            raise ConfigurationError(
                f"report_only: {', '.join(unknown) or 'an empty set'} is not a set of APIs; "
                f"use names from {', '.join(sorted(API_NAMES))}, or True for all"
            )
        mode = ReportOnly(names, header)
    message = (
        f"token_guard is in REPORT-ONLY mode for {mode.describe()}: requests it would refuse "
        "are let through to the app (logged at WARNING as 'report-only: would refuse'). "
        "Nothing is enforced there; remove report_only= to enforce."
    )
    log.warning(message)
    warnings.warn(message, ReportOnlyWarning, stacklevel=4)
    return mode
