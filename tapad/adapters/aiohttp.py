"""aiohttp's private parts that tapad's HTTP edge uses.

- ``web.Server.connection_made`` (a hook the protocol calls, undocumented) and
  ``web.Server._connections``: to refuse a connection past ``--max-connections`` the moment
  it is made, before aiohttp reads from it.
- ``aiohttp.web_response.SERVER_SOFTWARE``: the ``Server:`` header every response gets
  unless it sets its own. aiohttp's names the Python and aiohttp versions, which tell an
  attacker what to try; replacing the default costs nothing per response, setting the
  header on each one would.
- ``aiohttp.http_exceptions.HttpProcessingError``: what aiohttp logs, with a traceback,
  for a request it could not parse.
- ``web.BaseSite._server``: the event loop's server behind a site, for its listening
  sockets: a stopping server takes the connections the kernel has already accepted for it
  before it closes them (closing a listening socket resets those).
"""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp.web_response
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

LIBRARY = "aiohttp"
CONNECTIONS = "_connections"  # web.Server: the open connections (handler -> transport)
SERVER_SOFTWARE = "SERVER_SOFTWARE"  # aiohttp.web_response: the default Server header
SITE_SERVER = "_server"  # web.BaseSite: the event loop's server (asyncio's or uvloop's)


class AdmittingServer(web.Server):
    """aiohttp's low-level server, asked before it takes each new connection."""

    def open_connections(self) -> int:
        return len(getattr(self, CONNECTIONS))

    def admit(self) -> bool:
        """Whether to take a new connection; one refused is closed at once."""
        return True

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if not self.admit():
            handler.force_close()
            transport.close()
            return
        super().connection_made(handler, transport)


def name_server(name: str) -> None:
    """Answer ``Server: name`` instead of the Python and aiohttp versions (whole process)."""
    setattr(aiohttp.web_response, SERVER_SOFTWARE, name)


def client_error_code(exc: BaseException | None) -> int | None:
    """The 4xx aiohttp answered for a request it could not parse, else None."""
    if isinstance(exc, HttpProcessingError):
        code = exc.code or 400
        return code if code < 500 else None
    return None


def listening_sockets(site: web.BaseSite) -> list[socket.socket]:
    """Non-blocking duplicates of ``site``'s listening sockets (none once it has stopped).

    A duplicate keeps its socket listening until it is closed too: the caller closes them.
    """
    server = getattr(site, SITE_SERVER, None)
    if server is None or not server.sockets:
        return []
    dups = []
    for listening in server.sockets:
        dup = socket.socket(fileno=os.dup(listening.fileno()))
        dup.setblocking(False)
        dups.append(dup)
    return dups
