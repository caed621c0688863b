"""Redis Cluster store: the hot current hour spread over the cluster's masters.

Same keys as the single-Redis store (``tapad.store.redis.KeyLayout``), 16 shards
an hour by default: each user falls in one shard (crc32 of the name), and the two
keys of one (hour, shard) share a hash tag, so they live in one slot on one node.

A batch is split by slot; each slot's part is one MULTI/EXEC on the master that
owns the slot. All the slots of one master go in one round trip (transactions
pipelined), and the masters are written concurrently. So an event (its user and
its count) is applied all or nothing, and the write load of the current hour is
spread over the masters. A slot that moved (MOVED/ASK/TRYAGAIN: its transaction
was refused whole) is sent once more after reloading the slot map.

A batch as a whole is not atomic across masters. Every master of a batch is
connected to before anything is sent, so a master that is down (connection
refused) fails the batch with nothing recorded anywhere; but a master that fails
while the batch is in flight (timeout, reset) leaves the events of the other
masters' slots recorded although the whole batch is answered 503 (see
docs/scaling.md).

A GET reads every shard of the hour, one pipeline per master, and sums: exact in
``exact`` mode, because a user is always counted in the same shard.

``tapad:hours`` and ``tapad:layout`` are single keys on one node each. The hours
index is written before the shard data, so an indexed hour may read zeros for a
moment, but an hour with data is always indexed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from tapad.store.base import Event, HourCounts, PartialWrite, StoreConfigError, StoreError
from tapad.store.redis import EXEC, MULTI, KeyLayout, describe
from tapad.store.resp import RedisLink, ReplyError
from tapad.store.url import StoreSettings

# Replies after which a slot's commands were certainly not applied: safe to send once more
# after reloading the slot map (the slot moved, or is migrating).
REDIRECTS = ("MOVED ", "ASK ", "TRYAGAIN ")
FAILURES = (
    redis_errors.RedisError,
    redis_errors.RedisClusterException,
    OSError,
    TimeoutError,
)


class ClusterStore:
    """A Redis Cluster shared by any number of tapad servers."""

    def __init__(
        self,
        settings: StoreSettings,
        *,
        timeout: float = 1.0,
        shards: int | None = None,
        unique: str | None = None,
        retention_hours: int | None = None,
        max_connections: int = 64,
    ) -> None:
        if not settings.hosts:
            raise StoreConfigError(f"store URL {settings.redacted()!r} names no cluster node")
        self.layout = KeyLayout(
            settings.prefix, shards, unique, default_shards=16, retention_hours=retention_hours
        )
        self._timeout = timeout
        self._name = settings.redacted()
        userinfo = urlsplit(settings.url)
        self._auth = {
            "username": unquote(userinfo.username) if userinfo.username else None,
            "password": unquote(userinfo.password) if userinfo.password else None,
        }
        self._max_connections = max_connections
        # Reads, pings and the idempotent index/layout writes go through the cluster client,
        # which follows redirections; one retry at most, all within ``timeout``.
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.hosts],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            max_connections=max_connections,
            **self._auth,
        )
        # The hot path (shard writes and reads) talks to each master over one pipelined link
        # (tapad.store.resp), commands packed by hiredis; never retried after a lost reply.
        self._pools: dict[tuple[str, int], BlockingConnectionPool] = {}
        self._links: dict[tuple[str, int], RedisLink] = {}
        self._link_lock = asyncio.Lock()
        self._reload_map = False  # a master failed: it may have been replaced (failover)
        self._indexed: set[int] = set()  # hours this process already put in the index
        self._layout_checked = False

    @property
    def unique_mode(self) -> str:
        return self.layout.unique

    async def _call(self, coro):
        """Bound every store call in time and turn every Redis failure into StoreError."""
        try:
            async with asyncio.timeout(self._timeout):
                if not self._layout_checked:
                    await self.layout.check(self._cluster)
                    self._layout_checked = True
                return await coro
        except StoreConfigError:
            coro.close()
            raise
        except FAILURES as exc:
            coro.close()
            if not isinstance(exc, redis_errors.ResponseError):
                self._drop_links()  # timed out or broken: never reuse a half-read reply stream
                self._reload_map = True
            raise StoreError(f"redis cluster {self._name}: {describe(exc)}") from None

    def _node_of(self, slot: int) -> tuple[str, int]:
        node = self._cluster.nodes_manager.get_node_from_slot(slot)
        return (node.host, node.port)

    async def _link(self, node: tuple[str, int]) -> RedisLink:
        link = self._links.get(node)
        if link is None or link.closed:
            async with self._link_lock:
                link = self._links.get(node)
                if link is None or link.closed:
                    pool = self._pools.get(node)
                    if pool is None:
                        pool = self._pools[node] = BlockingConnectionPool(
                            host=node[0],
                            port=node[1],
                            max_connections=self._max_connections,
                            timeout=self._timeout,
                            socket_timeout=self._timeout,
                            socket_connect_timeout=self._timeout,
                            **self._auth,
                        )
                    link = self._links[node] = await RedisLink.open(pool.make_connection())
        return link

    def _drop_links(self) -> None:
        links, self._links = self._links, {}
        for link in links.values():
            link.close()

    async def _ready(self) -> None:
        if self._cluster._initialize:  # the slot map is loaded lazily
            await self._cluster.initialize()
        elif self._reload_map:  # after a failure: a replica may have taken over the slots
            await self._cluster.nodes_manager.initialize()
        self._reload_map = False

    async def connect(self) -> None:
        await self._call(self._ping())

    async def write(self, events: Sequence[Event]) -> None:
        """Every master's part at once; if one fails, raise PartialWrite naming the parts the
        others committed (if any), so their POSTs are not answered 503 and retried twice."""
        committed: set[tuple[int, int]] = set()
        try:
            await self._call(self._write(events, committed))
        except StoreError as exc:
            if committed:
                raise PartialWrite(str(exc), committed, self.layout.shard_of) from None
            raise

    async def _write(self, events: Sequence[Event], committed: set[tuple[int, int]]) -> None:
        layout = self.layout
        parts = layout.split(events)
        new_hours = {str(hour): hour for hour, _ in parts if hour not in self._indexed}
        if new_hours:  # first: an hour with data must be in the index (for tally)
            await self._cluster.zadd(layout.hours_key, new_hours)
            if layout.retention:
                await self._cluster.execute_command(*layout.trim_hours_command())
            self._indexed.update(new_hours.values())
        pending: dict[int, list[tuple[int, int, tuple[set[str], int, int]]]] = {}
        for (hour, shard), part in parts.items():
            slot = key_slot(layout.users_key(hour, shard).encode())
            pending.setdefault(slot, []).append((hour, shard, part))
        await self._ready()
        for attempt in (1, 2):
            by_node: dict[tuple[str, int], list[tuple[int, list]]] = {}
            for slot, items in pending.items():
                by_node.setdefault(self._node_of(slot), []).append((slot, items))
            # Connect to every master of the batch before sending anything: a master that is
            # down (connection refused) fails the batch with nothing recorded on the others.
            links = await asyncio.gather(*(self._link(node) for node in by_node))
            results = await asyncio.gather(
                *(
                    self._write_node(link, slots, committed)
                    for link, slots in zip(links, by_node.values(), strict=True)
                ),
                return_exceptions=True,
            )
            moved: dict[int, list] = {}
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                moved.update(result)
            layout.expired(
                [
                    (h, s)
                    for slot, items in pending.items()
                    if slot not in moved
                    for h, s, _ in items
                ]
            )
            if not moved:
                return
            if attempt == 2:
                raise redis_errors.TryAgainError("slots kept moving; retry later")
            await self._cluster.nodes_manager.initialize()  # slots moved: reload the map
            pending = moved

    async def _write_node(
        self, link: RedisLink, slots: list[tuple[int, list]], committed: set[tuple[int, int]]
    ) -> dict[int, list]:
        """Every slot of one master in one round trip: MULTI ... EXEC per slot, pipelined.

        Adds the (hour, shard) parts it committed to ``committed`` as soon as the reply is
        in, so they are known even if another master's part fails or times out. Returns the
        slots whose transaction was refused because the slot had moved: not applied at all,
        so safe to send again. Any other failure raises.
        """
        layout = self.layout
        pack = hiredis.pack_command
        commands: list[bytes] = []
        spans = []
        for _slot, items in slots:
            begin = len(commands)
            commands.append(MULTI)
            for hour, shard, part in items:
                commands += layout.write_commands(hour, shard, *part)
            for hour, shard in layout.expiries((h, s) for h, s, _ in items):
                commands += [pack(cmd) for cmd in layout.expire_commands(hour, shard)]
            commands.append(EXEC)
            spans.append((begin, len(commands) - 1))
        replies = await link.request(b"".join(commands), len(commands))
        moved: dict[int, list] = {}
        for (slot, items), (begin, end) in zip(slots, spans, strict=True):
            result = replies[end]
            if isinstance(result, list):
                for reply in result:  # applied, but a command failed (e.g. a wrong key type)
                    if isinstance(reply, ReplyError):
                        raise redis_errors.ResponseError(str(reply))
                committed.update((hour, shard) for hour, shard, _ in items)
                continue
            # EXECABORT: a queued command was refused and nothing of this slot applied.
            causes = [r for r in replies[begin:end] if isinstance(r, ReplyError)]
            cause = str(causes[0] if causes else result)
            if cause.startswith(REDIRECTS):
                moved[slot] = items
            else:
                raise redis_errors.ResponseError(cause)
        return moved

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours((hour,)))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        return await self._call(self._read(hours))

    async def _read(self, hours: Sequence[int]) -> list[HourCounts]:
        """One pipelined request per master holding shards of the hours, all at once; sum."""
        await self._ready()
        layout = self.layout
        for attempt in (1, 2):
            by_node: dict[tuple[str, int], list[tuple[int, int]]] = {}
            for hour in hours:
                for shard in range(layout.shards):
                    slot = key_slot(layout.users_key(hour, shard).encode())
                    by_node.setdefault(self._node_of(slot), []).append((hour, shard))
            replies = await asyncio.gather(
                *(self._read_node(node, pairs) for node, pairs in by_node.items())
            )
            errors = [str(r) for rs in replies for r in rs if isinstance(r, ReplyError)]
            if not errors:
                totals = dict.fromkeys(hours, HourCounts())
                for pairs, rs in zip(by_node.values(), replies, strict=True):
                    for i, (hour, _) in enumerate(pairs):
                        totals[hour] += layout.sum_replies(rs[2 * i : 2 * i + 2])
                return [totals[hour] for hour in hours]
            if attempt == 2 or not all(e.startswith(REDIRECTS) for e in errors):
                raise redis_errors.ResponseError(errors[0])
            await self._cluster.nodes_manager.initialize()  # slots moved: reload the map
        raise AssertionError("unreachable")

    async def _read_node(self, node: tuple[str, int], pairs: list[tuple[int, int]]) -> list:
        commands = self.layout.read_commands(pairs)
        link = await self._link(node)
        return await link.request(b"".join(commands), len(commands))

    async def hours(self) -> list[int]:
        raw = await self._call(self._cluster.zrevrange(self.layout.hours_key, 0, -1))
        return [int(h) for h in raw if self.layout.kept(int(h))]

    async def ping(self) -> None:
        await self._call(self._ping())

    async def _ping(self) -> None:
        await self._ready()
        await self._cluster.ping(target_nodes=RedisCluster.PRIMARIES)

    async def close(self) -> None:
        self._drop_links()
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
        await self._cluster.aclose()
