"""FlaskTokenGuard: the Flask extension around ``TokenGuardWSGI``.

Usage::

    from flask_cors import CORS
    import token_guard as tg

    guard = tg.FlaskTokenGuard(store=tg.SQLiteStore("tokens.db"),
                               connections={"carto_dw": "bigquery"})

    def create_app() -> Flask:
        app = Flask(__name__)
        CORS(app, origins=["https://app.example.com"])   # before or after: either works
        guard.init_app(app)
        return app

    @app.get("/v3/maps/<connection>/table")
    def table(connection: str):
        token = tg.flask_token()            # or flask.g.token_guard_token
        ...

Security choices, and what is Flask's own:

- **The guard decides before Flask runs.** ``init_app`` wraps ``app.wsgi_app`` (innermost,
  so nothing rewrites the path after it decided, see ``token_guard.adapters.wsgi``): no
  ``before_request`` hook, view or error handler runs for a refused request.
- **Refusals go through the app's ``after_request`` hooks.** A refusal is built as a Flask
  response and passed to ``app.process_response`` in a request context, so Flask-CORS (and
  any hook adding headers) labels it exactly as it labels the app's own responses: a
  browser can read the 401/403. That is why Flask-CORS needs no special order. A hook that
  raises, or changes the status, is ignored (logged) and the bare refusal is sent: a hook
  can add headers to a refusal, never turn it into something else.
- **Preflights** carry no token and pass through the guard to Flask-CORS.
- **The token on ``flask.g``.** For a request the guard let through, ``g.token_guard_token``
  is the resolved ``TokenRecord`` (never the secret); outside the guarded prefix it is
  None. ``flask_token()`` returns it and answers 401 when the guard did not check one.
- **One app per extension.** The store is used on the guard's own event loop thread, so an
  extension guards one app; ``init_app`` on a second app is a ``ConfigurationError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from flask import Flask, Request, g, request

from token_guard.adapters.wsgi import ENVIRON_KEY, TokenGuardWSGI, current_token
from token_guard.core.connections import Connection
from token_guard.core.decision import Denial
from token_guard.core.errors import ConfigurationError
from token_guard.core.records import TokenRecord
from token_guard.guard import GuardOptions
from token_guard.stores.base import TokenReader

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from token_guard.config import ConfigSource

__all__ = ["EXTENSION_KEY", "G_ATTRIBUTE", "FlaskTokenGuard", "flask_token"]

log = logging.getLogger("token_guard")

G_ATTRIBUTE = "token_guard_token"
"""The ``flask.g`` attribute holding the resolved ``TokenRecord`` (None if none)."""
EXTENSION_KEY = "token_guard"
"""The ``app.extensions`` key under which the app's ``FlaskTokenGuard`` is found."""


def flask_token() -> TokenRecord:
    """The token record the guard resolved for this Flask request (401 if none)."""
    return current_token()


class FlaskTokenGuard:
    """Guards a Flask app with API access tokens (options: see ``token_guard.guard.Guard``)."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: TokenReader | None = None,
        connections: Mapping[str, str | Connection] | None = None,
        config: ConfigSource | None = None,
        **options: Unpack[GuardOptions],
    ) -> None:
        self._store = store
        self._connections = connections
        self._config = config
        self._options = options
        self.wsgi: TokenGuardWSGI | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Wrap ``app.wsgi_app`` with the guard and put each request's token on ``flask.g``."""
        if self.wsgi is not None:
            raise ConfigurationError(
                "FlaskTokenGuard: this extension already guards an app; create one "
                "FlaskTokenGuard (with its own store) per Flask app"
            )
        wsgi = _FlaskGuardedApp(
            app, app.wsgi_app, store=self._store, connections=self._connections,
            config=self._config, **self._options,
        )
        # Flask's documented way to wrap its WSGI callable; mypy sees a method replaced.
        app.wsgi_app = wsgi  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = self
        # First of the app's hooks, so the others (and blueprints') can read the token.
        app.before_request_funcs.setdefault(None, []).insert(0, _token_on_g)
        self.wsgi = wsgi

    def close(self) -> None:
        """Flush usage, close the store and stop the guard's loop thread (also run at exit)."""
        if self.wsgi is not None:
            self.wsgi.close()


# The objects behind Flask's ``request`` and ``g`` proxies (werkzeug's documented
# ``LocalProxy._get_current_object``; each reads the current context): an attribute read or
# write through a proxy costs thousands of instructions, and the hook below runs on every
# request of the app.
_current_request: Callable[[], Request] = request._get_current_object  # type: ignore[attr-defined]
_current_g: Callable[[], Any] = g._get_current_object


def _token_on_g() -> None:
    # setattr(g, G_ATTRIBUTE, get_token(request.environ)), without the proxies.
    token = _current_request().environ.get(ENVIRON_KEY)
    _current_g().token_guard_token = token if isinstance(token, TokenRecord) else None


class _FlaskGuardedApp(TokenGuardWSGI):
    """``TokenGuardWSGI`` whose refusals pass through the Flask app's ``after_request``."""

    def __init__(
        self,
        flask_app: Flask,
        app: WSGIApplication,
        *,
        store: TokenReader | None,
        connections: Mapping[str, str | Connection] | None,
        config: ConfigSource | None,
        **options: Unpack[GuardOptions],
    ) -> None:
        super().__init__(app, store=store, connections=connections, config=config, **options)
        self.flask_app = flask_app

    def _respond(
        self, environ: WSGIEnvironment, start_response: StartResponse, denial: Denial
    ) -> Iterable[bytes]:
        status, _, headers, body = self._response(denial)
        flask_app = self.flask_app
        listed = list(headers)
        environ.pop(ENVIRON_KEY, None)  # no hook may find a token on a refused request
        try:
            with flask_app.request_context(environ):
                response = flask_app.process_response(
                    flask_app.response_class(body, status=status, headers=listed)
                )
            if response.status_code != status:
                log.error("an after_request hook changed a refusal's status to %s; the "
                          "refusal is sent as the guard made it", response.status_code)
                response = flask_app.response_class(body, status=status, headers=listed)
        except Exception:
            log.exception("an after_request hook failed on a refusal; the refusal is sent "
                          "without the app's headers")
            response = flask_app.response_class(body, status=status, headers=listed)
        return response(environ, start_response)
