"""CORS: which pages on other origins may read tapad's answers (``--cors-origins``).

A browser sends a pixel (``<img>``) and a beacon (``text/plain``) to any origin and records
them whatever the answer says: CORS only decides whether the page may *read* an answer, and
whether the browser sends a request that needs a preflight (a JSON body, an
``Authorization`` header). So an origin left out still gets its pixels and beacons counted;
its page just cannot see what tapad answered.

Off by default, and then nothing here runs: the handler holds ``cors = None`` and checks that
one attribute per request. On, ``allow`` adds two headers to every answer for an allowed
``Origin`` (the allowed origin echoed, never ``*``, with ``Vary: Origin`` so that a cache
keeps one answer per origin), and ``preflight`` answers ``OPTIONS``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tapad.server.dashboard import DASHBOARD_FILES, TAPAD_JS

# The methods of each endpoint, for Access-Control-Allow-Methods (a new endpoint adds a line).
METHODS = {
    "/analytics": "GET, POST",
    "/analytics/batch": "POST",
    "/analytics/pixel.gif": "GET",
    "/analytics/hours": "GET, HEAD",
    "/analytics/uniques": "GET, HEAD",
    "/healthz": "GET, HEAD",
    "/metrics": "GET, HEAD",
    "/openapi.json": "GET, HEAD",
    TAPAD_JS: "GET, HEAD",
    **dict.fromkeys(DASHBOARD_FILES, "GET, HEAD"),
}
ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization"
# Headers of an answer a page may read besides the CORS-safelisted ones.
EXPOSE_HEADERS = "Tapad-Duplicate, Retry-After"
MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer
TEXT = "text/plain"


class BadOrigins(ValueError):
    """``--cors-origins`` cannot be used; ``str()`` is the one line the user sees."""


def parse_origins(text: str) -> frozenset[str] | None:
    """The allowed origins of ``--cors-origins``; None for ``*`` (any origin).

    An origin is what a browser sends in ``Origin``: ``scheme://host[:port]``, lower case,
    no path. A trailing ``/`` is forgiven; a path, a query or a wildcard inside a name is
    refused, since no browser would ever send it and the page would silently be left out.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise BadOrigins("--cors-origins: give origins (https://example.com,...) or *")
    if "*" in names:
        if len(names) > 1:
            raise BadOrigins("--cors-origins: * allows every origin; give it alone")
        return None
    origins = set()
    for name in names:
        origin = name.lower().removesuffix("/")
        scheme, sep, host = origin.partition("://")
        if (
            not sep
            or scheme not in ("http", "https")
            or not host
            or any(ch in host for ch in "/?#*@ ")
        ):
            raise BadOrigins(
                f"--cors-origins: {name[:100]!r} is not an origin "
                "(scheme://host[:port], e.g. https://example.com)"
            )
        origins.add(origin)
    return frozenset(origins)


class Cors:
    """The CORS rules of one server: ``allow`` on every answer, ``preflight`` for OPTIONS."""

    def __init__(self, origins: str) -> None:
        self.origins = parse_origins(origins)  # None: any origin

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.origins is None or origin in self.origins)

    def allow(self, request: BaseRequest, response: web.StreamResponse) -> None:
        """Let the page of an allowed ``Origin`` read ``response`` (any status)."""
        origin = request.headers.get("Origin")
        if origin is None or not self.allowed(origin):
            return
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        vary = headers.get("Vary")
        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

    def preflight(self, request: BaseRequest, path: str) -> web.Response | None:
        """The answer to ``OPTIONS path``; None when it is no preflight (no ``Origin``) or
        ``path`` is no endpoint, for the caller to answer as without CORS (405, 404)."""
        origin = request.headers.get("Origin")
        methods = METHODS.get(path)
        if origin is None or methods is None:
            return None
        if not self.allowed(origin):
            return web.Response(
                status=403,
                text=f"origin not allowed: {origin[:100]} (see tapad serve --cors-origins)\n",
                content_type=TEXT,
            )
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
            },
        )
