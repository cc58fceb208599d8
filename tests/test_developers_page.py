"""The Developers page (``/developers``) as a person uses it: Debian Chromium driven by Playwright.

One uvicorn serves the management app (page, Tokens API, OAuth) and the demo data API behind
TokenGuard, over one SQLite store, so a token made in the browser is used against the demo API
and refused there once the browser revoked it. Screenshots of every page land in
``test-output/developers/`` for a reviewer to look at.
"""

from __future__ import annotations

import asyncio
import html.parser
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.servers import ServerThread, serve
from tests.services import service_missing
from token_guard.adapters.asgi import TokenGuard
from token_guard.config import Settings
from token_guard.core.connections import normalize_connections
from token_guard.core.errors import InvalidTokenSpec
from token_guard.core.secret import is_well_formed, secret_prefix
from token_guard.core.spec import parse_token_spec
from token_guard.demo.app import CONNECTIONS, build_app
from token_guard.management import (
    READ_SCOPE,
    WRITE_SCOPE,
    create_client,
    create_management_app,
    revoke_client,
)
from token_guard.stores import SQLiteStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[1] / "test-output" / "developers"
ISSUER = "https://tokens.test"
AUDIENCE = "token-guard-api"
# Paths the management app answers; the rest goes to the guarded demo API.
MANAGEMENT_PATHS = ("/developers", "/v3/tokens", "/v3/audit", "/oauth", "/.well-known",
                    "/openapi.json")
DEMO_QUERY = "SELECT storetype, count(*) AS n FROM stores GROUP BY storetype"


class Site:
    """One ASGI app: management paths to the management app, everything else to the guard."""

    def __init__(self, management: ASGIApp, guarded: ASGIApp) -> None:
        self.management = management
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # The guard's lifespan closes its resolver; the management app needs none.
            await self.guarded(scope, receive, send)
            return
        path: str = scope.get("path", "")
        to_management = any(path == p or path.startswith(p + "/") for p in MANAGEMENT_PATHS)
        await (self.management if to_management else self.guarded)(scope, receive, send)


@dataclass(frozen=True, slots=True)
class Served:
    """The running site, its store, and an OAuth client that may read and write tokens."""

    server: ServerThread
    store: SQLiteStore
    client_id: str
    client_secret: str

    @property
    def url(self) -> str:
        """The site's base URL."""
        return self.server.url

    def seed(self, body: dict[str, Any], *, revoke: bool = False) -> str:
        """Create a token directly in the store (on the server's loop); return its id."""

        async def go() -> str:
            issued = await self.store.create_token(body, actor="test")
            if revoke:
                await self.store.revoke_token(issued.id, actor="test")
            return issued.id

        return self.server.call(go)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's sample database, generated once (tests only read it)."""
    return tmp_path_factory.mktemp("demo-data")


