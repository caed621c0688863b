"""Redis store: one Redis server (or a replica set's primary), the keys of ``layout.py``.

The whole batch is one MULTI/EXEC, sent over one pipelined link (``resp.py``) that
batches and coalesced reads share. Everything else (layout check, hours, ping) goes
over the same link too: the store holds one connection.

A batch whose reply is lost after it was sent is settled before anyone is answered
(``link.py``): applied, it returns; not applied, it is sent once more on a new link
(it cannot land twice now); still out of reach at the commit deadline, CommitUnknown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from tapad.store.base import (
    CommitUnknown,
    Event,
    HourCounts,
    InDoubt,
    StoreConfigError,
    StoreError,
    StoreFault,
)
from tapad.store.options import StoreOptions
from tapad.store.redis.connect import endpoint_of
from tapad.store.redis.keys import EXEC, MULTI, KeyLayout
from tapad.store.redis.layout_check import check_layout
from tapad.store.redis.link import FAILURES, NodeLink, settle, store_error
from tapad.store.redis.protocol import CommandError, LinkClosed, LinkLost, RedisLink, ReplyError
from tapad.store.url import StoreSettings

log = logging.getLogger("tapad.store")
READS_KEPT = 256  # packed reads kept (per hours asked together); past it, all are dropped


class RedisStore:
    """One Redis server shared by any number of tapad servers."""

    def __init__(
        self,
        settings: StoreSettings,
        options: StoreOptions = StoreOptions(),
    ) -> None:
        self.layout = KeyLayout(
            settings.prefix,
            options.shards,
            options.unique,
            default_shards=1,
            retention_hours=options.retention_hours,
        )
        self._timeout = options.timeout
        self._deadline = options.commit_deadline
        self._name = settings.redacted()
        self._node = NodeLink(endpoint_of(settings), self._timeout)
        self._layout_checked = False
        self._reads: dict[tuple[int, ...], tuple[bytes, int]] = {}  # see _read_request
        self.in_doubt = InDoubt()
        self.fault: str | None = None  # set by an error inside EXEC: see StoreFault

    @property
    def unique_mode(self) -> str:
        return self.layout.unique

    async def _ready(self) -> RedisLink:
        """The open link, after checking the layout once (the slow path: connecting)."""
        link = self._node.ready()
        if link is not None and self._layout_checked:
            return link
        try:
            async with asyncio.timeout(self._timeout):
                link = await self._node.get()
                if not self._layout_checked:
                    await check_layout(
                        self.layout, lambda cmds: link.request(b"".join(cmds), len(cmds))
                    )
                    self._layout_checked = True
                    self._reads.clear()  # made before the store's layout was known
            return link
        except FAILURES as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> StoreError:
        """The StoreError for ``exc``; a link that timed out or broke is never reused."""
        if not isinstance(exc, CommandError):
            self._node.close()  # a half-read reply stream can't be trusted
        return store_error(self._name, exc)

    async def connect(self) -> None:
        await self.ping()

    async def ping(self) -> None:
        link = await self._ready()
        try:
            await link.call("PING")
        except FAILURES as exc:
            raise self._failed(exc) from None
        if self.fault is not None:  # /healthz says 503 while the store is misconfigured
            raise StoreError(self.fault)

    # -- writes ------------------------------------------------------------------------

    async def write(self, events: Sequence[Event]) -> None:
        """One MULTI/EXEC per batch, packed in C and sent in one write."""
        if self.fault is not None:  # refused before sending: nothing of it is applied
            raise StoreError(self.fault)
        link = self._node.ready()
        if link is None or not self._layout_checked:
            link = await self._ready()
        body, replies, expire = self._write_request(events)
        link.seq += 1
        seq = link.seq
        marker = self.layout.marker_key(link.token)
        packed = b"".join(
            (MULTI, body, self.layout.marker_command(marker, seq, self._deadline), EXEC)
        )
        try:
            result = await link.request(packed, replies + 3)
        except LinkLost:
            self.in_doubt.settling += 1
            try:
                await self._settle(link, marker, seq, events, body, replies)
            finally:
                self.in_doubt.settling -= 1
        except LinkClosed as exc:  # not sent
            raise self._failed(exc) from None
        else:
            self._check_exec(result, len(events))
        if expire:  # only with a retention, once per (hour, shard)
            self.layout.expired(expire)

    async def _settle(
        self,
        old: RedisLink,
        marker: str,
        seq: int,
        events: Sequence[Event],
        body: bytes,
        replies: int,
    ) -> None:
        """The reply to batch ``seq`` of ``old`` was lost: find out whether it was applied,
        sending it again if it was not, until the commit deadline."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self._deadline
        while True:
            old.close()
            found = await settle(self._node, old, [marker], seq, deadline)
            waited = loop.time() - start
            if found is None:
                self.in_doubt.settled(self._name, "unknown", len(events), waited)
                raise CommitUnknown(f"redis {self._name}: no answer within the commit deadline")
            if found[0]:
                self.in_doubt.settled(self._name, "applied", len(events), waited)
                return
            self.in_doubt.settled(self._name, "not_applied", len(events), waited)
            link = self._node.ready()  # the link settle() just used: send the batch again
            if link is None:
                raise StoreError(f"redis {self._name}: batch not applied")
            link.seq += 1
            seq = link.seq
            marker = self.layout.marker_key(link.token)
            mark = self.layout.marker_command(marker, seq, self._deadline)
            try:
                result = await link.request(b"".join((MULTI, body, mark, EXEC)), replies + 3)
            except LinkLost:
                old = link
                continue
            except LinkClosed:
                raise StoreError(f"redis {self._name}: batch not applied") from None
            self._check_exec(result, len(events))
            return

    def _check_exec(self, replies: list[Any], events: int) -> None:
        try:
            check_exec(replies)
        except ExecError as exc:
            self.fault = f"store misconfigured: {exc}"
            log.error(
                "redis %s: a batch of %d events was applied in part (%s); refusing writes "
                "until restarted (see docs/operations.md)",
                self._name,
                events,
                exc,
            )
            raise StoreFault(f"redis {self._name}: batch applied in part: {exc}") from None
        except CommandError as exc:
            raise store_error(self._name, exc) from None

    def _write_request(self, events: Sequence[Event]) -> tuple[bytes, int, list[tuple[int, int]]]:
        """The commands of a batch between MULTI and the marker, their count, and the
        (hour, shard) pairs whose EXPIREAT they carry."""
        layout = self.layout
        commands: list[bytes] = []
        parts = layout.split(events)
        for (hour, shard), part in parts.items():
            commands += layout.write_commands(hour, shard, *part)
        commands.append(layout.index_command({hour for hour, _ in parts}))
        expire = layout.expiries(parts)
        if expire:  # with a retention: once per (hour, shard) and process, not every batch
            for hour, shard in expire:
                commands += layout.pack_expire(hour, shard)
            commands.append(layout.pack_trim())
        return b"".join(commands), len(commands), expire

    # -- reads -------------------------------------------------------------------------

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours((hour,)))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        """Every shard of every hour asked in one MULTI/EXEC: one consistent snapshot."""
        link = self._node.ready()
        if link is None or not self._layout_checked:
            link = await self._ready()
        key = tuple(hours)
        request = self._reads.get(key)
        if request is None:
            request = self._read_request(key)
        try:
            replies = check_exec(await link.request(*request))
        except FAILURES as exc:
            raise self._failed(exc) from None
        per_hour = 2 * self.layout.shards
        sums = self.layout.sum_replies
        return [sums(replies[i * per_hour : (i + 1) * per_hour]) for i in range(len(hours))]

    def _read_request(self, hours: tuple[int, ...]) -> tuple[bytes, int]:
        """The packed MULTI/EXEC reading ``hours`` and its reply count, kept for the next
        read of the same hours (nearly every read asks for the current hour alone)."""
        shards = range(self.layout.shards)
        commands = [MULTI, *self.layout.read_commands([(h, s) for h in hours for s in shards])]
        commands.append(EXEC)
        request = (b"".join(commands), len(commands))
        if len(self._reads) >= READS_KEPT:
            self._reads.clear()
        self._reads[hours] = request
        return request

    async def hours(self) -> list[int]:
        link = await self._ready()
        try:
            (raw,) = await link.request(self.layout.hours_command(), 1)
        except FAILURES as exc:
            raise self._failed(exc) from None
        if isinstance(raw, ReplyError):
            raise store_error(self._name, CommandError(str(raw)))
        return self.layout.kept_hours(raw)

    async def close(self) -> None:
        self._node.close()


class ExecError(CommandError):
    """A command failed inside EXEC; the other commands of the transaction were applied."""


def check_exec(replies: list[Any]) -> list[Any]:
    """The EXEC reply of a MULTI ... EXEC; CommandError if the transaction was refused
    whole, ExecError if it ran but a command in it failed.

    A command refused while queueing (out of memory, wrong arguments) makes Redis discard
    the whole transaction (EXECABORT): nothing of the batch is applied. A command that
    fails while EXEC runs (WRONGTYPE: a key under the prefix that is not tapad's) fails
    alone: the others are applied.
    """
    result = replies[-1]
    if not isinstance(result, list):
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise CommandError(str(reply))
        raise CommandError(f"transaction not applied: {result!r}")
    for reply in result:
        if isinstance(reply, ReplyError):
            raise ExecError(str(reply))
    return result


__all__ = ["KeyLayout", "RedisStore", "StoreConfigError", "check_exec"]
