"""Defences at the HTTP edge: bounded connections, idle timeout, header limits, quiet 400s.

Memory per connection is small (a few KB with a partly sent request; measured in
docs/performance.md), but an attacker can open many; ``max_connections`` makes the bound
explicit instead of leaving it to the file-descriptor limit: past it a new connection is
closed at once. A connection that sends no complete request (slowloris) or sits idle is
closed after ``IDLE_TIMEOUT``, longer than nginx's upstream keep-alive (deploy/nginx.conf)
so nginx, not tapad, closes its idle upstream connections. Request lines and header fields
are capped (a URL past the cap gets a 414, a header past it or too many headers a 431, each
one line in tapad's words), pipelined requests are queued at most 32 deep and bodies are
read in bounded chunks by aiohttp itself and inflated (gzip) by tapad, with a cap.

aiohttp logs every malformed request with a traceback at ERROR; a client can send
those at will, so they are counted and dropped from the log instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tapad.adapters.aiohttp import (
    AdmittingServer,
    client_error_code,
    too_long,
    too_many_headers,
)

IDLE_TIMEOUT = 75.0  # seconds without a complete request before a connection is closed
MAX_LINE_SIZE = 8190  # request line (method, URL, version), bytes
# One header, name and value, bytes. One more than MAX_LINE_SIZE on purpose: aiohttp says
# only which limit a line went past, so the two must differ to tell a 414 from a 431.
MAX_FIELD_SIZE = MAX_LINE_SIZE + 1
MAX_HEADERS = 128  # aiohttp's default, named here for the 431's line
URI_TOO_LONG = f"request line too long: at most {MAX_LINE_SIZE} bytes of method, URL and version\n"
HEADERS_TOO_LARGE = (
    f"request headers too large: at most {MAX_HEADERS} headers of {MAX_FIELD_SIZE} bytes each\n"
)


class BoundedServer(AdmittingServer):
    """aiohttp's low-level server with a cap on open connections and tighter timeouts."""

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int,
        on_refuse: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_TIMEOUT)
        kwargs.setdefault("max_line_size", MAX_LINE_SIZE)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        # Request bodies are inflated by tapad itself, with a cap on the output
        # (tapad/server/batch.py): aiohttp's own decompression bounds only each step.
        kwargs.setdefault("auto_decompress", False)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.on_refuse = on_refuse

    def answer_client_error(self, exc: BaseException) -> web.StreamResponse | None:
        """414 or 431 in one line; aiohttp's body would be Python's repr of the bytes."""
        limit = too_long(exc)
        if limit == MAX_LINE_SIZE:
            return web.Response(
                status=414, reason="URI Too Long", text=URI_TOO_LONG, content_type="text/plain"
            )
        if limit == MAX_FIELD_SIZE or too_many_headers(exc):
            return web.Response(status=431, text=HEADERS_TOO_LARGE, content_type="text/plain")
        return None

    def admit(self) -> bool:
        if self.open_connections() < self.max_connections:
            return True
        if self.on_refuse is not None:
            self.on_refuse()
        return False


class QuietClientErrors(logging.Filter):
    """Drop aiohttp's traceback for a request that was malformed: the client's fault."""

    def __init__(self, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.on_drop = on_drop

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and client_error_code(record.exc_info[1]) is not None:
            if self.on_drop is not None:
                self.on_drop()
            return False
        return True


def quiet_client_errors(on_drop: Callable[[], None] | None = None) -> QuietClientErrors:
    """Install the filter on aiohttp's server logger (once per process); return it."""
    logger = logging.getLogger("aiohttp.server")
    for existing in logger.filters:
        if isinstance(existing, QuietClientErrors):
            existing.on_drop = on_drop
            return existing
    quiet = QuietClientErrors(on_drop)
    logger.addFilter(quiet)
    return quiet
