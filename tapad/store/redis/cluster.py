"""Redis Cluster store: the hot current hour spread over the cluster's masters.

Same keys as the single-Redis store (``layout.py``): each user falls in one shard (crc32
of the name), and the keys of one (hour, shard) share a hash tag, so they live in one slot
on one master. A new store gets as many shards as the cluster has masters, each with a
hash tag chosen (and written in the layout) so that the shards start on distinct masters
and every hour of a shard shares its slot: a batch is then one transaction per master. A
store set up before that (16 shards, {hour.shard} tags) is adopted as it is.

The store reads the slot map itself (``CLUSTER SLOTS``) and holds one pipelined link
per master (``link.NodeLink``), each with its own lock and watchdog: connecting to one
master never waits on another, and a master that fails closes its own link only.

A batch is split by slot; each slot's part is one MULTI/EXEC on the master that owns
the slot, with a commit marker in the same transaction. All the slots of one master
go in one round trip, and the masters are written concurrently. So an event (its user
and its count) is applied all or nothing. A slot that moved (MOVED/ASK/TRYAGAIN: its
transaction was refused whole) is sent again after reloading the slot map. Every
master of a batch is connected to before anything is sent, so a master that is down
fails the batch with nothing recorded anywhere.

A master whose reply is lost after sending is settled as on a single Redis
(``link.py``), part by part: its link is killed and its markers read, on the master
that now owns each slot (after a failover the replica that took over; the old master's
late writes are dropped when it rejoins as a replica). Parts not applied are sent
again. The batch's outcome is per part: ``PartialWrite`` says which parts are applied,
which are in doubt past the commit deadline, and the rest are known not applied.

A GET reads every shard of the hour, one pipeline per master, and sums: exact in
``exact`` mode, because a user is always counted in the same shard.

``tapad:hours`` and ``tapad:layout`` are single keys on one master each. The hours
index is written before the shard data, so an indexed hour may read zeros for a
moment, but an hour with data is always indexed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, cast

from tapad.adapters.redis_py import key_slot
from tapad.store.base import (
    NO_DUPLICATES,
    CommitUnknown,
    Duplicates,
    Event,
    HourCounts,
    InDoubt,
    PartialWrite,
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
from tapad.store.redis.keys import DISCARD, EXEC, MULTI, KeyLayout
from tapad.store.redis.keys import Part as KeyPart
from tapad.store.redis.layout_check import check_layout
from tapad.store.redis.link import (
    FAILURES,
    NodeLink,
    applied,
    kill_and_read,
    store_error,
)
from tapad.store.redis.node import scan_hours
from tapad.store.redis.protocol import (
    CommandError,
    Endpoint,
    LinkClosed,
    LinkLost,
    RedisLink,
    ReplyError,
    pack,
)
from tapad.store.url import StoreSettings

log = logging.getLogger("tapad.store")

SLOTS = 16384
# Replies after which a slot's commands were certainly not applied: safe to send once more
# after reloading the slot map (the slot moved, or is migrating).
REDIRECTS = ("MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN ")

Node = tuple[str, int]
Part = tuple[int, int, KeyPart]  # hour, shard, (users, clicks, imps, events with ids)


class ClusterStore:
    """A Redis Cluster shared by any number of tapad servers."""

    def __init__(
        self,
        settings: StoreSettings,
        options: StoreOptions = StoreOptions(),
    ) -> None:
        """``options.check_every``: seconds between two checks that every master keeps what it is
        given (guard.py), the first one in ``connect``; None (tools that only read): none."""
        if not settings.hosts:
            raise StoreConfigError(f"store URL {settings.redacted()!r} names no cluster node")
        self.layout = KeyLayout(  # shards 0: one per master, once the slot map says how many
            settings.prefix,
            options.shards,
            options.unique,
            default_shards=0,
            retention_hours=options.retention_hours,
            dedup_hours=options.dedup_hours,
        )
        self._timeout = options.timeout
        self._deadline = options.commit_deadline
        self._name = settings.redacted()
        self._seed: Endpoint = endpoint_of(settings)
        self._start_nodes: list[Node] = list(settings.hosts)
        self._nodes: dict[Node, NodeLink] = {}
        self._counting: dict[Node, NodeLink] = {}  # links for uniques, not the hot path's
        self._exact_limit = options.exact_uniques_limit
        self._owners: list[Node] | None = None  # the slot map: owner of each slot
        self._map_lock = asyncio.Lock()
        self._reload_map = False  # a master failed: it may have been replaced (failover)
        self._indexed: set[int] = set()  # hours this process already put in the index
        self._layout_checked = False
        self._tag_slots: list[int] | None = None  # the slot of each shard's tag (tagged layouts)
        self.in_doubt = InDoubt()
        self.fault: str | None = None  # set by an error inside EXEC: see StoreFault
        self._guard = (
            None
            if options.check_every is None
            else Guard(options.allow_eviction, options.check_every)
        )
        self._checkers: dict[Node, NodeReader] = {}

    @property
    def unique_mode(self) -> str:
        return self.layout.unique

    # -- nodes and the slot map ------------------------------------------------------------

    def _node(self, addr: Node) -> NodeLink:
        node = self._nodes.get(addr)
        if node is None:
            node = self._nodes[addr] = NodeLink(self._seed.at(*addr), self._timeout)
        return node

    def _owner(self, slot: int) -> Node:
        assert self._owners is not None
        return self._owners[slot]

    async def _load_map(self, force: bool = False) -> None:
        """Read the slot map from the first node that answers (known masters first)."""
        async with self._map_lock:
            if self._owners is not None and not force and not self._reload_map:
                return
            candidates = list(dict.fromkeys([*(self._owners or ()), *self._start_nodes]))
            error: BaseException | None = None
            for addr in candidates:
                node = self._node(addr)
                try:
                    async with asyncio.timeout(self._timeout):
                        reply = cast(list[Any], await node.call("CLUSTER", "SLOTS"))
                except FAILURES as exc:
                    node.close()
                    error = exc
                    continue
                owners: list[Node] = [addr] * SLOTS
                covered = 0
                for first, last, master, *_ in reply:
                    host = master[0].decode() or addr[0]
                    owner = (host, int(master[1]))
                    owners[first : last + 1] = [owner] * (last - first + 1)
                    covered += last - first + 1
                if covered < SLOTS:
                    error = CommandError(f"CLUSTERDOWN {SLOTS - covered} slots not served")
                    continue
                self._owners = owners
                self._reload_map = False
                for gone in set(self._nodes) - set(owners) - set(self._start_nodes):
                    self._nodes.pop(gone).close()
                return
            raise error or OSError("no cluster node answered")

    async def _ready(self) -> None:
        """Slot map and layout, once (and the map again after a failure): StoreError if not."""
        if self._owners is not None and not self._reload_map and self._layout_checked:
            return
        try:
            await self._load_map()
            if not self._layout_checked:
                if not self.layout.shards:
                    self.layout.shards = len(self._masters())
                await check_layout(
                    self.layout,
                    lambda cmds: self._on_key(self.layout.layout_key, cmds),
                    self._choose_tags,
                )
                tags = self.layout.tags
                self._tag_slots = None if tags is None else [key_slot(t.encode()) for t in tags]
                self._layout_checked = True
        except FAILURES as exc:
            raise store_error(f"cluster {self._name}", exc) from None

    def _masters(self) -> list[Node]:
        """The masters of the slot map, in the order of the first slot each serves."""
        assert self._owners is not None
        return list(dict.fromkeys(self._owners))

    def _slot(self, hour: int, shard: int) -> int:
        """The slot of an (hour, shard)'s keys: the shard's own with tags, else computed."""
        if self._tag_slots is not None:
            return self._tag_slots[shard]
        return key_slot(self.layout.users_key(hour, shard).encode())

    def _choose_tags(self, shards: int) -> list[str]:
        """A hash tag per shard for a new store: shard i's in a slot the i-th master owns
        (round robin), so the shards are spread evenly over the masters of the day."""
        assert self._owners is not None
        masters = self._masters()
        tags = []
        for shard in range(shards):
            want = masters[shard % len(masters)]
            n = 0
            while self._owners[key_slot(f"s{shard}.{n}".encode())] != want:
                n += 1  # a master with a third of the slots: 3 tries on average
            tags.append(f"s{shard}.{n}")
        return tags

    async def _on_key(self, key: str, commands: list[bytes]) -> list[Any]:
        """Commands on one key, on the master holding it, following one redirection."""
        slot = key_slot(key.encode())
        for attempt in (1, 2):
            node = self._node(self._owner(slot))
            try:
                link = await node.get()
                replies = await link.request(b"".join(commands), len(commands))
            except LinkClosed:
                self._reload_map = True
                raise
            errors = [str(r) for r in replies if isinstance(r, ReplyError)]
            if not errors:
                return replies
            if attempt == 2 or not errors[0].startswith(REDIRECTS):
                raise CommandError(errors[0])
            await self._load_map(force=True)
        raise AssertionError("unreachable")

    # -- writes ----------------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            await self.ping()
            if self._guard is not None:
                await self._guard.first(self._reports)
        finally:
            if self._guard is not None:
                self._guard.watch(self._reports)

    async def _reports(self) -> dict[str, NodeReport]:
        """Every master's report, read at once."""
        await self._ready()
        masters = self._masters()
        for addr in masters:
            node = self._node(addr)
            checker = self._checkers.get(addr)
            if checker is None or checker.node is not node:
                self._checkers[addr] = NodeReader(node, self._timeout)
        try:
            reports = await asyncio.gather(*(self._checkers[a].read() for a in masters))
        except FAILURES as exc:
            raise self._failed(exc) from None
        return {f"{host}:{port}": r for (host, port), r in zip(masters, reports, strict=True)}

    def condition(self) -> StoreCondition:
        return StoreCondition() if self._guard is None else self._guard.condition

    async def probe_write(self) -> None:
        """On every master, a SET queued in a MULTI and discarded (see RedisStore's): a
        master out of memory refuses it while queueing, and nothing is written."""
        if self.fault is not None:
            raise StoreError(self.fault)
        await self._ready()
        assert self._owners is not None
        owners = self._owners
        probes = []
        for addr in self._masters():
            n = 0
            while owners[key_slot(f"probe.{n}".encode())] != addr:
                n += 1  # a master with a third of the slots: 3 tries on average
            key = f"{self.layout.prefix}{{probe.{n}}}"
            probes.append(self._probe_on(addr, b"".join((MULTI, pack(("SET", key, "1")), DISCARD))))
        try:
            await asyncio.gather(*probes)
        except FAILURES as exc:
            raise self._failed(exc) from None

    async def _probe_on(self, addr: Node, probe: bytes) -> None:
        link = await self._node(addr).get()
        for reply in await link.request(probe, 3):
            if isinstance(reply, ReplyError):
                raise CommandError(str(reply))

    async def write(self, events: Sequence[Event]) -> Duplicates:
        """Every master's part at once. Returns if every part is applied (the positions of
        the events whose ids were known: see ``Store.write``); StoreError if
        none is and none is in doubt; PartialWrite (each part applied, in doubt, or not)
        or CommitUnknown (every part in doubt) otherwise."""
        if self.fault is not None:
            raise StoreError(self.fault)
        await self._ready()
        layout = self.layout
        parts = layout.split(events)
        new_hours = [hour for hour, _ in parts if hour not in self._indexed]
        if new_hours:  # first: an hour with data must be in the index (for tally)
            commands = [layout.index_command(new_hours)]
            if layout.retention:
                commands.append(layout.pack_trim())
            try:
                await self._on_key(layout.hours_key, commands)
            except FAILURES as exc:
                raise self._failed(exc) from None
            self._indexed.update(new_hours)
        pending: dict[int, list[Part]] = {}
        for (hour, shard), part in parts.items():
            pending.setdefault(self._slot(hour, shard), []).append((hour, shard, part))
        loop = asyncio.get_running_loop()
        batch = _Outcome(loop.time() + self._deadline)
        sent = False
        while True:
            by_node: dict[Node, list[tuple[int, list[Part]]]] = {}
            for slot, items in pending.items():
                by_node.setdefault(self._owner(slot), []).append((slot, items))
            # Connect to every master of this round before sending anything: a master that
            # is down fails the round with nothing of it sent anywhere.
            ready = [self._node(addr).ready() for addr in by_node]
            links: list[RedisLink | BaseException] = [k for k in ready if k is not None]
            if len(links) < len(ready):  # a link to open (at start, after a failure)
                links = await asyncio.gather(
                    *(self._node(addr).get() for addr in by_node), return_exceptions=True
                )
            down = [
                (a, r) for a, r in zip(by_node, links, strict=True) if not isinstance(r, RedisLink)
            ]
            if down:
                for addr, _ in down:
                    self._node(addr).close()
                self._reload_map = True
                if not sent or not await self._next_round(batch):
                    # Nothing of the batch sent yet: a fast 503, as for any store down.
                    batch.fail(down[0][1])
                    batch.not_sent(pending)
                    break
                continue
            sent = True
            results = await self._write_nodes(
                [
                    (a, cast(RedisLink, k), s)
                    for (a, s), k in zip(by_node.items(), links, strict=True)
                ],
                batch,
            )
            again: dict[int, list[Part]] = {}
            for result in results:
                if isinstance(result, dict):
                    again.update(result)
                elif isinstance(result, StoreFault):
                    self.fault = f"store misconfigured: {result}"
                    batch.fail(result)
                else:
                    batch.fail(result)
            # Parts that moved or were settled as not applied: sent again on the slot's
            # master (after a failover, the new one) until the commit deadline.
            if not again or batch.error is not None or not await self._next_round(batch):
                batch.not_sent(again)
                break
            pending = again
        layout.expired(sorted(batch.applied))
        self._answer(batch)
        return frozenset(batch.duplicates) if batch.duplicates else NO_DUPLICATES

    async def _next_round(self, batch: _Outcome) -> bool:
        """Reload the slot map for another round of sends, if the deadline leaves time."""
        loop = asyncio.get_running_loop()
        while loop.time() < batch.deadline:
            await asyncio.sleep(0.01)  # a slot moving or a failover takes a moment
            try:
                async with asyncio.timeout_at(batch.deadline):
                    await self._load_map(force=True)
                return True
            except FAILURES:
                await asyncio.sleep(0.05)
        return False

    def _answer(self, batch: _Outcome) -> None:
        if batch.error is None and not batch.unknown:
            return
        error = batch.error
        if isinstance(error, StoreFault):
            log.error(
                "redis cluster %s: a part of a batch was applied in part (%s); refusing writes "
                "until restarted (see docs/operations.md)",
                self._name,
                error,
            )
        text = (
            f"redis cluster {self._name}: part in doubt past the commit deadline"
            if error is None
            else str(self._failed(error))
        )
        if batch.applied or (batch.unknown and batch.failed):
            raise PartialWrite(text, batch.applied, self.layout.shard_of, batch.unknown)
        # Nothing applied: every part in doubt, or every part known not applied.
        if batch.unknown or isinstance(error, StoreFault):
            raise CommitUnknown(text)
        raise StoreError(text)

    async def _write_nodes(
        self, nodes: list[tuple[Node, RedisLink, list[tuple[int, list[Part]]]]], batch: _Outcome
    ) -> list[dict[int, list[Part]] | BaseException]:
        """Every master's part sent at once (each in one write, no task per master), then
        the replies read as they come; masters whose reply was lost are settled together.
        One result per master sent: the slots to send again, or the exception it ended in."""
        sent = []
        results: list[dict[int, list[Part]] | BaseException] = []
        for addr, link, slots in nodes:
            try:
                sent.append((addr, link, slots, *self._send(link, slots)))
            except LinkClosed as exc:  # nothing sent on it
                batch.failed.update(_pairs(slots))
                results.append(exc)
        lost = []
        for addr, link, slots, reply, seq, spans, markers in sent:
            try:
                replies = await reply
            except LinkLost:
                lost.append(self._settle_lost(addr, link, slots, markers, seq, batch))
                continue
            try:
                results.append(self._applied(replies, slots, spans, batch))
            except (CommandError, StoreFault) as exc:
                results.append(exc)
        if lost:
            results += await asyncio.gather(*lost, return_exceptions=True)
        return results

    def _send(
        self, link: RedisLink, slots: list[tuple[int, list[Part]]]
    ) -> tuple[asyncio.Future[list[Any]], int, list[tuple[int, int]], list[str]]:
        """One master's slots in one request: MULTI ... marker EXEC per slot. LinkClosed
        if the link failed before anything was sent."""
        layout = self.layout
        seq = link.seq + 1
        commands: list[bytes] = []
        spans = []
        markers = []
        for _slot, items in slots:
            begin = len(commands)
            commands.append(MULTI)
            for hour, shard, part in items:
                commands += layout.write_commands(hour, shard, *part)
            for hour, shard in layout.expiries((h, s) for h, s, _ in items):
                commands += layout.pack_expire(hour, shard)
            marker = layout.marker_key(link.token, layout.tag(items[0][0], items[0][1]))
            markers.append(marker)
            commands.append(layout.marker_command(marker, seq, self._deadline))
            commands.append(EXEC)
            spans.append((begin, len(commands) - 1))
        reply = link.request(b"".join(commands), len(commands))
        link.seq = seq
        return reply, seq, spans, markers

    async def _settle_lost(
        self,
        addr: Node,
        link: RedisLink,
        slots: list[tuple[int, list[Part]]],
        markers: list[str],
        seq: int,
        batch: _Outcome,
    ) -> dict[int, list[Part]]:
        self._reload_map = True
        self.in_doubt.settling += 1
        try:
            return await self._settle(addr, link, slots, markers, seq, batch)
        finally:
            self.in_doubt.settling -= 1

    @staticmethod
    def _applied(
        replies: list[Any],
        slots: list[tuple[int, list[Part]]],
        spans: list[tuple[int, int]],
        batch: _Outcome,
    ) -> dict[int, list[Part]]:
        """Record one master's parts applied in ``batch``. Returns the slots to send again
        (refused whole because the slot moved); raises for a part that failed otherwise."""
        again: dict[int, list[Part]] = {}
        fault: BaseException | None = None
        for (slot, items), (begin, end) in zip(slots, spans, strict=True):
            result = replies[end]
            if isinstance(result, list):
                batch.applied.update((h, s) for h, s, _ in items)
                batch.duplicates.update(KeyLayout.duplicates(result))
                errors = [r for r in result if isinstance(r, ReplyError)]
                if errors:  # applied, but a command failed (e.g. a wrong key type)
                    batch.applied.difference_update((h, s) for h, s, _ in items)
                    batch.unknown.update((h, s) for h, s, _ in items)
                    fault = StoreFault(f"applied in part: {errors[0]}")
                continue
            # EXECABORT: a queued command was refused and nothing of this slot applied.
            causes = [r for r in replies[begin:end] if isinstance(r, ReplyError)]
            cause = str(causes[0] if causes else result)
            if cause.startswith(REDIRECTS):
                again[slot] = items
            else:
                batch.failed.update((h, s) for h, s, _ in items)
                fault = fault or CommandError(cause)
        if fault is not None:
            raise fault
        return again

    async def _settle(
        self,
        addr: Node,
        old: RedisLink,
        slots: list[tuple[int, list[Part]]],
        markers: list[str],
        seq: int,
        batch: _Outcome,
    ) -> dict[int, list[Part]]:
        """The reply of one master was lost: per slot, applied or not (then sent again),
        until the deadline; past it the parts left are in doubt."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        events = sum(len(part[0]) for _, items in slots for _, _, part in items)
        old.close()
        found: list[object] | None = None
        while found is None and old.client_id:  # 0: its Redis user may not run CLIENT
            try:
                async with asyncio.timeout_at(batch.deadline):
                    found = await self._read_markers(addr, old, slots, markers)
            except FAILURES:
                if loop.time() >= batch.deadline:
                    break
                await asyncio.sleep(0.05)
        name = f"cluster master {addr[0]}:{addr[1]}"
        if found is None:
            batch.unknown.update(_pairs(slots))
            self.in_doubt.settled(name, "unknown", events, loop.time() - start)
            return {}
        again: dict[int, list[Part]] = {}
        for (slot, items), marker in zip(slots, found, strict=True):
            if applied(marker, seq):
                batch.applied.update((h, s) for h, s, _ in items)
            else:
                again[slot] = items
        outcome = "not_applied" if again else "applied"
        self.in_doubt.settled(name, outcome, events, loop.time() - start)
        return again

    async def _read_markers(
        self, addr: Node, old: RedisLink, slots: list[tuple[int, list[Part]]], markers: list[str]
    ) -> list[object]:
        """Kill ``old`` on ``addr`` and read the markers there; after a failover, read those
        of slots that moved on their new master (the old one's late writes are dropped)."""
        try:
            link = await self._node(addr).get()
            return await kill_and_read(link, old, markers)
        except FAILURES:
            self._node(addr).close()
            await self._load_map(force=True)
            if all(self._owner(slot) == addr for slot, _ in slots):
                raise
        found: list[object] = []
        for (slot, _), marker in zip(slots, markers, strict=True):
            owner = self._owner(slot)
            if owner == addr:
                raise ConnectionError(f"master {addr[0]}:{addr[1]} out of reach")
            link = await self._node(owner).get()
            (reply,) = await link.request(self.layout.pack_get(marker), 1)
            if isinstance(reply, ReplyError):
                raise CommandError(str(reply))
            found.append(reply)
        return found

    def _failed(self, exc: BaseException) -> StoreError:
        if not isinstance(exc, CommandError):
            self._reload_map = True  # a master failed: a replica may take over its slots
        return store_error(f"cluster {self._name}", exc)

    # -- reads -----------------------------------------------------------------------------

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours((hour,)))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        """One pipelined request per master holding shards of the hours, all at once; sum."""
        await self._ready()
        layout = self.layout
        try:
            for attempt in (1, 2):
                by_node: dict[Node, list[tuple[int, int]]] = {}
                for hour in hours:
                    for shard in range(layout.shards):
                        owner = self._owner(self._slot(hour, shard))
                        by_node.setdefault(owner, []).append((hour, shard))
                replies = await asyncio.gather(
                    *(self._read_node(addr, pairs) for addr, pairs in by_node.items())
                )
                errors = [str(r) for rs in replies for r in rs if isinstance(r, ReplyError)]
                if not errors:
                    totals = dict.fromkeys(hours, HourCounts())
                    for pairs, rs in zip(by_node.values(), replies, strict=True):
                        for i, (hour, _) in enumerate(pairs):
                            totals[hour] += layout.sum_replies(rs[2 * i : 2 * i + 2])
                    return [totals[hour] for hour in hours]
                if attempt == 2 or not all(e.startswith(REDIRECTS) for e in errors):
                    raise CommandError(errors[0])
                await self._load_map(force=True)  # slots moved: reload the map
        except FAILURES as exc:
            raise self._failed(exc) from None
        raise AssertionError("unreachable")

    async def _read_node(self, addr: Node, pairs: list[tuple[int, int]]) -> list[Any]:
        commands = self.layout.read_commands(pairs)
        link = await self._node(addr).get()
        return await link.request(b"".join(commands), len(commands))

    async def hours(self) -> list[int]:
        await self._ready()
        try:
            (raw,) = await self._on_key(self.layout.hours_key, [self.layout.hours_command()])
        except FAILURES as exc:
            raise self._failed(exc) from None
        return self.layout.kept_hours(raw)

    # -- removing hours (tapad delete) ----------------------------------------------------

    async def delete_hours(
        self, hours: Sequence[int], progress: Callable[[int], None] | None = None
    ) -> int:
        """Remove every key of ``hours``; return the hours that had any. As on one Redis
        (``RedisStore.delete_hours``), but a transaction cannot span slots: each hour is
        removed with one MULTI/EXEC per slot holding its keys (per shard), every master's
        at once. A SCAN of every master finds the keys first."""
        done = progress or (lambda _: None)
        await self._ready()
        layout = self.layout
        wanted = set(hours)
        found: dict[int, set[bytes]] = {}
        try:
            for addr in self._masters():
                await scan_hours(await self._node(addr).get(), layout, wanted, found)
            (raw,) = await self._on_key(
                layout.hours_key, [pack(("ZRANGE", layout.hours_key, 0, -1))]
            )
        except FAILURES as exc:
            raise self._failed(exc) from None
        todo = sorted(set(found) | ({int(h) for h in raw} & wanted))
        done(len(wanted) - len(todo))
        for hour in todo:
            keys = found.get(hour, set()) | {k.encode() for k in layout.known_keys(hour)}
            by_slot: dict[int, list[bytes]] = {}
            for key in keys:
                by_slot.setdefault(key_slot(key), []).append(key)
            by_node: dict[Node, list[bytes]] = {}
            for slot, slot_keys in by_slot.items():
                by_node.setdefault(self._owner(slot), []).extend(
                    [MULTI, *layout.delete_commands(slot_keys), EXEC]
                )
            try:
                for replies in await asyncio.gather(
                    *(self._request(addr, commands) for addr, commands in by_node.items())
                ):
                    errors = [r for r in replies if isinstance(r, ReplyError)]
                    if errors:
                        raise CommandError(str(errors[0]))
                await self._on_key(layout.hours_key, [layout.unindex_command(hour)])
            except FAILURES as exc:
                raise self._failed(exc) from None
            done(1)
        return len(todo)

    async def _request(self, addr: Node, commands: list[bytes]) -> list[Any]:
        link = await self._node(addr).get()
        return await link.request(b"".join(commands), len(commands))

    async def ping(self) -> None:
        await self._ready()
        assert self._owners is not None
        try:
            await asyncio.gather(*(self._node(a).call("PING") for a in set(self._owners)))
        except FAILURES as exc:
            raise self._failed(exc) from None
        if self.fault is not None:
            raise StoreError(self.fault)

    async def uniques(self, hours: Sequence[int]) -> UniqueCount:
        """Per master, on a link of its own (tapad/store/redis/uniques.py)."""
        await self._ready()
        try:
            return await uniques.count_uniques(
                _ClusterCounting(self), self.layout, hours, self._exact_limit, secrets.token_hex(8)
            )
        except FAILURES as exc:
            self._reload_map = True  # a slot moved or a master failed: read the map again
            raise store_error(f"cluster {self._name}", exc) from None

    def _counting_link(self, key: str) -> NodeLink:
        addr = self._owner(key_slot(key.encode()))
        node = self._counting.get(addr)
        if node is None:
            node = self._counting[addr] = NodeLink(self._seed.at(*addr), self._timeout)
        return node

    async def close(self) -> None:
        if self._guard is not None:
            await self._guard.stop()
        for node in [*self._nodes.values(), *self._counting.values()]:
            node.close()
        self._nodes.clear()
        self._counting.clear()


