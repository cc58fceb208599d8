"""``gunicorn tests.gunicorn_app:app``: the WSGI form of ``tests.guarded_app``."""

from __future__ import annotations

from tests.guarded_app import make_wsgi_app

app = make_wsgi_app()
