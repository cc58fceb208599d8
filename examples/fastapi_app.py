"""A FastAPI data API guarded by TokenGuard; handlers get the token with ``Depends``.

Run it (from the repository root)::

    uvicorn examples.fastapi_app:app

Tokens live in the store ``$TOKEN_GUARD_STORE`` names (default ``sqlite:///tokens.db``;
``postgresql://...`` works too); create one as shown in
``examples/starlette_app.py``. Then::

    curl -H "Authorization: Bearer $TOKEN" \\
        "http://127.0.0.1:8000/v3/maps/carto_dw/table?name=proj.ds.stores"   # 200

Middleware order: FastAPI runs the middleware added *last* first, so ``TokenGuard`` is added
before ``CORSMiddleware``: CORS wraps the guard, and browsers can read its 401/403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.fastapi import ApiToken
from token_guard.stores import open_store

CONNECTIONS = {"carto_dw": "bigquery"}  # connection name -> its SQL dialect
ROWS = {"proj.ds.stores": [{"id": 1, "city": "Madrid"}, {"id": 2, "city": "Sevilla"}]}

store = open_store(default="sqlite:///tokens.db")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the token store when the server stops (TokenGuard flushes usage first)."""
    yield
    await store.close()


app = FastAPI(lifespan=lifespan)
app.add_middleware(TokenGuard, store=store, connections=CONNECTIONS)
app.add_middleware(
    CORSMiddleware,
    allow_origins=["http://localhost:3000"],
    allow_headers=["Authorization", "Content-Type"],
)


@app.get("/v3/maps/{connection}/table")
def table(connection: str, name: str, token: ApiToken) -> dict[str, Any]:
    """A table's rows; TokenGuard has already checked the token may read ``name`` here."""
    return {"token": token.name, "rows": ROWS.get(name, [])}
