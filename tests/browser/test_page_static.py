"""The page's files as served by the api (no browser needed): index.html with the auth
mode and a Content-Security-Policy, ES modules with a JavaScript type, every relative
import resolvable, nothing from another origin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.page import STATIC
from jobs.settings import load_settings

IMPORT = re.compile(r"""^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]""", re.M)


@pytest.fixture(params=["token", "none"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path / "data", auth=request.param, janitor_interval_s=3600)
    with TestClient(create_app(settings)) as c:
        yield c


def test_index_carries_auth_mode_and_csp(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    auth = client.app.state.settings.auth  # type: ignore[attr-defined]
    assert f'<meta name="dptensor-auth" content="{auth}">' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert client.head("/").status_code == 200
    assert client.get("/index.html", follow_redirects=False).headers["location"] == "/"
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_static_files_and_module_graph(client: TestClient) -> None:
    r = client.get("/static/js/main.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache"
    assert client.get("/static/css/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/favicon.svg").headers["content-type"].startswith("image/svg+xml")
    assert client.get("/static/../main.py").status_code == 404
    modules = sorted(STATIC.rglob("*.js"))
    assert len(modules) >= 10
    for module in modules:
        for target in IMPORT.findall(module.read_text()):
            assert target.startswith("./") or target.startswith("../"), (module, target)
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"
        assert client.get("/static/" + module.relative_to(STATIC).as_posix()).status_code == 200


def test_nothing_from_other_origins() -> None:
    for path in STATIC.rglob("*"):
        if path.suffix in (".js", ".css", ".html", ".svg"):
            text = path.read_text()
            for url in re.findall(r"https?://[^\s'\"`)<]+", text):
                assert url.startswith("http://www.w3.org/"), f"{path.name} refers to {url}"
