"""A lean HTTP/1.1 client for the load generator: one keep-alive connection per worker.

Profiled against the yardstick (py-spy), ``tapad loadgen post`` on aiohttp's client
spent most of its CPU in the client itself (docs/performance.md, "Figures behind the
code"): request and response objects, header multidicts, the connector's pool, a stream
reader per answer. The tool was measuring itself more than the server. A loadgen worker sends
one request at a time on a connection of its own, so it needs little: write a
request line and two headers, then read the status line, the few headers it uses
(Content-Length, Transfer-Encoding, Connection, Retry-After, Tapad-Duplicate) and the body. That is
this module, on an ``asyncio.Protocol`` so an answer is parsed in ``data_received``
and handed to the waiting worker directly.

It speaks plain HTTP/1.1 (and TLS for https:// URLs): a Content-Length body, a
chunked one, or one that ends with the connection. Anything else is an
``HttpError``, counted as a bad response; a broken connection is an ``OSError``, and
``NotSent`` when the request never left (the connection could not be made), which the
caller may retry without any doubt about what the server did.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from yarl import URL

MAX_HEAD = 64 * 1024  # bytes of status line and headers we wait for before giving up


class HttpError(Exception):
    """The server's answer is not HTTP this client can read."""


class NotSent(ConnectionError):
    """The connection could not be made: the request was never sent."""


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None = None
    duplicate: bool = False  # Tapad-Duplicate: 1, a single POST whose id was known


class Endpoint:
    """Where requests go and the bytes every request starts and ends with."""

    def __init__(self, base: str, token: str | None = None) -> None:
        url = URL(base)
        self.host = url.raw_host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        if url.explicit_port is not None:
            host += f":{url.port}"
        self.path = url.raw_path or "/"
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._tail = f" HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tapad-loadgen\r\n{auth}".encode()

    def request_bytes(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> bytes:
        """``target`` is the path and query, already percent-encoded."""
        head = method.encode() + b" " + target.encode() + self._tail
        if body is not None:
            return (
                head
                + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        length = b"Content-Length: 0\r\n\r\n" if method == "POST" else b"\r\n"
        return head + length


class Connection:
    """A worker's connection: one request at a time, reconnecting when it has to."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._wire: _Wire | None = None

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> Answer:
        wire = self._wire
        if wire is None or wire.transport is None or wire.transport.is_closing():
            try:
                wire = self._wire = await self._connect()
            except OSError as exc:
                raise NotSent(exc.errno, exc.strerror or str(exc)) from exc
        try:
            answer = await wire.send(
                self.endpoint.request_bytes(method, target, body, content_type)
            )
        except BaseException:
            self.close()  # cancelled (timed out) or broken: the stream's state is unknown
            raise
        if wire.close_after:
            self.close()
        return answer

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        end = self.endpoint
        server_hostname = end.host if end.ssl is not None else None
        _, wire = await loop.create_connection(
            _Wire, end.host, end.port, ssl=end.ssl, server_hostname=server_hostname
        )
        return wire

    def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
            self._wire = None


class _Wire(asyncio.Protocol):
    """One TCP (or TLS) connection: writes a request, parses its answer as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.close_after = False
        self._buf = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[Answer] | None = None

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._answer_if_complete()

    def eof_received(self) -> bool:
        self._eof = True
        self._answer_if_complete()
        self._fail(ConnectionResetError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionResetError("the connection was closed"))

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _answer_if_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._parse()
        except HttpError as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            waiter.set_result(answer)

    def _parse(self) -> Answer | None:
        """The answer at the head of the buffer, removed from it; None if not all there."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise HttpError("status line and headers too long")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        length: int | None = None
        chunked = False
        close = version == "HTTP/1.0"
        retry_after = None
        duplicate = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                value = value.strip()
                if not value.isdigit():
                    raise HttpError(f"bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                token = value.strip().lower()
                close = token == "close" or (close and token != "keep-alive")
            elif name == "retry-after":
                retry_after = value.strip()
            elif name == "tapad-duplicate":
                duplicate = value.strip() == "1"
        start = end + 4
        if status < 200:  # an interim answer (100 Continue): the real one follows
            del buf[:start]
            return self._parse()
        if status in (204, 304):
            length = 0
        if chunked:
            parsed = self._chunked(start)
            if parsed is None:
                return None
            body, used = parsed
        elif length is not None:
            if len(buf) < start + length:
                return None
            body, used = bytes(buf[start : start + length]), start + length
        else:  # the body ends with the connection
            if not self._eof:
                return None
            body, used, close = bytes(buf[start:]), len(buf), True
        del buf[:used]
        self.close_after = close
        return Answer(status, body, retry_after, duplicate)

    def _chunked(self, pos: int) -> tuple[bytes, int] | None:
        """A chunked body starting at ``pos``: (body, bytes used), or None if incomplete."""
        buf = self._buf
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(f"bad chunk size: {size_text[:20]!r}") from None
            pos = eol + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n", pos)
                while trailer_end > pos:  # skip trailer fields up to the empty line
                    pos = trailer_end + 2
                    trailer_end = buf.find(b"\r\n", pos)
                if trailer_end < 0:
                    return None
                return b"".join(parts), trailer_end + 2
            if len(buf) < pos + size + 2:
                return None
            parts.append(bytes(buf[pos : pos + size]))
            pos += size + 2
