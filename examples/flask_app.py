"""A Flask data API guarded by the FlaskTokenGuard extension, with Flask-CORS.

Run it (from the repository root, with ``token_guard[flask]`` installed)::

    flask --app examples/flask_app run          # or: python examples/flask_app.py

Tokens live in the store ``$TOKEN_GUARD_STORE`` names (default ``sqlite:///tokens.db``;
``postgresql://...`` works too); create one as shown in
``examples/starlette_app.py``. Then::

    curl -H "Authorization: Bearer $TOKEN" \\
        "http://127.0.0.1:5000/v3/maps/carto_dw/table?name=proj.ds.stores"   # 200

``FlaskTokenGuard`` wraps ``app.wsgi_app`` (the guard decides before Flask runs) and sends
its refusals through the app's ``after_request`` hooks, so Flask-CORS labels the 401/403
and a browser can read them; preflights pass the guard to Flask-CORS. Views read the
token with ``tg.flask_token()`` (or ``flask.g.token_guard_token``). In production serve it
with a threaded server, e.g. ``waitress-serve --call examples.flask_app:create_app`` or
``gunicorn 'examples.flask_app:create_app()'`` (both pass the raw request path the guard
checks; see ``token_guard.adapters.wsgi``).
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request
from flask_cors import CORS

import token_guard as tg
from token_guard.stores import open_store

CONNECTIONS = {"carto_dw": "bigquery"}  # connection name -> its SQL dialect
ROWS = {"proj.ds.stores": [{"id": 1, "city": "Madrid"}, {"id": 2, "city": "Sevilla"}]}
ALLOWED_ORIGINS = ["http://localhost:3000"]


def create_app() -> Flask:
    """The Flask app with Flask-CORS and the guard around its WSGI callable."""
    app = Flask(__name__)
    CORS(app, origins=ALLOWED_ORIGINS, allow_headers=["Authorization", "Content-Type"],
         max_age=600)

    @app.get("/v3/maps/<connection>/table")
    def table(connection: str) -> Response:
        """A table's rows; the guard has already checked the token may read ``name``."""
        token = tg.flask_token()
        name = request.args.get("name", "")
        return jsonify(token=token.name, rows=ROWS.get(name, []))

    tg.FlaskTokenGuard(app, store=open_store(default="sqlite:///tokens.db"),
                       connections=CONNECTIONS)
    return app


app = create_app()

if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")), threaded=True)
