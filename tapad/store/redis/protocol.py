"""One pipelined Redis connection for the hot path: packed commands in, raw replies out.

Profiling tapad on Redis under load showed redis-py's asyncio pipeline costing more
Python per MULTI/EXEC batch and per coalesced read than the HTTP layer spends on a
whole batch of requests (command stack, per-command callbacks, retry and pool
machinery; figures in docs/performance.md). The hot path needs far less: write
commands already packed (``hiredis.pack_command``, in C) and hand back the replies
(``hiredis.Reader``, in C), in order. So the group committer and the coalesced reads
share one connection: requests are written back to back and replies are matched to
them first in, first out, which also means a read always follows every write sent
before it.

The link opens its own connection (TCP, TLS, unix socket; AUTH and SELECT in the
same first round trip) and learns how the server knows it (``CLIENT INFO``: its id
and address), so a committer whose reply got lost can later make sure this very
connection can execute nothing more (``CLIENT KILL``, see ``tapad.store.redis.link``).
A link that fails or times out is closed (every request waiting on it fails) and
the store opens a new one for the next call: a half-read reply stream is never reused.

With a ``timeout`` the link bounds its requests itself: one timer per link, not
one per request (an ``asyncio.timeout`` around every call cost more than the rest
of a coalesced read). If the oldest request has waited ``timeout`` seconds the
link fails, and with it everything behind that request on the same connection.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis

ReplyError = hiredis.ReplyError
# One command in RESP, packed in C. (hiredis's type stub says a 1-tuple; it takes any tuple.)
pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


class LinkClosed(ConnectionError):
    """The link is closed: the request was not sent; a new link is needed."""


class LinkLost(LinkClosed):
    """The link failed while the request was sent and its reply had not come: it may or may
    not have been executed."""


class LinkTimeout(LinkLost, TimeoutError):
    """The oldest request waited longer than the link's timeout; the link is closed."""


class CommandError(Exception):
    """Redis refused a command (an error reply); the connection itself is fine."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: one Redis server (or one cluster node)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # unix socket
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0

    def at(self, host: str, port: int) -> Endpoint:
        """The same credentials and TLS settings for another node of a cluster."""
        return Endpoint(host, port, None, self.tls, self.username, self.password, self.db)

    @property
    def node(self) -> tuple[str, int]:
        return (self.host, self.port)


class RedisLink(asyncio.Protocol):
    """A connection whose replies are parsed and matched to their requests right in
    ``data_received``: no stream buffer and no reader task between the socket and the
    waiting caller."""

    def __init__(self, timeout: float | None = None) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = hiredis.Reader()
        # (future, replies expected, replies so far, when sent), oldest first
        self._waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any], float]] = deque()
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self.error: BaseException | None = None
        self.client_id = 0  # how the server knows this connection (CLIENT INFO); 0: unknown
        self.client_addr = ""
        self.token = secrets.token_hex(8)  # names this link's commit marker
        self.seq = 0  # batches sent on this link, for its commit marker

    @classmethod
    async def open(cls, endpoint: Endpoint, timeout: float | None = None) -> RedisLink:
        """Connect, authenticate, select the database and learn the connection's id, all
        within ``timeout``; raise OSError/TimeoutError, or CommandError (e.g. WRONGPASS)."""
        loop = asyncio.get_running_loop()
        link = cls(timeout)
        try:
            async with asyncio.timeout(timeout):
                if endpoint.path is not None:
                    await loop.create_unix_connection(lambda: link, endpoint.path)
                else:
                    await loop.create_connection(
                        lambda: link,
                        endpoint.host,
                        endpoint.port,
                        ssl=endpoint.tls,
                        server_hostname=endpoint.host if endpoint.tls else None,
                    )
                commands = []
                if endpoint.password is not None:
                    user = () if endpoint.username is None else (endpoint.username,)
                    commands.append(pack(("AUTH", *user, endpoint.password)))
                if endpoint.db:
                    commands.append(pack(("SELECT", endpoint.db)))
                commands.append(pack(("CLIENT", "INFO")))
                replies = await link.request(b"".join(commands), len(commands))
        except BaseException:
            link.close()
            raise
        *handshake, info = replies
        for reply in handshake:
            if isinstance(reply, ReplyError):
                link.close()
                raise CommandError(str(reply))
        if isinstance(info, ReplyError):  # an ACL user without CLIENT: id 0, see link.settle
            if not str(info).startswith("NOPERM"):
                link.close()
                raise CommandError(str(info))
            return link
        fields = dict(field.split("=", 1) for field in info.decode().split() if "=" in field)
        link.client_id = int(fields["id"])
        link.client_addr = fields["addr"]
        return link

    @property
    def closed(self) -> bool:
        return self.error is not None

    def request(self, packed: bytes, replies: int) -> asyncio.Future[list[Any]]:
        """Send ``packed`` (``replies`` commands); the future gets their replies in order.
        LinkClosed here means nothing was sent; a failed future (LinkLost) means it was."""
        if self.error is not None or self._transport is None:
            raise LinkClosed(str(self.error) or "redis connection closed")
        fut = self._loop.create_future()
        self._waiting.append((fut, replies, [], self._loop.time()))
        self._transport.write(packed)
        if self._watchdog is None and self._timeout is not None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_overdue)
        return fut

    async def call(self, *command: object) -> Any:
        """One command, its reply; an error reply raises CommandError (the slow path)."""
        (reply,) = await self.request(pack(command), 1)
        if isinstance(reply, ReplyError):
            raise CommandError(str(reply))
        return reply

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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser, waiting = self._parser, self._waiting
        parser.feed(data)
        try:
            while (reply := parser.gets()) is not False:
                if not waiting:
                    raise LinkLost("redis sent a reply nobody asked for")
                fut, expected, got, _ = waiting[0]
                got.append(reply)
                if len(got) == expected:
                    waiting.popleft()
                    if not fut.done():
                        fut.set_result(got)
        except Exception as exc:  # a protocol error: the reply stream can't be trusted
            self._fail(exc)

    def eof_received(self) -> bool:
        self._fail(LinkLost("connection closed by the redis server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or LinkLost("connection closed by the redis server"))

    # -- ending ----------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        failure = LinkTimeout if isinstance(exc, TimeoutError) else LinkLost
        while self._waiting:
            fut, _, _, _ = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(failure(str(exc) or type(exc).__name__))
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        """Fail what is still waiting and close the socket."""
        self._fail(LinkLost("redis connection closed"))
