"""A Starlette data API guarded by TokenGuard, with Prometheus metrics at ``/metrics``.

Run it (from the repository root; needs the ``metrics`` extra)::

    uvicorn examples.metrics_app:app

Tokens live in ``$TOKEN_GUARD_STORE`` (default ``sqlite:///tokens.db``; create one as
``examples/starlette_app.py`` shows), then::

    curl -H "Authorization: Bearer $TOKEN" \\
        "http://127.0.0.1:8000/v3/maps/carto_dw/table?name=proj.ds.stores"
    curl http://127.0.0.1:8000/metrics    # token_guard_decisions_total{api="maps",...}

``/metrics`` lies outside the guard's prefix (``/v3/``), so the guard passes it through
untouched; put it behind your network's own access rules.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from token_guard.adapters.asgi import TokenGuard, get_token
from token_guard.metrics import GuardMetrics
from token_guard.stores import open_store

CONNECTIONS = {"carto_dw": "bigquery"}
ROWS = {"proj.ds.stores": [{"id": 1, "city": "Madrid"}, {"id": 2, "city": "Sevilla"}]}

store = open_store(default="sqlite:///tokens.db")
metrics = GuardMetrics()


async def table(request: Request) -> JSONResponse:
    """A table's rows; TokenGuard has already checked the token may read ``name`` here."""
    token = get_token(request.scope)
    name = request.query_params.get("name", "")
    return JSONResponse({"token": token.name if token else None, "rows": ROWS.get(name, [])})


inner = Starlette(routes=[
    Route("/v3/maps/{connection}/table", table),
    Mount("/metrics", app=metrics.asgi_app()),
])
app = TokenGuard(inner, store=metrics.timed_store(store), connections=CONNECTIONS,
                 on_decision=metrics.on_decision)
metrics.attach(app)
