"""The management app as ``uvicorn --workers N tests.management_app:app`` imports it.

The store comes from ``TOKEN_GUARD_STORE``; every worker process builds its own app, and so
its own signing key, as a real multi-worker deployment does.
"""

from __future__ import annotations

from token_guard.management import create_management_app
from token_guard.stores import open_store

ISSUER = "https://tokens.test"
AUDIENCE = "token-guard-api"

app = create_management_app(open_store(), issuer=ISSUER, audience=AUDIENCE)
