"""One pipelined Redis connection for the hot path: packed commands in, raw replies out.

Profiling tapad on Redis under load showed redis-py's asyncio pipeline costing about
250 us of Python per MULTI/EXEC batch and 180 us per coalesced read on the test
machine (command stack, per-command callbacks, retry and connection-pool
machinery) - more than the HTTP layer spends on a whole batch of requests. The
hot path needs far less: write commands already packed (``hiredis.pack_command``,
in C) and hand back the replies (``hiredis.Reader``, in C), in order. So the
group committer and the coalesced reads share this one connection: requests are
written back to back and replies are matched to them first in, first out, which
also means a read always follows every write sent before it.

The connection itself (TCP, TLS, unix socket, AUTH, SELECT) is still made by
redis-py from the store's pool settings, so every URL works as before. A link
that fails or times out is closed (every request waiting on it fails) and the
store opens a new one for the next call: a half-read reply stream is never reused.

With a ``timeout`` the link bounds its requests itself: one timer per link, not
one per request (an ``asyncio.timeout`` around every call cost more than the rest
of a coalesced read). If the oldest request has waited ``timeout`` seconds the
link fails, and with it everything behind that request on the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection

ReplyError = hiredis.ReplyError


class LinkClosed(ConnectionError):
    """The link is closed; its requests failed and a new link is needed."""


class LinkTimeout(LinkClosed, TimeoutError):
    """The oldest request waited longer than the link's timeout; the link is closed."""


class RedisLink(asyncio.Protocol):
    """Takes over the transport of a connected redis-py connection (``set_protocol``), so a
    reply is parsed and its request's future resolved right in ``data_received``: no
    stream buffer and no reader task between the socket and the waiting caller."""

    def __init__(self, conn: AbstractConnection, timeout: float | None = None) -> None:
        writer = conn._writer  # set once redis-py has connected
        if writer is None:
            raise LinkClosed("redis connection is not open")
        self._conn = conn  # kept alive with the transport it made
        self._transport = writer.transport
        self._parser = hiredis.Reader()
        # (future, replies expected, replies so far, when sent), oldest first
        self._waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any], float]] = deque()
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self.error: BaseException | None = None
        self._transport.set_protocol(self)

    @classmethod
    async def open(cls, conn: AbstractConnection, timeout: float | None = None) -> RedisLink:
        """Connect ``conn`` (a fresh redis-py connection: handshake, AUTH, SELECT) and take it."""
        try:
            await conn.connect()
            return cls(conn, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise

    @property
    def closed(self) -> bool:
        return self.error is not None

    def request(self, packed: bytes, replies: int) -> asyncio.Future[list[Any]]:
        """Send ``packed`` (``replies`` commands); the future gets their replies in order."""
        if self.error is not None:
            raise LinkClosed(str(self.error) or "redis connection closed")
        fut = self._loop.create_future()
        self._waiting.append((fut, replies, [], self._loop.time()))
        self._transport.write(packed)
        if self._watchdog is None and self._timeout is not None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_overdue)
        return fut

    def _check_overdue(self) -> None:
        """Fail the link if its oldest request is overdue, else look again when it would be."""
        self._watchdog = None
        if not self._waiting or self._timeout is None:
            return
        due = self._waiting[0][3] + self._timeout
        if self._loop.time() >= due:
            self._fail(LinkTimeout(f"no reply within {self._timeout:g}s"))
        else:
            self._watchdog = self._loop.call_at(due, self._check_overdue)

    # -- asyncio.Protocol ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        parser, waiting = self._parser, self._waiting
        parser.feed(data)
        try:
            while (reply := parser.gets()) is not False:
                if not waiting:
                    raise LinkClosed("redis sent a reply nobody asked for")
                fut, expected, got, _ = waiting[0]
                got.append(reply)
                if len(got) == expected:
                    waiting.popleft()
                    if not fut.done():
                        fut.set_result(got)
        except Exception as exc:  # a protocol error: the reply stream can't be trusted
            self._fail(exc)

    def eof_received(self) -> bool:
        self._fail(LinkClosed("connection closed by the redis server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or LinkClosed("connection closed by the redis server"))

    # -- ending ----------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        failure = LinkTimeout if isinstance(exc, TimeoutError) else LinkClosed
        while self._waiting:
            fut, _, _, _ = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(failure(str(exc) or type(exc).__name__))
        self._transport.close()

    def close(self) -> None:
        """Fail what is still waiting and close the socket."""
        self._fail(LinkClosed("redis connection closed"))
