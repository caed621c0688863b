"""``GET /`` (the dashboard) and ``GET /tapad.js``: static files shipped inside the package.

There is no build step and nothing is fetched from elsewhere: the page, its script and
uPlot (from the npm registry, its LICENSE kept beside it in ``static/``) are package
data, read once and answered from memory. The page draws what ``GET /analytics`` and
``GET /analytics/hours`` answer, so it shows nothing the API does not. The
Content-Security-Policy holds the browser to that: the page may load and ask only
tapad itself.

``/tapad.js`` is the script other sites' pages load to send events (docs/clients.md).
It is not part of the dashboard: it stays open whatever tokens are set, and browsers may
keep it an hour (it changes only with a new tapad).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from aiohttp import web

STATIC = "/static/"
DASHBOARD_FILES = {
    "/": "index.html",
    f"{STATIC}dashboard.js": "dashboard.js",
    f"{STATIC}dashboard.css": "dashboard.css",
    f"{STATIC}uPlot.iife.min.js": "uPlot.iife.min.js",
    f"{STATIC}uPlot.min.css": "uPlot.min.css",
}
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidate: a new tapad may ship a new page
}


TAPAD_JS = "/tapad.js"
SCRIPT_HEADERS = {
    "Content-Type": "application/javascript; charset=utf-8",
    "Cache-Control": "public, max-age=3600",
    "X-Content-Type-Options": "nosniff",
}


@cache
def _body(name: str) -> bytes:
    return (files("tapad.server") / "static" / name).read_bytes()


def dashboard_file(path: str) -> web.Response:
    """One of ``DASHBOARD_FILES`` (GET or HEAD: the caller answers other methods)."""
    name = DASHBOARD_FILES[path]
    content_type = CONTENT_TYPES[name.rpartition(".")[2]]
    return web.Response(body=_body(name), headers={**HEADERS, "Content-Type": content_type})


def tapad_js() -> web.Response:
    """``GET /tapad.js`` (or HEAD: the caller answers other methods)."""
    return web.Response(body=_body("tapad.js"), headers=SCRIPT_HEADERS)
