"""aiohttp's private parts that tapad's HTTP edge uses.

- ``web.Server.connection_made`` (a hook the protocol calls, undocumented) and
  ``web.Server._connections``: to refuse a connection past ``--max-connections`` the moment
  it is made, before aiohttp reads from it.
- ``aiohttp.web_response.SERVER_SOFTWARE``: the ``Server:`` header every response gets
  unless it sets its own. aiohttp's names the Python and aiohttp versions, which tell an
  attacker what to try; replacing the default costs nothing per response, setting the
  header on each one would.
- ``aiohttp.http_exceptions.HttpProcessingError``: what aiohttp logs, with a traceback,
  for a request it could not parse; ``LineTooLong`` (its ``args[1]`` is the limit that was
  passed, the only sign of which limit it was) and the ``BadHttpMessage`` of too many headers.
- ``web.Server.__call__`` (the protocol factory), ``web.Server._loop`` and ``._kwargs``, and
  ``RequestHandler.handle_error``: aiohttp answers a request it could not parse itself, with
  its exception's text (Python's repr of the bytes) as the body; tapad gives its own answer.
- ``web.BaseSite._server``: the event loop's server behind a site, for its listening
  sockets: a stopping server takes the connections the kernel has already accepted for it
  before it closes them (closing a listening socket resets those).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import aiohttp.web_response
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_request import BaseRequest

LIBRARY = "aiohttp"
CONNECTIONS = "_connections"  # web.Server: the open connections (handler -> transport)
SERVER_SOFTWARE = "SERVER_SOFTWARE"  # aiohttp.web_response: the default Server header
SITE_SERVER = "_server"  # web.BaseSite: the event loop's server (asyncio's or uvloop's)
SERVER_LOOP = "_loop"  # web.Server: the event loop its connections run on
SERVER_KWARGS = "_kwargs"  # web.Server: the keyword arguments of each RequestHandler
TOO_MANY_HEADERS = "Too many headers received"  # the BadHttpMessage's text


class AdmittingServer(web.Server):
    """aiohttp's low-level server, asked before it takes each new connection."""

    def open_connections(self) -> int:
        return len(getattr(self, CONNECTIONS))

    def admit(self) -> bool:
        """Whether to take a new connection; one refused is closed at once."""
        return True

    def answer_client_error(self, exc: BaseException) -> web.StreamResponse | None:
        """The answer to a request aiohttp could not parse; None: aiohttp's own."""
        return None

    def __call__(self) -> web.RequestHandler:
        """A new connection's protocol: aiohttp's, with ``answer_client_error`` in it."""
        kwargs = getattr(self, SERVER_KWARGS)
        return AnsweringHandler(self, loop=getattr(self, SERVER_LOOP), **kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if not self.admit():
            handler.force_close()
            transport.close()
            return
        super().connection_made(handler, transport)


class AnsweringHandler(web.RequestHandler):
    """aiohttp's protocol for one connection; its server may replace an error's answer."""

    def __init__(self, manager: AdmittingServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.answer_client_error = manager.answer_client_error

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)  # logs it, as before
        own = self.answer_client_error(exc) if exc is not None else None
        if own is None:
            return response
        own.force_close()  # as aiohttp's: the rest of what the client sent is unreadable
        return own


def too_long(exc: BaseException) -> int | None:
    """The limit (bytes) a request line or header went past, or None for any other error."""
    if isinstance(exc, LineTooLong) and len(exc.args) > 1 and isinstance(exc.args[1], int):
        return exc.args[1]
    return None


def too_many_headers(exc: BaseException) -> bool:
    return isinstance(exc, BadHttpMessage) and exc.message == TOO_MANY_HEADERS


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
