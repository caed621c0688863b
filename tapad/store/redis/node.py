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
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from tapad.store.base import (
    NO_DUPLICATES,
    CommitUnknown,
    Duplicates,
    Event,
    HourCounts,
    InDoubt,
    StoreCondition,
    StoreConfigError,
    StoreError,
    StoreFault,
    UniqueCount,
)
from tapad.store.options import StoreOptions
from tapad.store.redis import uniques
from tapad.store.redis.connect import endpoint_of
from tapad.store.redis.guard import Guard, NodeReader, NodeReport
from tapad.store.redis.keys import DISCARD, EXEC, MULTI, SCAN_COUNT, KeyLayout
from tapad.store.redis.layout_check import check_layout
from tapad.store.redis.link import FAILURES, NodeLink, settle, store_error
from tapad.store.redis.protocol import (
    CommandError,
    LinkClosed,
    LinkLost,
    RedisLink,
    ReplyError,
    pack,
)
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
        """``options.check_every``: seconds between two checks that the Redis keeps what it
        is given (guard.py), the first one in ``connect``; None (tools that only read): none."""
        self.layout = KeyLayout(
            settings.prefix,
            options.shards,
            options.unique,
            default_shards=1,
            retention_hours=options.retention_hours,
            dedup_hours=options.dedup_hours,
        )
        self._timeout = options.timeout
        self._deadline = options.commit_deadline
        self._name = settings.redacted()
        endpoint = endpoint_of(settings)
        self._node = NodeLink(endpoint, self._timeout)
        self._where = endpoint.path or f"{endpoint.host}:{endpoint.port}"
        self._guard = (
            None
            if options.check_every is None
            else Guard(options.allow_eviction, options.check_every)
        )
        self._checker = NodeReader(self._node, self._timeout)
        self._probe = b"".join((MULTI, pack(("SET", f"{settings.prefix}probe", "1")), DISCARD))
        # Counting distinct users over a range takes many calls: on a link of its own, so
        # the hot path's requests never queue behind them (tapad/store/redis/uniques.py).
        self._counting = NodeLink(self._node.endpoint, self._timeout)
        self._exact_limit = options.exact_uniques_limit
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
        try:
            await self.ping()
            if self._guard is not None:
                await self._guard.first(self._reports)
        finally:
            if self._guard is not None:
                self._guard.watch(self._reports)

    async def _reports(self) -> dict[str, NodeReport]:
        try:
            return {self._where: await self._checker.read()}
        except FAILURES as exc:
            raise store_error(self._name, exc) from None

    def condition(self) -> StoreCondition:
        return StoreCondition() if self._guard is None else self._guard.condition

    async def probe_write(self) -> None:
        """A SET queued in a MULTI and discarded: Redis refuses it while queueing if it
        would refuse a batch (out of memory, read-only replica), and nothing is written."""
        if self.fault is not None:
            raise StoreError(self.fault)
        link = await self._ready()
        try:
            replies = await link.request(self._probe, 3)
        except FAILURES as exc:
            raise self._failed(exc) from None
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise store_error(self._name, CommandError(str(reply)))

    async def ping(self) -> None:
        link = await self._ready()
        try:
            await link.call("PING")
        except FAILURES as exc:
            raise self._failed(exc) from None
        if self.fault is not None:  # /healthz says 503 while the store is misconfigured
            raise StoreError(self.fault)

    # -- writes ------------------------------------------------------------------------

    async def write(self, events: Sequence[Event]) -> Duplicates:
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
                duplicates = await self._settle(link, marker, seq, events, body, replies)
            finally:
                self.in_doubt.settling -= 1
        except LinkClosed as exc:  # not sent
            raise self._failed(exc) from None
        else:
            duplicates = self._check_exec(result, len(events))
        if expire:  # only with a retention, once per (hour, shard)
            self.layout.expired(expire)
        return duplicates

    async def _settle(
        self,
        old: RedisLink,
        marker: str,
        seq: int,
        events: Sequence[Event],
        body: bytes,
        replies: int,
    ) -> Duplicates:
        """The reply to batch ``seq`` of ``old`` was lost: find out whether it was applied,
        sending it again if it was not, until the commit deadline. (Applied, its reply is
        gone: which of its ids were duplicates is not known, and none are reported.)"""
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
                return NO_DUPLICATES
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
            return self._check_exec(result, len(events))

    def _check_exec(self, replies: list[Any], events: int) -> Duplicates:
        try:
            duplicates = self.layout.duplicates(check_exec(replies))
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
        return frozenset(duplicates) if duplicates else NO_DUPLICATES

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

    # -- removing hours (tapad delete) ------------------------------------------------------

    async def delete_hours(
        self, hours: Sequence[int], progress: Callable[[int], None] | None = None
    ) -> int:
        """Remove every key of ``hours``, each hour in one MULTI/EXEC; return the hours
        that had any. One SCAN of the prefix's hour keys first finds them all, whatever
        they hold (users, counts, ids); the keys events are written to are deleted found
        or not. A server writing one of these hours meanwhile has its batch applied
        before the EXEC (and removed) or after it (and kept). ``progress(n)``: n more of
        ``hours`` done."""
        done = progress or (lambda _: None)
        link = await self._ready()
        layout = self.layout
        wanted = set(hours)
        found: dict[int, set[bytes]] = {}
        try:
            await scan_hours(link, layout, wanted, found)
            indexed = {int(h) for h in await link.call("ZRANGE", layout.hours_key, 0, -1)}
        except FAILURES as exc:
            raise self._failed(exc) from None
        todo = sorted(set(found) | (indexed & wanted))
        done(len(wanted) - len(todo))
        for hour in todo:
            keys = [*found.get(hour, ()), *(k.encode() for k in layout.known_keys(hour))]
            commands = [MULTI, *layout.delete_commands(keys), layout.unindex_command(hour), EXEC]
            try:
                check_exec(await link.request(b"".join(commands), len(commands)))
            except FAILURES as exc:
                raise self._failed(exc) from None
            done(1)
        return len(todo)

    # -- distinct users over a range (GET /analytics/uniques) ------------------------------

    async def uniques(self, hours: Sequence[int]) -> UniqueCount:
        await self._ready()
        counting = _NodeCounting(self._counting, self.layout.prefix)
        try:
            return await uniques.count_uniques(
                counting, self.layout, hours, self._exact_limit, secrets.token_hex(8)
            )
        except FAILURES as exc:
            if not isinstance(exc, CommandError):
                self._counting.close()
            raise store_error(self._name, exc) from None

    async def close(self) -> None:
        if self._guard is not None:
            await self._guard.stop()
        self._node.close()
        self._counting.close()


