"""The browser page: ``GET /`` (index.html) and ``/static/…`` (ES modules, CSS) from
``app/static``. Plain files, no build step; nothing is loaded from other origins (the
Content-Security-Policy says so, and a violation shows up as a console error in the
browser tests). Not part of the OpenAPI description.

index.html carries the auth mode in ``<meta name="dptensor-auth">`` so the page knows
without a request whether to ask for a token (a 401 probe would log a browser error)."""

from __future__ import annotations

import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parents[1] / "static"
AUTH_PLACEHOLDER = "__AUTH_MODE__"

# Everything from this origin; canvases export PNGs and downloads are saved through blob:
# URLs (files are fetched with the bearer token, which a plain link cannot send).
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer"}

mimetypes.add_type("text/javascript", ".js")  # some systems map .js elsewhere; modules need this type
mimetypes.add_type("image/svg+xml", ".svg")


@lru_cache(maxsize=1)
def _index_template() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


class _Static(StaticFiles):
    """StaticFiles that asks browsers to revalidate (ETag) so a new version is picked up."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"cache-control", b"no-cache"),
                                      (b"x-content-type-options", b"nosniff")]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def install_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files at ``/static``."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        auth = request.app.state.settings.auth
        return HTMLResponse(_index_template().replace(AUTH_PLACEHOLDER, auth), headers=PAGE_HEADERS)

    @app.get("/index.html", include_in_schema=False)
    def index_html() -> RedirectResponse:
        return RedirectResponse("/")

    app.mount("/static", _Static(directory=STATIC), name="static")
