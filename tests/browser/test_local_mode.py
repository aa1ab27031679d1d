"""``dptensor serve --no-auth`` (loopback only): the page needs no token and says so."""

from __future__ import annotations

import pytest
from pagekit import Page

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_no_token_needed_without_auth(local_browser: Page) -> None:
    from playwright.sync_api import expect

    page = local_browser.page
    # api only (--no-worker): /v1/health/ready answers 503, which the status shows
    local_browser.expect_http(503)
    local_browser.goto()
    expect(page.locator("#signed-in-user")).to_have_text("Local mode · no authentication")
    expect(page.locator("#token-input")).to_have_count(0)
    expect(page.locator("#jobs-table")).to_be_visible()
    expect(page.locator(".table-foot")).to_contain_text("No jobs yet")
    expect(page.locator("#server-status")).to_have_text("no worker running")
    assert page.evaluate("localStorage.getItem('dptensor.token')") is None
    page.click("a[data-nav='models']")
    expect(page.locator("main")).to_contain_text("No models yet")
    local_browser.check_a11y()
