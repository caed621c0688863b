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

A batch as a whole is not atomic across masters: if one master fails, the events
in its slots are not recorded while those in healthy masters' slots are, and the
whole batch is answered 503 (see docs/scaling.md).

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

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from tapad.store.base import Event, HourCounts, StoreConfigError, StoreError
from tapad.store.redis import UNIQUE_MODES, KeyLayout, describe
from tapad.store.url import StoreSettings

# Errors after which a slot's transaction was certainly not applied: safe to retry once
# after refreshing the slot map (a slot moved, or is migrating).
REDIRECTS = (redis_errors.MovedError, redis_errors.AskError, redis_errors.TryAgainError)
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
        if unique is not None and unique not in UNIQUE_MODES:
            raise StoreConfigError(f"unique users mode {unique!r}: use exact or hll")
        if shards is not None and shards < 1:
            raise StoreConfigError("shards must be at least 1")
        if retention_hours is not None and retention_hours < 1:
            raise StoreConfigError("retention must be at least 1 hour")
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
        # Shard writes go through one plain client per master, without retries: a
        # transaction retried after a lost reply could be applied twice.
        self._nodes: dict[tuple[str, int], Redis] = {}
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
            raise StoreError(f"redis cluster {self._name}: {describe(exc)}") from None

    def _node_client(self, slot: int) -> Redis:
        node = self._cluster.nodes_manager.get_node_from_slot(slot)
        key = (node.host, node.port)
        client = self._nodes.get(key)
        if client is None:
            pool = BlockingConnectionPool(
                host=node.host,
                port=node.port,
                max_connections=self._max_connections,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                **self._auth,
            )
            client = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
            self._nodes[key] = client
        return client

    async def connect(self) -> None:
        await self._call(self._ping())

    async def write(self, events: Sequence[Event]) -> None:
        await self._call(self._write(events))

    async def _write(self, events: Sequence[Event]) -> None:
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
        if self._cluster._initialize:  # the slot map is loaded lazily
            await self._cluster.initialize()
        for attempt in (1, 2):
            by_node: dict[int, tuple[Redis, list[tuple[int, list]]]] = {}
            for slot, items in pending.items():
                client = self._node_client(slot)
                by_node.setdefault(id(client), (client, []))[1].append((slot, items))
            results = await asyncio.gather(
                *(self._write_node(client, slots) for client, slots in by_node.values()),
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

    async def _write_node(self, client: Redis, slots: list[tuple[int, list]]) -> dict[int, list]:
        """Every slot of one master in one round trip: MULTI ... EXEC per slot, pipelined.

        Returns the slots whose transaction was refused because the slot had moved: not
        applied at all, so safe to send again. Any other failure raises.
        """
        async with client.pipeline(transaction=False) as pipe:
            spans = []
            for _slot, items in slots:
                begin = len(pipe.command_stack)
                pipe.execute_command("MULTI")
                for hour, shard, (users, clicks, imps) in items:
                    self.layout.queue_write(pipe, hour, shard, users, clicks, imps)
                for hour, shard in self.layout.expiries((h, s) for h, s, _ in items):
                    for command in self.layout.expire_commands(hour, shard):
                        pipe.execute_command(*command)
                pipe.execute_command("EXEC")
                spans.append((begin, len(pipe.command_stack) - 1))
            replies = await pipe.execute(raise_on_error=False)
        moved: dict[int, list] = {}
        for (slot, items), (begin, end) in zip(slots, spans, strict=True):
            if not isinstance(replies[end], Exception):
                continue
            # EXECABORT: a queued command was refused and nothing of this slot applied.
            causes = [r for r in replies[begin:end] if isinstance(r, Exception)]
            cause = causes[0] if causes else replies[end]
            if isinstance(cause, REDIRECTS):
                moved[slot] = items
            else:
                raise cause
        return moved

    async def read(self, hour: int) -> HourCounts:
        return await self._call(self._read(hour))

    async def _read(self, hour: int) -> HourCounts:
        """One pipeline per master holding shards of the hour, all at once; sum the replies."""
        if self._cluster._initialize:
            await self._cluster.initialize()
        for attempt in (1, 2):
            by_node: dict[int, tuple[Redis, list[int]]] = {}
            for shard in range(self.layout.shards):
                client = self._node_client(key_slot(self.layout.users_key(hour, shard).encode()))
                by_node.setdefault(id(client), (client, []))[1].append(shard)
            try:
                replies = await asyncio.gather(
                    *(self._read_node(client, hour, shards) for client, shards in by_node.values())
                )
            except REDIRECTS:
                if attempt == 2:
                    raise
                await self._cluster.nodes_manager.initialize()
                continue
            total = HourCounts()
            for counts in replies:
                total += counts
            return total
        raise AssertionError("unreachable")

    async def _read_node(self, client: Redis, hour: int, shards: list[int]) -> HourCounts:
        async with client.pipeline(transaction=False) as pipe:
            for shard in shards:
                self.layout.queue_read(pipe, hour, shard)
            return self.layout.sum_replies(await pipe.execute())

    async def hours(self) -> list[int]:
        raw = await self._call(self._cluster.zrevrange(self.layout.hours_key, 0, -1))
        return [int(h) for h in raw if self.layout.kept(int(h))]

    async def ping(self) -> None:
        await self._call(self._ping())

    async def _ping(self) -> None:
        await self._cluster.ping(target_nodes=RedisCluster.PRIMARIES)

    async def close(self) -> None:
        for client in self._nodes.values():
            await client.aclose()
        self._nodes.clear()
        await self._cluster.aclose()
