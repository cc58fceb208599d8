"""How a command fails: the exit statuses and the two exceptions ``main`` turns into them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A wrong flag or argument: exit 2 with the message."""


class Refused(Exception):
    """Not found or refused: exit 1 with the message."""
