"""Helpers of the browser tests (imported by conftest.py and the test modules): the
service handle, the page wrapper and the console watch."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit import Api

# every visible control has an accessible name: a <label>, aria-label(ledby), or button text
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, [role=button], canvas[tabindex]')]
  .filter(el => el.getClientRects().length > 0 && el.type !== 'hidden')
  .filter(el => !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
                  || (el.labels && el.labels.length)
                  || ((el.tagName === 'BUTTON' || el.getAttribute('role') === 'button') && el.textContent.trim())))
  .map(el => el.outerHTML.slice(0, 160))"""


@dataclass
class Service:
    base_url: str
    token: str
    data_dir: Path
    api: Api
    state: dict[str, Any] = field(default_factory=dict)  # what earlier tests made (dataset, model…)


class ConsoleWatch:
    """Console errors, uncaught exceptions and off-origin requests of one page."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.errors: list[str] = []
        self.allowed_status: set[int] = set()

    def on_console(self, msg: Any) -> None:
        if msg.type in ("error", "assert"):
            text = msg.text
            m = re.search(r"status of (\d{3})", text)
            if m and int(m.group(1)) in self.allowed_status:
                return
            self.errors.append(f"console.{msg.type}: {text} ({msg.location.get('url', '')})")

    def on_pageerror(self, exc: Any) -> None:
        self.errors.append(f"pageerror: {exc}")

    def on_request(self, request: Any) -> None:
        url = request.url
        if not url.startswith((self.origin, "data:", "blob:")):
            self.errors.append(f"request to another origin: {url}")


class Page:
    """A Playwright page plus its ConsoleWatch and helpers."""

    def __init__(self, page: Any, watch: ConsoleWatch, base_url: str, screenshots: Path) -> None:
        self.page, self.watch, self.base_url, self.screenshots = page, watch, base_url, screenshots

    def goto(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/{route}")

    def expect_http(self, *statuses: int) -> None:
        """Allow the browser's own error line for requests answered with these statuses."""
        self.watch.allowed_status.update(statuses)

    def check_a11y(self) -> None:
        """Basic accessibility of the current view: named controls, one h1, a main landmark."""
        assert self.page.evaluate(UNLABELLED) == []
        assert self.page.locator("main h1").count() == 1
        assert self.page.locator("main#main").count() == 1

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        path = self.screenshots / f"{name}.png"
        if full_page:  # the sticky top bar would be drawn where the page is scrolled to
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def stub_spectrum_job(job_id: str, *, name: str, kind: str, frames: int, dt_fs: float = 0.5) -> dict[str, Any]:
    """A succeeded spectrum job as GET /v1/jobs/{id} answers it (for page.route stubs)."""
    t = "2026-01-01T10:00:00"
    return {"id": job_id, "kind": "spectrum", "status": "succeeded", "name": name, "owner": "alice",
            "queue": "batch", "created_at": t, "started_at": t, "finished_at": "2026-01-01T10:00:42",
            "progress": {"step": frames, "total": frames, "unit": "frames", "rate": 50.0, "eta_s": 0.0},
            "lcurve": None, "attempt": 1, "max_attempts": 3, "cancel_requested": False, "model_id": "mdl-stub",
            "result": {}, "error": None, "warnings": [],
            "inputs": {"model_id": "mdl-stub", "kind": kind, "dt_fs": dt_fs}}


def route_job(page: Any, job: dict[str, Any], answers: dict[str, dict[str, Any]]) -> None:
    """Answer /v1/jobs/{id} and its sub-paths in the browser (page.route): the job itself,
    ``answers[sub-path]`` (keyword arguments of route.fulfill, e.g. {"json": ...}), an empty
    file list and a one-line log unless given; anything else 404 (so a test sees an
    unexpected request fail)."""
    job_id = job["id"]
    known = {"files": {"json": []}, "logs": {"body": "succeeded\n", "content_type": "text/plain"}, **answers}

    def answer(route: Any) -> None:
        path = route.request.url.split("/v1/jobs/", 1)[1].split("?")[0]
        sub = path[len(job_id) + 1:] if path.startswith(job_id + "/") else None
        if path == job_id:
            route.fulfill(json=job)
        elif sub in known:
            route.fulfill(**known[sub])
        else:
            route.fulfill(status=404, json={"detail": "not stubbed", "problems": []})

    page.route(re.compile(rf".*/v1/jobs/{re.escape(job_id)}(/.*)?(\?.*)?$"), answer)
