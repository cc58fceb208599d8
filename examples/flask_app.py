"""A Flask data API guarded by TokenGuardWSGI, with CORS outside the guard.

Run it (from the repository root, with token_guard installed)::

    flask --app examples/flask_app run          # or: python examples/flask_app.py

Tokens live in the store ``$TOKEN_GUARD_STORE`` names (default ``sqlite:///tokens.db``;
``postgresql://...`` works too); create one as shown in
``examples/starlette_app.py``. Then::

    curl -H "Authorization: Bearer $TOKEN" \\
        "http://127.0.0.1:5000/v3/maps/carto_dw/table?name=proj.ds.stores"   # 200

Order: ``app.wsgi_app = cors(TokenGuardWSGI(app.wsgi_app, ...))``. Flask-CORS would run
inside Flask, behind the guard, so a browser could not read the guard's 401/403; the small
WSGI ``cors`` layer below wraps the guard instead. Views read the token with
``current_token()``. In production serve it with a threaded server, e.g.
``waitress-serve --call examples.flask_app:create_app`` (waitress passes the raw request
path the guard checks; see ``token_guard.adapters.wsgi``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request

from token_guard.adapters.wsgi import TokenGuardWSGI, current_token
from token_guard.stores import open_store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CONNECTIONS = {"carto_dw": "bigquery"}  # connection name -> its SQL dialect
ROWS = {"proj.ds.stores": [{"id": 1, "city": "Madrid"}, {"id": 2, "city": "Sevilla"}]}
ALLOWED_ORIGINS = frozenset({"http://localhost:3000"})

def cors(app: WSGIApplication, allow_origins: frozenset[str]) -> WSGIApplication:
    """A minimal CORS layer for WSGI: answers preflights, labels every response."""

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        origin = environ.get("HTTP_ORIGIN")
        if origin not in allow_origins:
            return app(environ, start_response)
        allow = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if environ["REQUEST_METHOD"] == "OPTIONS" and (
            "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        ):
            start_response("204 No Content", [
                *allow,
                ("Access-Control-Allow-Methods", "GET, POST"),
                ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
                ("Access-Control-Max-Age", "600"),
            ])
            return [b""]

        def labelled(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *allow], exc_info)

        return app(environ, labelled)

    return wrapped


def create_app() -> Flask:
    """The Flask app with the guard around its WSGI callable and CORS around the guard."""
    app = Flask(__name__)

    @app.get("/v3/maps/<connection>/table")
    def table(connection: str) -> Response:
        """A table's rows; the guard has already checked the token may read ``name``."""
        token = current_token()
        name = request.args.get("name", "")
        return jsonify(token=token.name, rows=ROWS.get(name, []))

    store = open_store(default="sqlite:///tokens.db")
    guard = TokenGuardWSGI(app.wsgi_app, store=store, connections=CONNECTIONS)
    # Flask's documented way to wrap its WSGI callable; mypy sees a method being replaced.
    app.wsgi_app = cors(guard, ALLOWED_ORIGINS)  # type: ignore[method-assign,assignment]
    return app


app = create_app()

if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")), threaded=True)
