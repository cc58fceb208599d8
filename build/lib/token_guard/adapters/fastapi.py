"""FastAPI dependencies for the token TokenGuard resolved (needs the ``fastapi`` extra).

Mount the guard as ASGI middleware, CORS outside it, and ask for the token in a handler::

    app = FastAPI()
    app.add_middleware(TokenGuard, store=store, connections={"carto_dw": "bigquery"})
    app.add_middleware(CORSMiddleware, allow_origins=[...])  # added last: runs first

    @app.get("/v3/maps/{connection}/table")
    def table(connection: str, token: ApiToken) -> dict[str, str]:
        return {"token": token.name}

``ApiToken`` is ``Annotated[TokenRecord, Depends(api_token)]``. ``api_token`` never returns
None: a handler reached without the guard having allowed the request (the middleware is
missing, or the route is outside its prefix) is a configuration mistake, answered with 401
rather than served anonymously. ``optional_api_token`` (``OptionalApiToken``) is for
handlers that serve both guarded and open paths.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from token_guard.adapters.asgi import get_token
from token_guard.core.records import TokenRecord

__all__ = ["ApiToken", "OptionalApiToken", "api_token", "optional_api_token"]

_NOT_GUARDED = (
    "No API access token was checked for this request: add TokenGuard as middleware "
    "(app.add_middleware(TokenGuard, ...)) and serve this route under its prefix."
)


def api_token(request: Request) -> TokenRecord:
    """The token record TokenGuard allowed this request with (401 if the guard did not run)."""
    record = get_token(request.scope)
    if record is None:
        raise HTTPException(
            status_code=401,
            detail=_NOT_GUARDED,
            headers={"WWW-Authenticate": 'Bearer realm="token_guard"'},
        )
    return record


def optional_api_token(request: Request) -> TokenRecord | None:
    """The token record TokenGuard allowed this request with, or None outside its prefix."""
    return get_token(request.scope)


ApiToken = Annotated[TokenRecord, Depends(api_token)]
"""Annotate a handler parameter with it: ``def view(token: ApiToken)``."""

OptionalApiToken = Annotated[TokenRecord | None, Depends(optional_api_token)]
"""Like ``ApiToken``, None where the guard did not run."""
