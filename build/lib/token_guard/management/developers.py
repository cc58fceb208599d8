"""The Developers page: ``GET /developers`` and its CSS and JS, with the page's security headers.

The page (HTML, CSS and JS from ``token_guard/web/``) signs in with an OAuth client, then
lists, inspects, creates and revokes tokens through the Tokens API. It is static; every
action is a Tokens API call made by the browser with the access token it keeps in memory.

Security choices: a strict CSP (this origin only, no inline script or style),
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``; the files served are a fixed
table read once at start-up, so no request path ever reaches the file system.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

#: Where the management app serves the Developers page.
DEVELOPERS_PATH = "/developers"
# No inline script or style anywhere on the page: injected markup can neither run nor restyle.
# form-action 'none': the page's forms are handled by script; a form that escaped it goes nowhere.
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _PAGE_CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
# Files of the page, by the name they are served under: a fixed table, so no request path
# ever reaches the file system.
_PAGE_ASSETS = {
    "developers.css": "text/css; charset=utf-8",
    "developers.js": "text/javascript; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class _PageFile:
    body: bytes
    media_type: str


def _load_page_files() -> Mapping[str, _PageFile]:
    """Read the Developers page's files once, from the installed package."""
    web = files("token_guard").joinpath("web")
    out = {"": _PageFile(web.joinpath("developers.html").read_bytes(), "text/html; charset=utf-8")}
    for name, media_type in _PAGE_ASSETS.items():
        out[name] = _PageFile(web.joinpath(name).read_bytes(), media_type)
    return out


class DevelopersPage:
    """``GET /developers`` and its CSS and JS, with the page's security headers."""

    def __init__(self) -> None:
        self.files = _load_page_files()

    def routes(self) -> list[Route]:
        """The page's routes: the page, its trailing-slash redirect and its static files."""
        return [
            Route(DEVELOPERS_PATH, self.page, methods=["GET"]),
            Route(DEVELOPERS_PATH + "/", self.slash, methods=["GET"]),
            Route(DEVELOPERS_PATH + "/static/{name}", self.asset, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        """``GET /developers``."""
        # no-store: the page holds a live access token in memory, so it must not be
        # restored from the back/forward cache after the person signed out and left.
        return self._answer(self.files[""], "no-store")

    async def slash(self, request: Request) -> Response:
        """``GET /developers/``: the page's relative URLs assume no trailing slash."""
        root = str(request.scope.get("root_path", ""))
        return RedirectResponse(root + DEVELOPERS_PATH, 308, headers=_PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        """``GET /developers/static/{name}``: only the page's own files."""
        name = str(request.path_params["name"])
        found = self.files.get(name) if name in _PAGE_ASSETS else None
        if found is None:
            return Response(
                "not found", status_code=404, media_type="text/plain; charset=utf-8",
                headers=_PAGE_HEADERS,
            )
        return self._answer(found, "no-cache")

    def _answer(self, file: _PageFile, cache: str) -> Response:
        return Response(
            file.body, media_type=file.media_type,
            headers={**_PAGE_HEADERS, "Cache-Control": cache},
        )
