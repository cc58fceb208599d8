"""HTTP plumbing the management routes share: bounded bodies and ``no-store`` error answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from token_guard.core.decision import INVALID_REQUEST, error_body

#: Every management answer that may carry a secret or a caller's data is kept out of caches.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: The realm of the ``WWW-Authenticate`` challenges.
REALM = "token-guard"


class BadRequest(Exception):
    """A 400 ``invalid_request`` about one request field (raised in handlers, answered by them)."""

    def __init__(self, field: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.hint = hint
        self.code = INVALID_REQUEST


def error_response(status: int, code: str, message: str, hint: str, **extra: str) -> JSONResponse:
    """A JSON ``{"error", "hint", "code"}`` answer (+ ``extra``), never cached."""
    return JSONResponse(
        error_body(code, message, hint, **extra), status_code=status, headers=NO_STORE
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``BadRequest`` once it passes ``limit`` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest("body", f"the body is larger than {limit} bytes", "send a smaller body")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(
                "body", f"the body is larger than {limit} bytes", "send a smaller body"
            )
    return body
