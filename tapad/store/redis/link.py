"""What the single-Redis and the cluster store share about talking to a Redis server:
one lazily opened link per server (``NodeLink``),
one way to turn a failure into a StoreError (``store_error``), and how a batch whose
reply was lost is settled (``kill_and_read``, ``settle``; the counts in ``base.InDoubt``).

A batch whose reply is lost (the link timed out or broke after sending it) may or may
not have been executed, and may still be: its bytes can sit in the server's socket
buffer. Every batch therefore also sets its link's commit marker (a key named after
the link, holding the link's batch number, with a TTL) inside the same MULTI/EXEC.
To settle it, the store opens a new connection, kills the old one by the id the
server gave it (``CLIENT KILL ID``: after that reply nothing more can run on it; "0
killed" means it is gone already) and then reads the marker, in one round trip. The
marker at or past the batch's number: applied, exactly once. Below it or missing:
not applied, and now never will be. Batches on one connection run in order, so one
marker per link settles every batch sent on it.
"""

from __future__ import annotations

import asyncio
import logging

from tapad.store.base import StoreError
from tapad.store.redis.protocol import (
    CommandError,
    Endpoint,
    LinkClosed,
    RedisLink,
    ReplyError,
    pack,
)

log = logging.getLogger("tapad.store")

FAILURES = (OSError, TimeoutError, CommandError)  # LinkClosed is an OSError (ConnectionError)


def describe(exc: BaseException) -> str:
    """One line about a Redis failure, without any password the URL may carry."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def store_error(name: str, exc: BaseException) -> StoreError:
    return StoreError(f"redis {name}: {describe(exc)}")


class NodeLink:
    """The one hot-path link to one Redis server, opened on first use and after a failure.

    Each server has its own lock: opening a link to one cluster master never waits on
    another's."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._link: RedisLink | None = None
        self._lock = asyncio.Lock()

    def ready(self) -> RedisLink | None:
        link = self._link
        return link if link is not None and link.error is None else None

    async def get(self) -> RedisLink:
        link = self._link
        if link is None or link.error is not None:
            async with self._lock:
                link = self._link
                if link is None or link.error is not None:
                    link = self._link = await RedisLink.open(self.endpoint, self._timeout)
        return link

    async def call(self, *command: object) -> object:
        return await (await self.get()).call(*command)

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()


async def kill_and_read(link: RedisLink, old: RedisLink, markers: list[str]) -> list[object]:
    """On a new link: end ``old`` on the server for good, then read ``markers`` (in that
    order, one round trip). ID and ADDR together: after a restart another client may
    have been given the old id."""
    kill = pack(("CLIENT", "KILL", "ID", old.client_id, "ADDR", old.client_addr))
    replies = await link.request(
        b"".join([kill, *(pack(("GET", key)) for key in markers)]), 1 + len(markers)
    )
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise CommandError(str(reply))
    return replies[1:]


def applied(marker: object, seq: int) -> bool:
    """Whether a commit marker's value says batch ``seq`` of its link was applied."""
    return marker is not None and int(marker) >= seq  # type: ignore[call-overload]


async def settle(
    node: NodeLink, old: RedisLink, markers: list[str], seq: int, deadline: float
) -> list[bool] | None:
    """Whether each marker says batch ``seq`` of ``old`` was applied, trying on fresh
    links until ``deadline`` (loop time); None if the server stayed out of reach, or if
    ``old`` cannot be ended (its Redis user may not run CLIENT INFO and CLIENT KILL)."""
    if not old.client_id:
        log.warning("cannot settle an in-doubt batch: the Redis user may not run CLIENT KILL")
        return None
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                link = await node.get()
                values = await kill_and_read(link, old, markers)
            return [applied(value, seq) for value in values]
        except FAILURES:
            node.close()
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))


__all__ = [
    "FAILURES",
    "LinkClosed",
    "NodeLink",
    "describe",
    "kill_and_read",
    "settle",
    "store_error",
]
