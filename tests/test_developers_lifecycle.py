"""The Developers page's token lifecycle in Debian Chromium, end to end against the running
API and the guarded demo API: rotate (old secret works, grace ends, refused), disable
(refused) and enable (works). Screenshots go to a temporary directory, not the repository.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.test_developers_page import Served, Tab, _demo_query, _sign_in

# The page tests' fixtures (registered under their own names: site, tab, browser, ...).
from tests.test_developers_page import browser as _browser  # noqa: F401
from tests.test_developers_page import demo_dir as _demo_dir  # noqa: F401
from tests.test_developers_page import playwright as _playwright  # noqa: F401
from tests.test_developers_page import site as _site  # noqa: F401
from tests.test_developers_page import tab as _tab  # noqa: F401
from token_guard.core.secret import is_well_formed, secret_prefix

TOKEN = {"name": "lifecycle token", "allowed_apis": ["sql"], "referers": [],
         "grants": [{"connection_name": "demo", "source": "stores"}]}


def _shot(page: Page, shots: Path, name: str) -> None:
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
        issued = await site.store.create_token(TOKEN, actor="test")
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
    _shot(page, shots, "01-detail")

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
    _shot(page, shots, "02-rotated")
    # Both secrets work during the grace period.
    assert _until(site, new, 200).status_code == 200
    assert _until(site, old, 200).status_code == 200

    page.get_by_role("button", name="End grace period now").click()
    expect(page.locator("#status")).to_contain_text("grace period")
    refused = _until(site, old, 401)
    assert refused.status_code == 401 and refused.json()["code"] == "token_rotated"
    assert _until(site, new, 200).status_code == 200
    _shot(page, shots, "03-grace-ended")

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
    _shot(page, shots, "04-disabled")

    page.get_by_role("link", name="All tokens").click()
    row = page.locator(f"#token-rows tr[data-token-id='{token_id}']")
    expect(row).to_contain_text("disabled")
    expect(row.get_by_role("button", name="Revoke lifecycle token")).to_be_visible()
    row.get_by_role("link", name="lifecycle token").click()

    page.get_by_role("button", name="Enable token").click()
    expect(page.locator("#detail-fields")).to_contain_text("active")
    assert _until(site, secret, 200).status_code == 200
    _shot(page, shots, "05-enabled")
    assert tab.csp_errors == [] and tab.alerts == []
