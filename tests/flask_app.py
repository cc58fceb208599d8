"""A Flask app as users write it: Flask-CORS and ``FlaskTokenGuard`` on a SQLite store.

Served by real server processes in ``tests/test_flask.py``::

    python -m waitress --listen=127.0.0.1:PORT --call tests.flask_app:create_app
    python -m gunicorn -b 127.0.0.1:PORT -w 2 --preload 'tests.flask_app:create_app()'

The store file is ``$TOKEN_GUARD_TEST_FLASK_STORE``.
"""

from __future__ import annotations

import os

from flask import Flask, Response, g, jsonify
from flask_cors import CORS

import token_guard as tg
from tests.tokens import CONNECTIONS

ALLOWED_ORIGIN = "https://app.example.com"


def create_app() -> Flask:
    """The guarded app; CORS is set up before the guard, as most apps happen to do it."""
    app = Flask(__name__)
    CORS(app, origins=[ALLOWED_ORIGIN], allow_headers=["Authorization", "Content-Type"])
    store = tg.SQLiteStore(os.environ["TOKEN_GUARD_TEST_FLASK_STORE"])
    tg.FlaskTokenGuard(app, store=store, connections=CONNECTIONS)

    @app.get("/v3/maps/<connection>/table")
    def table(connection: str) -> Response:
        token = tg.flask_token()
        return jsonify(token_id=token.id, g_token_id=g.token_guard_token.id)

    @app.get("/health")
    def health() -> Response:
        return jsonify(g_token=g.token_guard_token)

    return app
