"""Browser tests: Debian's chromium (headless) driven by Playwright's Python client, against
a real ``dptensor serve`` (embedded broker, real worker processes, token auth).

Skipped with the reason when chromium or Playwright is missing (``scripts/test``
installs chromium). Screenshots go to ``$DPTENSOR_SCREENSHOTS`` (default
``test-artifacts/screenshots/`` in the repository, git-ignored).

Every page collects console errors, page errors and requests to other origins; a test
fails if any is left that it did not expect (``Page.expect_http(422)`` allows the
browser's "Failed to load resource … 422" line for a request the test makes fail on
purpose).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tarfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # kit.py, shared test helpers

from kit import WATER, Api, create_token, dptensor, free_port, service_env, stop, wait_for
from pagekit import ConsoleWatch, Page, Service

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DPTENSOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen


def _why_no_browser() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"chromium not installed at {CHROMIUM} (apt-get install chromium; scripts/test does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_no_browser()
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            if reason and "browser" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("DPTENSOR_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def water_page_tgz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dipole example folders as they are named in DeePMD-kit's example input."""
    path = tmp_path_factory.mktemp("archive") / "water_dipole.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("training_data_reformat", "validation_data_reformat"):
            tar.add(WATER / "dipole" / name, arcname=name)
    return path


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``dptensor serve`` with token auth: api + both worker processes, embedded broker."""
    tmp = tmp_path_factory.mktemp("service")
    data = tmp / "data"
    port = free_port()
    env = service_env(data, port=port)
    token = create_token(env, "alice")
    api = Api(f"http://127.0.0.1:{port}", token)
    proc = dptensor("serve", env=env, log=tmp / "serve.log")
    try:
        wait_for("the service and both workers",
                 lambda: (r if (r := api.ready()) and not r["queues_without_worker"] else None), timeout=120)
        yield Service(f"http://127.0.0.1:{port}", token, data, api)
    finally:
        stop(proc, signal.SIGINT)


@pytest.fixture(scope="session")
def browser_engine() -> Iterator[Any]:
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@contextlib.contextmanager
def open_page(engine: Any, base_url: str, screenshots: Path, profile: Path,
              request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh Chromium profile (its own user-data dir) with one page watched for errors;
    fails the test on any error left at the end; a screenshot when the test failed."""
    context = engine.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT,
        accept_downloads=True, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    watch = ConsoleWatch(base_url)
    page = context.pages[0] if context.pages else context.new_page()
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_pageerror)
    context.on("request", watch.on_request)
    try:
        yield Page(page, watch, base_url, screenshots)
        page.wait_for_timeout(300)  # late console messages of the last action
        assert watch.errors == [], "errors in the browser:\n" + "\n".join(watch.errors)
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            with contextlib.suppress(Exception):  # the page may be gone; the failure is what matters
                page.screenshot(path=str(screenshots / f"FAILED-{request.node.name}.png"), full_page=True)
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(browser_engine: Any, service: Service, screenshots: Path, tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page on the (token-auth) service, not signed in; ``signed_in`` has the token."""
    with open_page(browser_engine, service.base_url, screenshots, tmp_path / "profile", request) as page:
        yield page


@pytest.fixture
def local_browser(browser_engine: Any, screenshots: Path, tmp_path: Path,
                  request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page on ``dptensor serve --no-auth --no-worker`` (api only, loopback, no tokens)."""
    data = tmp_path / "data"
    port = free_port()
    env = service_env(data, port=port)
    base_url = f"http://127.0.0.1:{port}"
    api = Api(base_url)
    proc = dptensor("serve", "--no-auth", "--no-worker", env=env, log=tmp_path / "serve.log")
    try:
        wait_for("the api", lambda: _answers(api), timeout=60)
        with open_page(browser_engine, base_url, screenshots, tmp_path / "profile", request) as page:
            yield page
    finally:
        stop(proc, signal.SIGINT)


def _answers(api: Api) -> bool:
    try:
        return api.http.get("/v1/health/live").status_code == 200
    except Exception:  # not listening yet
        return False


@pytest.fixture
def signed_in(browser: Page, service: Service) -> Page:
    """The page with alice's token in localStorage (as after signing in once)."""
    browser.page.add_init_script(f"localStorage.setItem('dptensor.token', {service.token!r});")
    return browser


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