class _ClusterCounting:
    """``uniques.Counting`` on a cluster: each key's commands on its master's counting link;
    a shard's sketches are merged in the shard's own slot where the layout has tags."""

    def __init__(self, store: ClusterStore) -> None:
        self._store = store

    async def each(self, keys: Sequence[str], *command: Any) -> list[Any]:
        name, *args = command
        by_node: dict[NodeLink, list[int]] = {}
        for i, key in enumerate(keys):
            by_node.setdefault(self._store._counting_link(key), []).append(i)

        async def on_node(node: NodeLink, indexes: list[int]) -> list[Any]:
            replies: list[Any] = []
            for step in uniques.steps(indexes, uniques.KEYS_STEP):
                link = await node.get()
                replies += await uniques.request(link, [(name, keys[i], *args) for i in step])
            return replies

        found = await asyncio.gather(*(on_node(n, ix) for n, ix in by_node.items()))
        replies: list[Any] = [None] * len(keys)
        for indexes, values in zip(by_node.values(), found, strict=True):
            for i, value in zip(indexes, values, strict=True):
                replies[i] = value
        return replies

    async def on(self, key: str, commands: list[uniques.Command]) -> list[Any]:
        link = await self._store._counting_link(key).get()
        return await uniques.request(link, commands)

    def merge_key(self, shard: int, token: str) -> tuple[str, bool]:
        layout = self._store.layout
        if layout.tags is not None:  # every hour of the shard in the tag's slot
            return f"{layout.prefix}{{{layout.tags[shard]}}}:uniques:{token}", True
        return f"{layout.prefix}{{uniques.{token}.{shard}}}", False


class _Outcome:
    """What became of one batch's (hour, shard) parts."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # loop time by which parts in doubt must be settled
        self.applied: set[tuple[int, int]] = set()
        self.unknown: set[tuple[int, int]] = set()
        self.failed: set[tuple[int, int]] = set()  # known not applied
        self.duplicates: set[int] = set()  # positions of events whose id was known
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.error is None or isinstance(exc, StoreFault):
            self.error = exc

    def not_sent(self, slots: dict[int, list[Part]]) -> None:
        self.failed.update(_pairs(slots.items()))
        if slots and self.error is None:
            self.error = CommandError("TRYAGAIN slots kept moving; retry later")


def _pairs(slots: Any) -> list[tuple[int, int]]:
    return [(h, s) for _, items in slots for h, s, _ in items]
