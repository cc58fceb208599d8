"""A Starlette data API guarded by TokenGuard, with CORS outside the guard.

Run it (from the repository root)::

    uvicorn examples.starlette_app:app

Tokens live in the store ``$TOKEN_GUARD_STORE`` names (default ``sqlite:///tokens.db``,
the CLI's default too). Create one::

    python - <<'PY'
    import asyncio
    from token_guard.stores import open_store

    async def main() -> None:
        store = open_store(default="sqlite:///tokens.db")
        issued = await store.create_token({
            "name": "demo", "allowed_apis": ["maps"], "referers": [],
            "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
        })
        print(issued.token)  # shown once: only its hash is stored
        await store.close()

    asyncio.run(main())
    PY

and call the API with it::

    curl -H "Authorization: Bearer $TOKEN" \\
        "http://127.0.0.1:8000/v3/maps/carto_dw/table?name=proj.ds.stores"   # 200
    curl "http://127.0.0.1:8000/v3/maps/carto_dw/table?name=proj.ds.stores"  # 401

Middleware order: Starlette runs ``middleware=[...]`` outermost first, so ``CORSMiddleware``
comes before ``TokenGuard``: a browser gets CORS headers on the guard's 401/403 and can read
them, and a preflight (which carries no token) is answered by the CORS layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from token_guard.adapters.asgi import TokenGuard, get_token
from token_guard.stores import open_store

CONNECTIONS = {"carto_dw": "bigquery"}  # connection name -> its SQL dialect
ROWS = {"proj.ds.stores": [{"id": 1, "city": "Madrid"}, {"id": 2, "city": "Sevilla"}]}

store = open_store(default="sqlite:///tokens.db")


async def table(request: Request) -> JSONResponse:
    """A table's rows; TokenGuard has already checked the token may read ``name`` here."""
    token = get_token(request.scope)
    name = request.query_params.get("name", "")
    return JSONResponse({"token": token.name if token else None, "rows": ROWS.get(name, [])})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Close the token store when the server stops (TokenGuard flushes usage first)."""
    yield
    await store.close()


app = Starlette(
    routes=[Route("/v3/maps/{connection}/table", table)],
    middleware=[
        Middleware(
            CORSMiddleware,
            allow_origins=["http://localhost:3000"],
            allow_headers=["Authorization", "Content-Type"],
        ),
        Middleware(TokenGuard, store=store, connections=CONNECTIONS),
    ],
    lifespan=lifespan,
)
