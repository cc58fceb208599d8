"""A real browser (headless Debian Chromium driven by Playwright) uses the demo's browser token.

The token allows ``http://localhost:*``. The same page, served by a tiny static server, is
opened from ``http://localhost:<port1>`` (allowed: it gets rows) and from
``http://127.0.0.1:<port2>`` (another origin: the guard refuses it, and thanks to CORS outside
the guard the page can read the JSON error). The ``Authorization`` header makes every call a
non-simple request, so the browser sends a CORS preflight first; the demo's access log shows
it passed. Screenshots go to ``test-output/browser/``.

Chromium is the system's ``/usr/bin/chromium`` (Playwright's own browsers are never
downloaded); without it the test skips by hand and fails under CI=true.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.demo_process import DemoProcess, demo_process
from tests.services import service_missing
from token_guard.demo.tokens import SECRETS_FILE, read_secrets

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"
QUERY = "SELECT name, country, population FROM cities ORDER BY population DESC LIMIT 5"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>token_guard demo in a browser</title>
<style>
 body { font: 15px system-ui, sans-serif; margin: 2em; }
 pre { background: #f4f4f4; padding: 1em; white-space: pre-wrap; }
 table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .3em .6em; }
</style></head>
<body>
<h1>Biggest cities, from the token_guard demo API</h1>
<p>This page is served from <b id="origin"></b> and calls the API with a token restricted to
<code>http://localhost:*</code>.</p>
<pre id="result">loading...</pre>
<table id="rows"></table>
<script>
const CONFIG = __CONFIG__;
document.getElementById("origin").textContent = location.origin;
async function run() {
  const url = CONFIG.api + "/v3/sql/demo/query?q=" + encodeURIComponent(CONFIG.query);
  const out = document.getElementById("result");
  try {
    const response = await fetch(url, {headers: {Authorization: "Bearer " + CONFIG.token}});
    const body = await response.json();
    if (response.ok) {
      out.textContent = "status: " + response.status + "\\nrows: " + body.rows.length;
      const table = document.getElementById("rows");
      table.innerHTML = "<tr><th>name</th><th>country</th><th>population</th></tr>";
      for (const row of body.rows) {
        const tr = table.insertRow();
        for (const key of ["name", "country", "population"]) {
          tr.insertCell().textContent = row[key];
        }
      }
    } else {
      out.textContent = "status: " + response.status + "\\ncode: " + body.code +
        "\\nerror: " + body.error + "\\nhint: " + body.hint;
    }
  } catch (error) {
    out.textContent = "fetch failed: " + error;
  }
  document.body.dataset.done = "yes";
}
run();
</script>
</body></html>
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(root: Path) -> Iterator[int]:
    """Serve ``root`` over HTTP on a free loopback port until the block ends; yield the port."""
    handler = partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless system Chromium under Playwright."""
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        service_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """The demo command as a user starts it."""
    root = tmp_path_factory.mktemp("demo-browser")
    with demo_process(root / "data", root / "logs") as running:
        yield running


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo: DemoProcess) -> Path:
    """The page's directory, with the demo's URL and browser token written into the page."""
    secrets = read_secrets(demo.data_dir / SECRETS_FILE)
    assert secrets is not None
    root = tmp_path_factory.mktemp("site")
    config = {"api": demo.url, "token": secrets.tokens["browser"].token, "query": QUERY}
    (root / "index.html").write_text(PAGE.replace("__CONFIG__", json.dumps(config)),
                                     encoding="utf-8")
    return root


def _open(browser: Browser, url: str, screenshot: str) -> tuple[str, list[str]]:
    """Open ``url``, wait for the page's fetch to finish; its result text and failed requests."""
    page: Page = browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(f"{request.method} {request.url}"))
    try:
        page.goto(url)
        page.wait_for_selector("body[data-done=yes]", timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / screenshot), full_page=True)
        return page.inner_text("#result"), failed
    finally:
        page.close()


def _preflights(demo: DemoProcess) -> list[str]:
    # uvicorn's access log goes to stdout, after the demo's own text.
    return re.findall(r'"OPTIONS /v3/sql/demo/query\?\S* HTTP/1\.1" 200', demo.stdout)


def test_a_page_on_an_allowed_origin_gets_data(browser: Browser, demo: DemoProcess,
                                               site: Path) -> None:
    before = len(_preflights(demo))
    with static_site(site) as port:
        text, failed = _open(browser, f"http://localhost:{port}/", "allowed.png")
    assert failed == []
    assert text.splitlines() == ["status: 200", "rows: 5"], text
    # The Authorization header made the GET non-simple: a preflight came first, and passed.
    assert len(_preflights(demo)) > before, demo.stdout


def test_a_page_on_another_origin_is_refused_and_can_read_why(browser: Browser,
                                                               demo: DemoProcess,
                                                               site: Path) -> None:
    before = len(_preflights(demo))
    with static_site(site) as port:
        text, failed = _open(browser, f"http://127.0.0.1:{port}/", "refused.png")
    assert failed == []
    lines = text.splitlines()
    assert lines[:2] == ["status: 403", "code: origin_not_allowed"], text
    assert lines[2].startswith(f"error: The website http://127.0.0.1:{port} is not in this "
                               "token's referers"), text
    assert len(_preflights(demo)) > before, demo.stdout
