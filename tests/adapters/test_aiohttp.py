"""The aiohttp private parts tapad relies on still behave as tapad expects.

A failure here names the installed aiohttp version: a release changed what
``tapad/adapters/aiohttp.py`` uses, and that module is the one to update. Each test runs a
real aiohttp server on loopback and talks to it over a socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import aiohttp.web_response
from aiohttp import web
from aiohttp.web_request import BaseRequest

from tapad.adapters import aiohttp as adapter

VERSION = f"{adapter.LIBRARY} {aiohttp.__version__}"
LOOPBACK = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def changed(what: str) -> str:
    return f"{VERSION} changed {what}: update tapad/adapters/aiohttp.py"


class OneConnection(adapter.AdmittingServer):
    def admit(self) -> bool:
        return self.open_connections() < 1


async def hello(request: BaseRequest) -> web.Response:
    return web.Response(text="hello")


@asynccontextmanager
async def serving(server: web.Server) -> AsyncIterator[int]:
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def ask(port: int, request: bytes = REQUEST) -> bytes:
    """Send one request and read what comes back until the first answer or the close."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        async with asyncio.timeout(30):
            return await reader.read(65536)
    finally:
        writer.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


def test_a_refused_connection_is_closed_before_any_request() -> None:
    async def main() -> None:
        server = OneConnection(hello)
        connections = getattr(server, adapter.CONNECTIONS, None)
        assert isinstance(connections, dict), changed(f"web.Server.{adapter.CONNECTIONS}")
        async with serving(server) as port:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(REQUEST)
            async with asyncio.timeout(30):
                first = await reader.read(65536)
            assert first.startswith(b"HTTP/1.1 200"), first
            assert server.open_connections() == 1, changed(f"web.Server.{adapter.CONNECTIONS}")
            second = await ask(port)  # the one connection is still open: refused
            writer.close()
        assert second == b"", changed("web.Server.connection_made (refused: answered)")

    run(main)


def test_every_answer_names_the_server_as_told() -> None:
    original = aiohttp.web_response.SERVER_SOFTWARE  # type: ignore[attr-defined]

    async def main() -> None:
        async with serving(web.Server(hello)) as port:
            answer = await ask(port)
        assert b"\r\nServer: probe-name\r\n" in answer, (
            changed(f"web_response.{adapter.SERVER_SOFTWARE} (the default Server header)")
            + f": {answer[:300]!r}"
        )

    adapter.name_server("probe-name")
    try:
        run(main)
    finally:
        adapter.name_server(original)


def test_a_malformed_request_is_logged_as_a_client_error() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    async def main() -> None:
        async with serving(web.Server(hello)) as port:
            answer = await ask(port, b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer

    logger = logging.getLogger("aiohttp.server")
    keep = Keep()
    filters = logger.filters[:]  # tapad's own filter (guard.py) drops these: not under test
    for each in filters:
        logger.removeFilter(each)
    logger.addHandler(keep)
    try:
        run(main)
    finally:
        logger.removeHandler(keep)
        for each in filters:
            logger.addFilter(each)
    errors = [r.exc_info[1] for r in records if r.exc_info]
    assert errors, changed("what it logs for a malformed request (nothing logged)")
    codes = [adapter.client_error_code(exc) for exc in errors]
    assert codes == [400], changed(f"the error it logs for a malformed request: {errors!r}")


def test_a_site_s_listening_socket_can_be_taken_from_it() -> None:
    async def main() -> None:
        runner = web.ServerRunner(web.Server(hello), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        try:
            (listening,) = adapter.listening_sockets(site)
            port = listening.getsockname()[1]
            assert port == runner.addresses[0][1], changed(f"web.BaseSite.{adapter.SITE_SERVER}")
            assert b"hello" in await ask(port)
            await site.stop()
            # The duplicate keeps the port listening: connections wait for an accept.
            _, writer = await asyncio.open_connection(LOOPBACK, port)
            accepted, _ = listening.accept()
            accepted.close()
            writer.close()
            listening.close()
            assert adapter.listening_sockets(site) == []  # stopped: nothing left to take
        finally:
            await runner.cleanup()

    run(main)


class OwnAnswers(adapter.AdmittingServer):
    """Answers a request line over its limit with 414 and anything else unparseable as is."""

    def answer_client_error(self, exc: BaseException) -> web.StreamResponse | None:
        self.seen.append((adapter.too_long(exc), adapter.too_many_headers(exc)))
        if adapter.too_long(exc) == 100:
            return web.Response(status=414, reason="URI Too Long", text="own words\n")
        return None

    seen: list[tuple[int | None, bool]]


def test_an_unparseable_request_gets_the_server_s_own_answer() -> None:
    async def main() -> None:
        server = OwnAnswers(hello, max_line_size=100, max_field_size=200, max_headers=4)
        server.seen = []
        async with serving(server) as port:
            long_url = await ask(port, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            long_header = await ask(port, b"GET / HTTP/1.1\r\nX-A: " + b"b" * 300 + b"\r\n\r\n")
            many = await ask(port, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 10 + b"\r\n")
            fine = await ask(port)
        assert long_url.split(b"\r\n", 1)[0].endswith(b" 414 URI Too Long"), changed(
            f"web.Server.__call__ or RequestHandler.handle_error: {long_url[:200]!r}"
        )
        assert long_url.endswith(b"\r\n\r\nown words\n")
        assert b" 400 " in long_header.split(b"\r\n", 1)[0] and b" 400 " in many[:20]
        assert fine.startswith(b"HTTP/1.1 200")
        assert server.seen == [(100, False), (200, False), (None, True)], changed(
            f"LineTooLong's limit or the too-many-headers error: {server.seen}"
        )

    run(main)