class _NodeCounting:
    """``uniques.Counting`` on one Redis server: every command on the counting link."""

    def __init__(self, node: NodeLink, prefix: str) -> None:
        self._node = node
        self._prefix = prefix

    async def each(self, keys: Sequence[str], *command: Any) -> list[Any]:
        name, *args = command
        replies: list[Any] = []
        for step in uniques.steps(keys, uniques.KEYS_STEP):
            link = await self._node.get()
            replies += await uniques.request(link, [(name, key, *args) for key in step])
        return replies

    async def on(self, key: str, commands: list[uniques.Command]) -> list[Any]:
        return await uniques.request(await self._node.get(), commands)

    def merge_key(self, shard: int, token: str) -> tuple[str, bool]:
        return f"{self._prefix}uniques:{token}:{shard}", True


async def scan_hours(
    link: RedisLink, layout: KeyLayout, wanted: set[int], found: dict[int, set[bytes]]
) -> None:
    """Add to ``found`` every key on ``link``'s node of an hour in ``wanted``: one SCAN."""
    cursor: Any = 0
    pattern = layout.hour_keys_pattern()
    while True:
        cursor, keys = await link.call("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
        for key in keys:
            hour = layout.hour_of_key(key)
            if hour is not None and hour in wanted:
                found.setdefault(hour, set()).add(key)
        if cursor == b"0":
            return


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
