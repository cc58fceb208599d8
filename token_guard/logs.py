"""What token_guard logs, and how to see it without ever seeing a token.

* The library logs under ``token_guard`` (refusals at INFO: ``denied GET /v3/...: code
  (status)``; failures inside the guard at ERROR, with their traceback) and adds only a
  ``NullHandler``: where and whether to print is the application's choice.
* ``uvicorn_log_config()`` is uvicorn's own default logging configuration plus the
  ``token_guard`` logger on uvicorn's handler, for ``uvicorn.run(..., log_config=...)``.
* ``RedactTokens`` is a logging filter that replaces every ``access_token`` value in a
  record's message. The adapters already redact the token in the ASGI scope and WSGI
  environ, which is where uvicorn and gunicorn build their access lines from; werkzeug's
  development server logs its own copy of the request line, so ``TokenGuardWSGI`` puts this
  filter on the ``werkzeug`` logger.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

__all__ = ["LOGGER_NAME", "RedactTokens", "install_redaction", "uvicorn_log_config"]

LOGGER_NAME = "token_guard"

# The name as clients send it, decoded or not (access_token, ACCESS_TOKEN, access%5Ftoken),
# and its value up to the next separator of a query string, a request line or a quote.
_TOKEN_IN_TEXT = re.compile(r"(?i)(access(?:_|%5f)token=)[^&\s\"'#]*")


class RedactTokens(logging.Filter):
    """Replace every ``access_token=...`` value in a record's message with ``REDACTED``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        redacted = _TOKEN_IN_TEXT.sub(r"\1REDACTED", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_redaction(logger_name: str) -> None:
    """Put one ``RedactTokens`` on the logger ``logger_name`` (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's default ``LOGGING_CONFIG`` with the ``token_guard`` logger at ``level`` on
    uvicorn's default handler (stderr), so refusals print beside uvicorn's own lines."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][LOGGER_NAME] = {"handlers": ["default"], "level": level, "propagate": False}
    return config