@pytest.fixture
def site(tmp_path: Path, demo_dir: Path) -> Iterator[Served]:
    """The composed site under a real uvicorn, over a fresh SQLite store."""
    store = SQLiteStore(str(tmp_path / "tokens.db"))
    # With the app's configuration: grants are checked and the page offers the connections.
    management = create_management_app(
        store, issuer=ISSUER, audience=AUDIENCE,
        config=Settings(connections=normalize_connections(CONNECTIONS)),
    )
    inner: Any = build_app(demo_dir)
    guarded = TokenGuard(inner, store=store, connections=CONNECTIONS)
    with serve(Site(management, guarded)) as server:
        client, secret = server.call(
            lambda: create_client(store, "developers page", [READ_SCOPE, WRITE_SCOPE],
                                  actor="cli:test")
        )
        try:
            yield Served(server, store, client.client_id, secret)
        finally:
            server.call(store.close)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver (it never downloads a browser here: Debian's Chromium is used)."""
    if not os.path.exists(CHROMIUM) and shutil.which("chromium") is None:
        service_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium, shared by the tests of this module (each gets a new context)."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    launched = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@dataclass(frozen=True, slots=True)
class Tab:
    """A browser tab on the site, with the CSP violations and dialogs it reported."""

    page: Page
    context: BrowserContext
    csp_errors: list[str]
    alerts: list[str]


def _open_tab(browser: Browser, site: Served, *, width: int = 1280, height: int = 900) -> Tab:
    context = browser.new_context(
        viewport={"width": width, "height": height}, locale="en-GB", timezone_id="UTC",
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    csp_errors: list[str] = []
    alerts: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # Only CSP reports: a 400/401 answer is logged as an error too, and those are expected.
        if "Content Security Policy" in message.text:
            csp_errors.append(message.text)

    def on_dialog(dialog: Dialog) -> None:
        alerts.append(dialog.message)
        dialog.dismiss()

    page.on("console", on_console)
    page.on("dialog", on_dialog)
    return Tab(page, context, csp_errors, alerts)


@pytest.fixture
def tab(browser: Browser, site: Served) -> Iterator[Tab]:
    """A desktop-width tab."""
    opened = _open_tab(browser, site)
    try:
        yield opened
    finally:
        opened.context.close()


def _shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def _sign_in(page: Page, site: Served, client: tuple[str, str] | None = None) -> None:
    client_id, secret = client or (site.client_id, site.client_secret)
    page.goto(f"{site.url}/developers")
    page.get_by_label("Client id").fill(client_id)
    page.get_by_label("Client secret").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API access tokens")).to_be_visible()


def _api_message(body: dict[str, Any]) -> str:
    """The message the Tokens API gives for ``body`` (the same validation code)."""
    try:
        parse_token_spec(body)
    except InvalidTokenSpec as exc:
        return str(exc)
    raise AssertionError(f"{body} is valid")


def _demo_query(site: Served, token: str, q: str = DEMO_QUERY) -> httpx.Response:
    return httpx.get(
        f"{site.url}/v3/sql/demo/query", params={"q": q},
        headers={"Authorization": f"Bearer {token}"}, timeout=10,
    )


# --- the page as served -----------------------------------------------------------------


class _InlineFinder(html.parser.HTMLParser):
    """Collects what a strict CSP would block: inline scripts, style attributes, on* handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = "src" not in names
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag}[{n}]" for n in names if n == "style" or n.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("inline <script>")


def test_page_is_served_with_security_headers_and_no_inline_code(site: Served) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as http:
        page = http.get("/developers")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        finder = _InlineFinder()
        finder.feed(page.text)
        assert finder.found == []

        for name, media in (("developers.js", "text/javascript"), ("developers.css", "text/css")):
            asset = http.get(f"/developers/static/{name}")
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(media)
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert "localStorage.setItem" not in http.get("/developers/static/developers.js").text

        for path in ("/developers/static/../api.py", "/developers/static/developers.html",
                     "/developers/static/%2e%2e%2fapi.py", "/developers/static/nope.js"):
            assert http.get(path).status_code == 404, path
        slash = http.get("/developers/")
        assert slash.status_code == 308 and slash.headers["location"] == "/developers"


def test_page_can_be_left_out_of_an_api_only_app(tmp_path: Path) -> None:
    async def go() -> int:
        store = SQLiteStore(str(tmp_path / "t.db"))
        app = create_management_app(
            store, issuer=ISSUER, audience=AUDIENCE, developers_page=False
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            status = (await http.get("/developers")).status_code
        await store.close()
        return status

    assert asyncio.run(go()) == 404


def _allowed_apis_enum(document: dict[str, Any]) -> list[str]:
    schema = document["components"]["schemas"]["TokenCreate"]
    enum: list[str] = schema["properties"]["allowed_apis"]["items"]["enum"]
    return enum


def _open_create_form(page: Page, site: Served) -> None:
    _sign_in(page, site)
    page.get_by_role("link", name="Create token").first.click()
    expect(page.get_by_role("heading", name="Create an API access token")).to_be_visible()


def test_api_checkboxes_are_the_openapi_documents_allowed_apis(tab: Tab, site: Served) -> None:
    enum = _allowed_apis_enum(httpx.get(f"{site.url}/openapi.json", timeout=10).json())
    page = tab.page
    _open_create_form(page, site)
    boxes = page.locator("#apis input[type=checkbox][name=allowed_apis]")
    expect(boxes).to_have_count(len(enum))
    assert [boxes.nth(i).get_attribute("value") for i in range(len(enum))] == enum
    expect(page.get_by_label("SQL", exact=True)).to_have_attribute("value", "sql")
    assert tab.csp_errors == []


def test_an_api_the_page_has_no_word_for_gets_its_name_as_label(tab: Tab, site: Served) -> None:
    document = httpx.get(f"{site.url}/openapi.json", timeout=10).json()
    schema = document["components"]["schemas"]["TokenCreate"]["properties"]["allowed_apis"]
    schema["items"]["enum"] = ["sql", "tiles"]
    page = tab.page
    page.route("**/openapi.json", lambda route: route.fulfill(json=document))
    _open_create_form(page, site)
    boxes = page.locator("#apis input[name=allowed_apis]")
    expect(boxes).to_have_count(2)
    expect(page.get_by_label("tiles", exact=True)).to_have_attribute("value", "tiles")
    expect(page.get_by_label("SQL", exact=True)).to_have_attribute("value", "sql")


def test_the_form_says_so_when_the_api_list_cannot_be_loaded(tab: Tab, site: Served) -> None:
    page = tab.page
    page.route("**/openapi.json", lambda route: route.fulfill(status=503, body="down"))
    _open_create_form(page, site)
    expect(page.locator("#api-choices [role=alert]")).to_contain_text("could not be loaded")
    assert page.locator("#apis input").count() == 0


# --- the main flow ----------------------------------------------------------------------


def test_sign_in_create_use_revoke_and_the_demo_api_refuses(tab: Tab, site: Served) -> None:
    site.seed({"name": "storefront map", "allowed_apis": ["maps", "sql"],
               "referers": ["https://*.example.com"],
               "grants": [{"connection_name": "demo", "source": "stores"},
                          {"connection_name": "demo", "source": "SELECT name FROM cities"}]})
    site.seed({"name": "old geocoder", "allowed_apis": ["lds"]}, revoke=True)
    page = tab.page

    response = page.goto(f"{site.url}/developers")
    assert response is not None and response.ok
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    _shot(page, "01-sign-in")

    # A wrong secret: the OAuth error is shown, and we stay on the sign-in form.
    page.get_by_label("Client id").fill(site.client_id)
    page.get_by_label("Client secret").fill("tgc_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("Sign-in failed")
    _shot(page, "02-sign-in-failed")

    _sign_in(page, site)
    rows = page.locator("#token-rows tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#session-client")).to_have_text(f"Signed in as {site.client_id}")
    _shot(page, "03-token-list")

    # Create a token for the SQL API on the demo's stores table.
    page.get_by_role("link", name="Create token").first.click()
    expect(page.get_by_role("heading", name="Create an API access token")).to_be_visible()
    page.get_by_label("Name").fill("browser-made token")
    page.get_by_label("SQL").check()
    page.get_by_label("Connection, grant 1").fill("demo")
    page.get_by_label("Source, grant 1").fill("stores")
    page.get_by_role("button", name="Add grant").click()
    page.get_by_label("Connection, grant 2").fill("demo")
    page.get_by_label("Source, grant 2").fill("cities")
    _shot(page, "04-create-form")
    page.get_by_role("button", name="Create token").click()

    expect(page.get_by_role("heading", name="Token created: copy it now")).to_be_visible()
    expect(page.get_by_text("This is the only time the token is shown.")).to_be_visible()
    secret = page.locator("#created-secret").input_value()
    assert secret.startswith("tgk_")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    # Empty referers on a SQL token: the API's warning is shown with the secret.
    expect(page.locator("#created-warnings")).to_contain_text("referers is empty")
    _shot(page, "05-created-secret")

    # The token works against the demo API, within its grants only.
    allowed = _demo_query(site, secret)
    assert allowed.status_code == 200, allowed.text
    assert sum(row["n"] for row in allowed.json()["rows"]) > 0
    assert _demo_query(site, secret, "SELECT email FROM customers").status_code == 403

    page.get_by_role("button", name="I have copied it").click()
    expect(rows).to_have_count(3)
    # The secret is gone from the page once the person moved on.
    assert page.locator("#created-secret").input_value() == ""
    assert secret not in page.content()

    page.get_by_label("Filter tokens").fill("browser-made")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text("SQL")
    expect(row).to_contain_text("demo: stores; demo: cities")
    expect(row).to_contain_text("Any website")
    expect(row).to_contain_text("active")
    expect(page.locator("#filter-count")).to_have_text("1 of 3 tokens shown")
    _shot(page, "06-token-list-filtered")

    # Detail: the full grants.
    row.get_by_role("link", name="browser-made token").click()
    expect(page.get_by_role("heading", name="Token: browser-made token")).to_be_visible()
    grants = page.locator("#detail-grants tr")
    expect(grants).to_have_count(2)
    expect(grants.nth(0)).to_contain_text("demo")
    expect(grants.nth(0)).to_contain_text("stores")
    expect(grants.nth(1)).to_contain_text("cities")
    _shot(page, "07-token-detail")

    # Revoke, confirming in an accessible dialog.
    page.get_by_role("button", name="Revoke token").click()
    dialog = page.get_by_role("dialog", name="Revoke this token?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("browser-made token")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    _shot(page, "08-revoke-dialog", full_page=False)
    dialog.get_by_role("button", name="Revoke token").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#detail-fields")).to_contain_text("revoked")
    expect(page.get_by_role("button", name="Revoke token")).to_be_hidden()
    expect(page.locator("#status")).to_contain_text("was revoked")
    _shot(page, "09-token-revoked")

    # The list updates, and the demo API refuses the token now.
    page.get_by_role("link", name="All tokens").click()
    page.get_by_label("Filter tokens").fill("browser-made")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("revoked")
    refused = _demo_query(site, secret)
    assert refused.status_code == 401
    assert refused.json()["code"]
    assert secret not in refused.text

    assert tab.csp_errors == []
    assert tab.alerts == []


def test_revoke_from_the_list_by_keyboard_and_cancel_with_escape(tab: Tab, site: Served) -> None:
    site.seed({"name": "keyboard token", "allowed_apis": ["lds"]})
    page = tab.page
    _sign_in(page, site)
    revoke = page.get_by_role("button", name="Revoke keyboard token")
    revoke.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#token-rows tr").first).to_contain_text("active")

    revoke.focus()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Revoke token")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#token-rows tr").first).to_contain_text("revoked")
    expect(page.get_by_role("button", name="Revoke keyboard token")).to_have_count(0)
    assert tab.csp_errors == []


def test_a_revocation_the_store_cannot_make_is_reported_as_not_done(
    tab: Tab, site: Served
) -> None:
    token_id = site.seed({"name": "locked token", "allowed_apis": ["lds"]})
    page = tab.page
    _sign_in(page, site)
    holder = sqlite3.connect(site.store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        page.get_by_role("button", name="Revoke locked token").click()
        page.get_by_role("dialog").get_by_role("button", name="Revoke token").click()
        status = page.locator("#status")
        expect(status).to_contain_text("Could not revoke locked token", timeout=15_000)
        expect(status).to_contain_text("nothing was changed")
        expect(status).not_to_contain_text("was revoked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    expect(page.locator("#token-rows tr").first).to_contain_text("active")
    record = site.server.call(lambda: site.store.get_token(token_id))
    assert record is not None and record.revoked_at is None


# --- the form's field errors ------------------------------------------------------------


def _fill_imports_with_sql(page: Page) -> None:
    page.get_by_label("SQL").check()
    page.get_by_label("Imports").check()


def _fill_second_grant_without_source(page: Page) -> None:
    page.get_by_label("SQL").check()
    page.get_by_label("Connection, grant 1").fill("demo")
    page.get_by_label("Source, grant 1").fill("stores")
    page.get_by_role("button", name="Add grant").click()
    page.get_by_label("Connection, grant 2").fill("demo")


def _fill_bad_wildcard(page: Page) -> None:
    page.get_by_label("Maps").check()
    page.get_by_label("Connection, grant 1").fill("demo")
    page.get_by_label("Source, grant 1").fill("proj.*")


def _fill_bad_second_referer(page: Page) -> None:
    page.get_by_label("Maps").check()
    page.get_by_label("Referers (websites)").fill("https://*.example.com\n\nnot a url")


def _fill_past_expiration(page: Page) -> None:
    page.get_by_label("LDS").check()
    page.get_by_label("Expiration (optional)").fill("2020-01-01T00:00")


def _fill_no_api(page: Page) -> None:
    page.get_by_label("Name").fill("no api")


@pytest.mark.parametrize(
    ("fill", "body", "invalid", "error", "prefix"),
    [
        pytest.param(_fill_imports_with_sql, {"allowed_apis": ["sql", "imports"]},
                     "#apis input[value=maps]", "#apis-error", "", id="imports-exclusive"),
        pytest.param(_fill_no_api, {"allowed_apis": []},
                     "#apis input[value=maps]", "#apis-error", "", id="no-api"),
        pytest.param(_fill_second_grant_without_source,
                     {"allowed_apis": ["sql"],
                      "grants": [{"connection_name": "demo", "source": "stores"},
                                 {"connection_name": "demo", "source": ""}]},
                     "#grant-rows li:nth-child(2) .grant-source",
                     "#grant-rows li:nth-child(2) .grant-error", "", id="second-grant-source"),
        pytest.param(_fill_bad_wildcard,
                     {"allowed_apis": ["maps"],
                      "grants": [{"connection_name": "demo", "source": "proj.*"}]},
                     "#grant-rows li:nth-child(1) .grant-source",
                     "#grant-rows li:nth-child(1) .grant-error", "", id="wildcard-segments"),
        pytest.param(_fill_bad_second_referer,
                     {"allowed_apis": ["maps"], "referers": ["https://*.example.com", "not a url"]},
                     "#referers", "#referers-error", "Line 3: ", id="second-referer"),
        # The tab's clock is UTC, so the local date-time is sent as this instant.
        pytest.param(_fill_past_expiration,
                     {"allowed_apis": ["lds"], "expiration_date": "2020-01-01T00:00:00.000Z"},
                     "#expiration", "#expiration-error", "", id="past-expiration"),
    ],
)
def test_a_bad_form_shows_the_api_message_beside_the_field(
    tab: Tab, site: Served, fill: Callable[[Page], None], body: dict[str, Any],
    invalid: str, error: str, prefix: str, request: pytest.FixtureRequest,
) -> None:
    page = tab.page
    _sign_in(page, site)
    page.goto(f"{site.url}/developers#new")
    expect(page.get_by_role("heading", name="Create an API access token")).to_be_visible()
    fill(page)
    page.get_by_role("button", name="Create token").click()

    message = page.locator(error)
    expect(message).to_be_visible()
    expect(message).to_have_text(prefix + _api_message(body))
    field = page.locator(invalid)
    expect(field).to_have_attribute("aria-invalid", "true")
    error_id = message.get_attribute("id")
    assert error_id and error_id in (field.get_attribute("aria-describedby") or "").split()
    expect(field).to_be_focused()
    _shot(page, f"10-form-error-{request.node.callspec.id}")

    # Nothing was created; the form stays, with what the person typed.
    assert site.server.call(lambda: site.store.list_tokens(limit=10)) == []
    expect(page.locator("#view-new")).to_be_visible()
    assert tab.csp_errors == []


def test_the_form_offers_the_configured_connections_and_shows_an_unknown_one(
    tab: Tab, site: Served
) -> None:
    page = tab.page
    _sign_in(page, site)
    page.get_by_role("link", name="Create token").first.click()
    options = page.locator("#known-connections option")
    expect(options).to_have_count(1)
    assert options.first.get_attribute("value") == "demo"
    conn = page.get_by_label("Connection, grant 1")
    assert conn.get_attribute("list") == "known-connections"
    page.get_by_label("Name").fill("typo")
    page.get_by_label("SQL").check()
    conn.fill("dmo")
    page.get_by_label("Source, grant 1").fill("stores")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#grant-rows .grant-error").first).to_contain_text(
        "unknown connection 'dmo'")
    assert site.server.call(lambda: site.store.list_tokens(limit=10)) == []
    assert tab.csp_errors == []


def test_field_error_clears_and_the_corrected_form_creates(tab: Tab, site: Served) -> None:
    page = tab.page
    _sign_in(page, site)
    page.get_by_role("link", name="Create token").first.click()
    _fill_imports_with_sql(page)
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#apis-error")).to_be_visible()
    page.get_by_label("Imports").uncheck()
    page.get_by_label("Connection, grant 1").fill("demo")
    page.get_by_label("Source, grant 1").fill("stores")
    page.get_by_role("button", name="Remove grant 1").click()
    expect(page.locator("#grant-rows li")).to_have_count(0)
    expect(page.get_by_role("button", name="Add grant")).to_be_focused()
    page.get_by_label("Expiration (optional)").fill("2031-02-03T04:05")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token created: copy it now")).to_be_visible()
    assert page.locator("#apis input[aria-invalid]").count() == 0

    page.get_by_role("link", name="Show the token").click()
    expect(page.locator("#detail-fields time[datetime='2031-02-03T04:05:00Z']")).to_be_visible()
    expect(page.locator("#detail-no-grants")).to_be_visible()
    (record,) = site.server.call(lambda: site.store.list_tokens(limit=10))
    assert record.allowed_apis == ("sql",) and record.grants == ()
    assert record.expiration_date is not None
    assert record.expiration_date.isoformat() == "2031-02-03T04:05:00+00:00"


# --- session, escaping, phone width -----------------------------------------------------


def test_sign_out_forgets_everything_and_nothing_is_stored(tab: Tab, site: Served) -> None:
    site.seed({"name": "listed token", "allowed_apis": ["lds"]})
    page = tab.page
    _sign_in(page, site)
    expect(page.locator("#token-rows tr")).to_have_count(1)
    stored = page.evaluate(
        "[localStorage.length, sessionStorage.length, document.cookie, indexedDB ? 1 : 0]"
    )
    assert stored[:3] == [0, 0, ""]

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#token-rows tr")).to_have_count(0)
    expect(page.get_by_text("listed token")).to_have_count(0)
    # Going to the list by URL needs a new sign-in.
    page.goto(f"{site.url}/developers#tokens")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # A reload loses the in-memory session as well.
    _sign_in(page, site)
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert tab.csp_errors == []


def test_a_revoked_client_is_signed_out_with_the_reason(tab: Tab, site: Served) -> None:
    page = tab.page
    _sign_in(page, site)
    site.server.call(lambda: revoke_client(site.store, site.client_id, actor="cli:test"))
    page.get_by_role("link", name="Create token").first.click()
    page.get_by_label("LDS").check()
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("OAuth client of this access token was revoked")
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    assert site.server.call(lambda: site.store.list_tokens(limit=10)) == []


def test_a_read_only_client_sees_why_it_cannot_create(tab: Tab, site: Served) -> None:
    reader, secret = site.server.call(
        lambda: create_client(site.store, "reader", [READ_SCOPE], actor="cli:test")
    )
    page = tab.page
    _sign_in(page, site, (reader.client_id, secret))
    page.get_by_role("link", name="Create token").first.click()
    page.get_by_label("LDS").check()
    page.get_by_role("button", name="Create token").click()
    box = page.locator("#create-error")
    expect(box).to_contain_text("The token was not created: this access token lacks the "
                                "write:tokens scope")
    expect(box).to_be_focused()
    _shot(page, "11-read-only-client")


def test_hostile_token_names_render_as_text(tab: Tab, site: Served) -> None:
    name = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    site.seed({"name": name, "allowed_apis": ["maps"],
               "grants": [{"connection_name": "demo", "source": "SELECT '<b>x</b>' AS s"}]})
    page = tab.page
    _sign_in(page, site)
    expect(page.locator("#token-rows tr").first.locator("a.name")).to_have_text(name)
    assert page.locator("#token-rows img, #token-rows script, #token-rows b").count() == 0
    page.locator("#token-rows a.name").click()
    expect(page.locator("#detail-grants")).to_contain_text("SELECT '<b>x</b>' AS s")
    assert page.locator("main img, main b").count() == 0
    assert tab.alerts == []


def test_phone_width_has_no_sideways_scroll(browser: Browser, site: Served) -> None:
    site.seed({"name": "storefront map", "allowed_apis": ["maps", "sql"],
               "referers": ["https://*.example.com", "http://localhost:*"],
               "grants": [{"connection_name": "demo", "source": "stores"},
                          {"connection_name": "demo", "source": "cities"},
                          {"connection_name": "demo",
                           "source": "SELECT name, geom FROM stores WHERE city = @city"}]})
    opened = _open_tab(browser, site, width=390, height=844)
    page = opened.page
    try:
        page.goto(f"{site.url}/developers")
        _shot(page, "20-phone-sign-in")
        _sign_in(page, site)
        width = "document.documentElement.scrollWidth"
        assert page.evaluate(width) <= 390
        expect(page.get_by_role("button", name="Revoke storefront map")).to_be_in_viewport()
        _shot(page, "21-phone-token-list")
        page.get_by_role("link", name="Create token").first.click()
        expect(page.get_by_label("Connection, grant 1")).to_be_visible()
        assert page.evaluate(width) <= 390
        _shot(page, "22-phone-create-form")
        page.get_by_role("link", name="All tokens").click()
        page.locator("#token-rows a.name").click()
        expect(page.locator("#detail-grants tr")).to_have_count(3)
        assert page.evaluate(width) <= 390
        _shot(page, "23-phone-token-detail")
        assert opened.csp_errors == []
    finally:
        opened.context.close()


def test_a_tokens_limits_are_shown_in_the_list_and_the_detail(tab: Tab, site: Served) -> None:
    site.seed({"name": "limited map", "allowed_apis": ["maps", "sql"],
               "grants": [{"connection_name": "demo", "source": "stores"}],
               "limits": {"rate": [{"requests": 600, "per": "minute", "api": "sql"}],
                          "quota": {"requests": 1000000, "per": "month"}}})
    site.seed({"name": "unlimited", "allowed_apis": ["maps"]})
    page = tab.page
    _sign_in(page, site)
    limited = page.locator("#token-rows tr", has_text="limited map")
    expect(limited.locator("td[data-label=Limits]")).to_have_text(
        "600/minute sql, 1000000/month")
    expect(page.locator("#token-rows tr", has_text="unlimited").locator(
        "td[data-label=Limits]")).to_have_text("")
    limited.locator("a.name").click()
    expect(page.locator("#detail-fields")).to_contain_text("600/minute sql, 1000000/month")
    _shot(page, "30-token-limits")
    assert tab.csp_errors == []


def test_the_detail_charts_requests_per_day_and_refusals_by_reason(
    tab: Tab, site: Served
) -> None:
    from datetime import UTC, datetime, timedelta

    from token_guard.core.records import UsageRow

    token_id = site.seed({"name": "charted", "allowed_apis": ["maps"]})
    today = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [UsageRow(token_id, today - timedelta(days=d), "maps", "", 100 + 20 * d)
            for d in range(0, 12)]
    rows += [UsageRow(token_id, today - timedelta(days=2), "maps", "rate_limited", 60),
             UsageRow(token_id, today - timedelta(days=5), "maps", "origin_not_allowed", 30)]
    site.server.call(lambda: site.store.add_usage(rows))
    page = tab.page
    _sign_in(page, site)
    page.locator("#token-rows a.name", has_text="charted").click()
    chart = page.locator("#usage-chart svg")
    expect(chart).to_be_visible()
    expect(chart.locator("rect[data-series=allowed]")).to_have_count(12)
    expect(chart.locator("rect[data-series=rate_limited]")).to_have_count(1)
    day = (today - timedelta(days=2)).date().isoformat()
    assert chart.locator(f"rect[data-day='{day}'][data-series=rate_limited]").get_attribute(
        "data-count") == "60"
    expect(page.locator("#usage-legend")).to_contain_text("Refused: origin_not_allowed")
    allowed = sum(100 + 20 * d for d in range(12))
    expect(page.locator("#usage-summary")).to_contain_text(f"{allowed} allowed, 90 refused")
    _shot(page, "31-token-usage-chart")
    assert tab.csp_errors == []


def test_a_token_without_requests_says_so(tab: Tab, site: Served) -> None:
    site.seed({"name": "quiet", "allowed_apis": ["maps"]})
    page = tab.page
    _sign_in(page, site)
    page.locator("#token-rows a.name", has_text="quiet").click()
    expect(page.locator("#usage-summary")).to_have_text("No requests in the last 30 days.")
    assert page.locator("#usage-chart rect").count() == 0
# --- the token lifecycle: rotate, end the grace, disable, enable ---------------------------
# End to end against the running API and the guarded demo API; screenshots go to the test's
# temporary directory, not the repository.
LIFECYCLE_TOKEN = {"name": "lifecycle token", "allowed_apis": ["sql"], "referers": [],
         "grants": [{"connection_name": "demo", "source": "stores"}]}


def _tmp_shot(page: Page, shots: Path, name: str) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _until(site: Served, secret: str, status: int) -> httpx.Response:
    """The demo API's answer for ``secret`` once it is ``status`` (bounded wait)."""
    deadline = time.monotonic() + 10
    while True:
        answer = _demo_query(site, secret)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def _issue(site: Served) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        issued = await site.store.create_token(LIFECYCLE_TOKEN, actor="test")
        return issued.id, issued.token

    return site.server.call(go)


def test_rotate_then_end_the_grace_and_the_old_secret_is_refused(
    tab: Tab, site: Served, tmp_path: Path
) -> None:
    token_id, old = _issue(site)
    assert _until(site, old, 200).status_code == 200
    page = tab.page
    shots = tmp_path / "shots"
    _sign_in(page, site)
    row = page.locator(f"#token-rows tr[data-token-id='{token_id}']")
    expect(row).to_contain_text(secret_prefix(old))
    row.get_by_role("link", name="lifecycle token").click()
    expect(page.get_by_role("heading", name="Token: lifecycle token")).to_be_visible()
    expect(page.locator("#detail-fields")).to_contain_text(secret_prefix(old))
    _tmp_shot(page, shots, "01-detail")

    page.get_by_label("After a rotation, the old secret keeps working for").select_option("3600")
    page.get_by_role("button", name="Rotate secret").click()
    box = page.locator("#rotated-box")
    expect(box).to_be_visible()
    new = page.get_by_label("New secret").input_value()
    assert is_well_formed(new) and new != old
    expect(page.locator("#detail-fields")).to_contain_text(secret_prefix(new))
    page.get_by_role("button", name="Copy new secret").click()
    expect(page.locator("#rotated-copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == new
    _tmp_shot(page, shots, "02-rotated")
    # Both secrets work during the grace period.
    assert _until(site, new, 200).status_code == 200
    assert _until(site, old, 200).status_code == 200

    page.get_by_role("button", name="End grace period now").click()
    expect(page.locator("#status")).to_contain_text("grace period")
    refused = _until(site, old, 401)
    assert refused.status_code == 401 and refused.json()["code"] == "token_rotated"
    assert _until(site, new, 200).status_code == 200
    _tmp_shot(page, shots, "03-grace-ended")

    # The new secret leaves the page with the view.
    page.get_by_role("link", name="All tokens").click()
    expect(page.get_by_role("heading", name="API access tokens")).to_be_visible()
    assert new not in page.content()
    assert tab.csp_errors == [] and tab.alerts == []


def test_disable_refuses_and_enable_accepts_again(
    tab: Tab, site: Served, tmp_path: Path
) -> None:
    token_id, secret = _issue(site)
    page = tab.page
    shots = tmp_path / "shots"
    _sign_in(page, site)
    page.goto(f"{site.url}/developers#token/{token_id}")
    expect(page.get_by_role("heading", name="Token: lifecycle token")).to_be_visible()
    assert _until(site, secret, 200).status_code == 200

    page.get_by_role("button", name="Disable token").click()
    expect(page.locator("#detail-fields")).to_contain_text("disabled")
    expect(page.get_by_role("button", name="Enable token")).to_be_focused()
    expect(page.get_by_role("button", name="Disable token")).to_be_hidden()
    refused = _until(site, secret, 401)
    assert refused.json()["code"] == "token_disabled" and secret not in refused.text
    _tmp_shot(page, shots, "04-disabled")

    page.get_by_role("link", name="All tokens").click()
    row = page.locator(f"#token-rows tr[data-token-id='{token_id}']")
    expect(row).to_contain_text("disabled")
    expect(row.get_by_role("button", name="Revoke lifecycle token")).to_be_visible()
    row.get_by_role("link", name="lifecycle token").click()

    page.get_by_role("button", name="Enable token").click()
    expect(page.locator("#detail-fields")).to_contain_text("active")
    assert _until(site, secret, 200).status_code == 200
    _tmp_shot(page, shots, "05-enabled")
    assert tab.csp_errors == [] and tab.alerts == []


# --- the token list fits its container: no action is clipped --------------------------------
_CLIPPED_ACTIONS = """() => {
  const wrap = document.querySelector('#view-tokens .table-wrap').getBoundingClientRect();
  const out = [];
  for (const b of document.querySelectorAll('#token-rows button, #token-rows a')) {
    const r = b.getBoundingClientRect();
    if (r.left < wrap.left - 0.5 || r.right > wrap.right + 0.5
        || r.right > document.documentElement.clientWidth + 0.5) {
      out.push(`${b.textContent.trim()} ${Math.round(r.left)}-${Math.round(r.right)}`
               + ` outside ${Math.round(wrap.left)}-${Math.round(wrap.right)}`);
    }
  }
  const box = document.querySelector('#view-tokens .table-wrap');
  if (box.scrollWidth > box.clientWidth + 1) {
    out.push(`table ${box.scrollWidth} > ${box.clientWidth}`);
  }
  return out;
}"""


@pytest.mark.parametrize("width", [1280, 1440, 1920, 390])
def test_no_action_in_the_token_list_is_clipped(
    browser: Browser, site: Served, width: int, tmp_path: Path
) -> None:
    long_grants = [{"connection_name": "carto_dw_production_warehouse",
                    "source": f"carto-demo-data.demo_tables.retail_stores_in_region_{i}"}
                   for i in range(3)]
    site.seed({"name": "storefront map for the public website of the retail chain",
               "allowed_apis": ["maps", "sql"], "grants": long_grants,
               "referers": ["https://*.storefront.example.com", "http://localhost:*",
                            "https://staging.storefront.example.com"]})
    site.seed({"name": "geocoder", "allowed_apis": ["lds"]})
    opened = _open_tab(browser, site, width=width, height=900)
    try:
        _sign_in(opened.page, site)
        expect(opened.page.locator("#token-rows tr")).to_have_count(2)
        _tmp_shot(opened.page, tmp_path, f"list-{width}")
        assert opened.page.evaluate(_CLIPPED_ACTIONS) == []
        assert opened.page.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        opened.context.close()


# --- edit, expiration presets, snippets -----------------------------------------------------
def test_edit_a_token_and_the_guard_follows_the_new_grants(tab: Tab, site: Served) -> None:
    token_id, secret = _issue(site)
    assert _until(site, secret, 200).status_code == 200
    page = tab.page
    _sign_in(page, site)
    page.goto(f"{site.url}/developers#token/{token_id}")
    page.get_by_role("link", name="Edit token").click()
    expect(page.get_by_role("heading", name="Edit token: lifecycle token")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value("lifecycle token")
    expect(page.get_by_label("SQL")).to_be_checked()
    expect(page.get_by_label("Source, grant 1")).to_have_value("stores")
    expect(page.get_by_label("Expiration (optional)")).to_be_hidden()  # set only at creation
    page.get_by_label("Name").fill("renamed token")
    page.get_by_label("Source, grant 1").fill("cities")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name="Token: renamed token")).to_be_visible()
    expect(page.locator("#detail-grants")).to_contain_text("cities")
    expect(page.locator("#status")).to_contain_text("saved")
    # The guard refuses the old grant and serves the new one (the update evicted its cache).
    assert _demo_query(site, secret).status_code == 403
    assert _demo_query(site, secret, "SELECT name FROM cities").status_code == 200
    # A bad edit shows the API's message beside the field, and changes nothing.
    page.get_by_role("link", name="Edit token").click()
    # The form is filled from the saved token before it is changed (no race under load).
    expect(page.get_by_label("Source, grant 1")).to_have_value("cities")
    page.get_by_label("Source, grant 1").fill("proj.*")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#create-form .grant-error").first).to_contain_text("two segments")
    assert tab.csp_errors == [] and tab.alerts == []


def test_expiration_presets_fill_the_date(tab: Tab, site: Served) -> None:
    page = tab.page
    _sign_in(page, site)
    page.get_by_role("link", name="Create token").first.click()
    page.get_by_role("button", name="In 90 days").click()
    value = page.get_by_label("Expiration (optional)").input_value()
    expected = page.evaluate("new Date(Date.now() + 90 * 86400000).toISOString().slice(0, 10)")
    assert value.startswith(expected)
    page.get_by_role("button", name="In 30 days").click()
    thirty = page.get_by_label("Expiration (optional)").input_value()
    assert thirty < value
    page.get_by_label("Name").fill("thirty days")
    page.get_by_label("LDS").check()
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token created: copy it now")).to_be_visible()
    page.get_by_role("button", name="I have copied it").click()
    row = page.locator("#token-rows tr", has_text="thirty days")
    expect(row.locator("td[data-label='Expires'] time")).to_have_count(1)
    page.get_by_role("link", name="Create token").first.click()
    page.get_by_role("button", name="In 30 days").click()
    page.get_by_role("button", name="Never").click()
    assert page.get_by_label("Expiration (optional)").input_value() == ""


def test_the_snippets_call_the_api_and_never_hold_the_secret(tab: Tab, site: Served) -> None:
    token_id, secret = _issue(site)
    page = tab.page
    _sign_in(page, site)
    page.goto(f"{site.url}/developers#token/{token_id}")
    curl = page.locator("#snippet-curl")
    expect(curl).to_contain_text('-H "Authorization: Bearer $TOKEN"')
    expect(curl).to_contain_text(f"{site.url}/v3/sql/demo/query?q=")
    expect(page.locator("#snippet-js")).to_contain_text('tableName: "stores"')
    expect(page.locator("#snippet-js")).to_contain_text("process.env.TOKEN")
    assert secret not in page.content()
    page.get_by_role("button", name="Copy curl").click()
    expect(page.locator("#snippet-copy-status")).to_have_text("Copied to the clipboard.")
    copied = page.evaluate("navigator.clipboard.readText()")
    # The copied command works as written, with TOKEN set.
    url = copied.split('"')[-2]
    answer = httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_the_token_history_shows_each_lifecycle_change(tab: Tab, site: Served) -> None:
    token_id, _ = _issue(site)
    page = tab.page
    _sign_in(page, site)
    page.goto(f"{site.url}/developers#token/{token_id}")
    history = page.locator("#history-entries li")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("created")
    page.get_by_role("button", name="Disable token").click()
    expect(history).to_have_count(2)
    page.get_by_role("button", name="Enable token").click()
    page.get_by_role("button", name="Rotate secret").click()
    expect(history).to_have_count(4)
    expect(history.nth(0)).to_contain_text("secret rotated")
    expect(history.nth(1)).to_contain_text("enabled")
    expect(history.nth(2)).to_contain_text(f"disabled by {site.client_id}")
    expect(history.nth(3)).to_contain_text("created by test")


def test_every_server_error_of_a_form_is_shown_at_once_beside_its_field(
    tab: Tab, site: Served
) -> None:
    page = tab.page
    _sign_in(page, site)
    page.goto(f"{site.url}/developers#new")
    page.get_by_label("Imports").check()
    page.get_by_label("SQL").check()
    page.get_by_label("Connection, grant 1").fill("demo")
    page.get_by_label("Source, grant 1").fill("stores")
    page.get_by_role("button", name="Add grant").click()
    page.get_by_label("Connection, grant 2").fill("demo")
    page.get_by_label("Source, grant 2").fill("proj.*")
    page.get_by_label("Referers (websites)").fill("https://ok.example.com\nnot a url")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#apis-error")).to_contain_text("imports")
    expect(page.locator("#grant-rows li").nth(1).locator(".grant-error")).to_contain_text(
        "two segments")
    expect(page.locator("#referers-error")).to_contain_text("Line 2: ")
    expect(page.locator("#apis input").first).to_be_focused()  # the first marked field
    assert page.locator("#create-form [aria-invalid='true']").count() >= 3
    assert site.server.call(lambda: site.store.list_tokens(limit=10)) == []


def test_the_configured_connections_win_over_those_tokens_use(tab: Tab, site: Served) -> None:
    # The site is configured with the demo connection only; a token naming another (made
    # behind the API's back) must not add it to what the form offers.
    site.seed({"name": "a", "allowed_apis": ["sql"],
               "grants": [{"connection_name": "carto_dw", "source": "p.d.t"}]})
    page = tab.page
    _sign_in(page, site)
    expect(page.locator("#token-rows tr")).to_have_count(1)
    options = page.locator("#known-connections option")
    expect(options).to_have_count(1)
    assert options.first.get_attribute("value") == "demo"


def test_limits_are_edited_on_the_page_and_errors_shown_beside_the_field(
    tab: Tab, site: Served
) -> None:
    site.seed({"name": "to limit", "allowed_apis": ["maps"]})
    page = tab.page
    _sign_in(page, site)
    page.locator("#token-rows a.name", has_text="to limit").click()
    page.get_by_role("link", name="Edit token").click()
    expect(page.get_by_label("Name")).to_have_value("to limit")
    limits = page.get_by_label("Limits (optional)")
    expect(limits).to_have_value("")
    limits.fill("{not json")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#limits-error")).to_contain_text("not JSON")
    limits.fill('{"rate": [{"requests": 100, "per": "fortnight"}]}')
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#limits-error")).to_contain_text("limits.rate[0].per")
    expect(limits).to_have_attribute("aria-invalid", "true")
    limits.fill('{"rate": [{"requests": 100, "per": "minute"}]}')
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#status")).to_contain_text("saved")
    expect(page.locator("#detail-fields")).to_contain_text("100/minute")
    page.get_by_role("link", name="Edit token").click()
    expect(page.get_by_label("Limits (optional)")).to_have_value(
        '{"rate":[{"requests":100,"per":"minute"}]}')
    page.get_by_label("Limits (optional)").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#status")).to_contain_text("saved")
    expect(page.locator("#detail-fields")).not_to_contain_text("100/minute")
    assert tab.csp_errors == [] and tab.alerts == []
