"""Guarded apps as servers import them (``uvicorn tests.guarded_app:app``,
``gunicorn tests.guarded_app:wsgi_app``): old clients' ``?access_token=`` allowed, the store
from ``TOKEN_GUARD_STORE``. ``/v3/lds/geocoding/geocode`` answers the token id and the query
string the app received; ``/health`` is outside the guard.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import token_guard as tg
from token_guard.stores import open_store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CONNECTIONS = {"carto_dw": "bigquery"}


async def geocode(request: Request) -> JSONResponse:
    """The resolved token and what the app saw of the query string."""
    token = tg.get_token(request.scope)
    return JSONResponse({
        "token": token.id if token else None,
        "query": request.scope["query_string"].decode("latin-1"),
        "address": request.query_params.get("address"),
    })


async def health(request: Request) -> JSONResponse:
    """Outside the guard's prefix."""
    return JSONResponse({"ok": True})


app = tg.TokenGuard(
    Starlette(routes=[Route("/v3/lds/geocoding/geocode", geocode), Route("/health", health)]),
    store=open_store(), connections=CONNECTIONS, allow_query_token=True,
)


def _wsgi_inner(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    token = tg.get_token(environ)
    body = json.dumps({
        "token": token.id if token else None, "query": environ.get("QUERY_STRING", ""),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def make_wsgi_app() -> tg.TokenGuardWSGI:
    """The WSGI form (built on demand: the ASGI app above is what uvicorn imports)."""
    return tg.TokenGuardWSGI(
        _wsgi_inner, store=open_store(), connections=CONNECTIONS, allow_query_token=True
    )
