"""Redis store: per (hour, shard) a set of users and a hash of counts.

Keys of one (hour, shard) share a hash tag, ``tapad:{491234.3}:u`` and
``tapad:{491234.3}:n``, so on a Redis Cluster each shard's part of a batch lands
on one node and is applied atomically there; on a single Redis the whole batch is
one MULTI/EXEC. ``tapad:hours`` indexes the hours that have data (for ``tally``).
The layout (shard count, unique-users mode, retention) is written once to
``tapad:layout``; a server with other values refuses to start rather than silently
disagree. With a retention of R hours, both keys of an hour expire R hours after
the hour ends (EXPIREAT, sent once per (hour, shard) by each process).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tapad.store.base import Event, HourCounts, StoreConfigError, StoreError, aggregate
from tapad.store.resp import RedisLink, ReplyError
from tapad.store.url import StoreSettings

UNIQUE_MODES = ("exact", "hll")
MULTI = hiredis.pack_command(("MULTI",))
EXEC = hiredis.pack_command(("EXEC",))
TAPAD_OPTIONS = ("prefix",)  # query options tapad reads itself; redis-py must not see them


class KeyLayout:
    """Where an event goes: which shard, which keys. Shared by the single and cluster stores."""

    def __init__(
        self,
        prefix: str,
        shards: int | None,
        unique: str | None,
        default_shards: int,
        retention_hours: int | None = None,
    ) -> None:
        """Check the asked-for values here, once for the single and the cluster store."""
        if unique is not None and unique not in UNIQUE_MODES:
            raise StoreConfigError(f"unique users mode {unique!r}: use exact or hll")
        if shards is not None and shards < 1:
            raise StoreConfigError("shards must be at least 1")
        if retention_hours is not None and retention_hours < 1:
            raise StoreConfigError("retention must be at least 1 hour")
        self.prefix = prefix
        # None means "whatever the store was set up with" (or the default for a new store).
        self.asked = {
            "shards": None if shards is None else str(shards),
            "unique": unique,
            "retention": None if retention_hours is None else str(retention_hours),
        }
        self.shards = shards or default_shards
        self.unique = unique or "exact"
        self.retention = retention_hours or 0  # hours kept after an hour ends; 0: for ever
        self.hours_key = f"{prefix}hours"
        self.layout_key = f"{prefix}layout"
        self._expiring: set[tuple[int, int]] = set()  # (hour, shard) whose EXPIREAT was sent

    def shard_of(self, user: str) -> int:
        if self.shards == 1:
            return 0
        return zlib.crc32(user.encode("utf-8", "surrogatepass")) % self.shards

    def users_key(self, hour: int, shard: int) -> str:
        return f"{self.prefix}{{{hour}.{shard}}}:u"

    def counts_key(self, hour: int, shard: int) -> str:
        return f"{self.prefix}{{{hour}.{shard}}}:n"

    def split(self, events: Sequence[Event]) -> dict[tuple[int, int], tuple[set[str], int, int]]:
        """Fold a batch per (hour, shard): users, clicks, impressions."""
        return aggregate(events, self.shard_of if self.shards > 1 else None)

    def deadline(self, hour: int) -> int:
        """Unix time at which an hour's keys expire: ``retention`` hours after it ends."""
        return (hour + 1 + self.retention) * 3600

    def kept(self, hour: int) -> bool:
        return not self.retention or self.deadline(hour) > time.time()

    def expiries(self, pairs) -> list[tuple[int, int]]:
        """The (hour, shard) pairs of a batch whose keys still need their EXPIREAT.

        An hour past its deadline always gets it again: its keys expired and a late event
        would create them anew, without a TTL, if the EXPIREAT were skipped.
        """
        if not self.retention:
            return []
        return [p for p in pairs if p not in self._expiring or not self.kept(p[0])]

    def expire_commands(self, hour: int, shard: int) -> list[tuple[str, str, int]]:
        deadline = self.deadline(hour)
        return [
            ("EXPIREAT", self.users_key(hour, shard), deadline),
            ("EXPIREAT", self.counts_key(hour, shard), deadline),
        ]

    def trim_hours_command(self) -> tuple[str, str, str, str]:
        """Drop expired hours from the hours index (scores are hours)."""
        oldest_kept = int(time.time()) // 3600 - self.retention
        return ("ZREMRANGEBYSCORE", self.hours_key, "-inf", f"({oldest_kept}")

    def expired(self, pairs: list[tuple[int, int]]) -> None:
        """Remember pairs whose EXPIREAT is applied (a key past its deadline is gone: resend)."""
        if len(self._expiring) > 100_000:
            self._expiring = {p for p in self._expiring if self.kept(p[0])}
        self._expiring.update(p for p in pairs if self.kept(p[0]))

    @staticmethod
    def sum_replies(replies: list) -> HourCounts:
        """One hour's counts from its shards' (count, HMGET) reply pairs."""
        users = clicks = imps = 0
        for i in range(0, len(replies), 2):
            users += replies[i]
            c, n = replies[i + 1]
            clicks += int(c or 0)
            imps += int(n or 0)
        return HourCounts(users, clicks, imps)

    def write_commands(
        self, hour: int, shard: int, users: set[str], clicks: int, impressions: int
    ) -> list[bytes]:
        """One (hour, shard) part of a batch: add its users, count its clicks and impressions."""
        pack = hiredis.pack_command
        add = "PFADD" if self.unique == "hll" else "SADD"
        commands = [pack((add, self.users_key(hour, shard), *users))]
        counts = self.counts_key(hour, shard)
        if clicks:
            commands.append(pack(("HINCRBY", counts, "c", clicks)))
        if impressions:
            commands.append(pack(("HINCRBY", counts, "i", impressions)))
        return commands

    def read_commands(self, pairs: Sequence[tuple[int, int]]) -> list[bytes]:
        """A (count, HMGET) command pair for each (hour, shard)."""
        pack = hiredis.pack_command
        count = "PFCOUNT" if self.unique == "hll" else "SCARD"
        commands = []
        for hour, shard in pairs:
            commands.append(pack((count, self.users_key(hour, shard))))
            commands.append(pack(("HMGET", self.counts_key(hour, shard), "c", "i")))
        return commands

    async def check(self, client) -> None:
        """Adopt the store's layout, writing ours first if it has none; refuse a mismatch."""
        await client.hsetnx(self.layout_key, "shards", str(self.shards))
        await client.hsetnx(self.layout_key, "unique", self.unique)
        await client.hsetnx(self.layout_key, "retention", str(self.retention))
        raw = await client.hgetall(self.layout_key)
        theirs = {k.decode(): v.decode() for k, v in raw.items()}
        for name, value in self.asked.items():
            if value is not None and theirs.get(name) != value:
                raise StoreConfigError(
                    f"the store was set up with shards={theirs.get('shards')} "
                    f"unique={theirs.get('unique')} retention={theirs.get('retention')} "
                    f"(hours; 0: for ever), this server asks for {name}={value}: "
                    "start it with the store's values, or use another key prefix (?prefix=)"
                )
        self.shards = int(theirs["shards"])
        self.unique = theirs["unique"]
        self.retention = int(theirs["retention"])


def client_url(settings: StoreSettings) -> str:
    """The URL without tapad's own query options, for redis-py."""
    parts = urlsplit(settings.url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in TAPAD_OPTIONS
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


class RedisStore:
    """One Redis server (or a replica set's primary) shared by any number of tapad servers."""

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
        self.layout = KeyLayout(
            settings.prefix, shards, unique, default_shards=1, retention_hours=retention_hours
        )
        self._timeout = timeout
        self._name = settings.redacted()
        try:
            pool = BlockingConnectionPool.from_url(
                client_url(settings),
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        except (ValueError, TypeError) as exc:
            raise StoreConfigError(f"store URL {self._name!r}: {exc}") from None
        # No retries inside redis-py: a write retried after a lost reply could apply twice.
        self._redis = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._pool = pool
        # The hot path (batches and coalesced reads) talks over one pipelined link; redis-py
        # makes its connection and serves everything else (layout, hours, ping).
        self._link: RedisLink | None = None
        self._link_lock = asyncio.Lock()
        self._layout_checked = False

    async def _call(self, coro):
        """Bound a call in time and turn every Redis failure into StoreError (the slow path:
        connecting, checking the layout, and everything redis-py does)."""
        try:
            async with asyncio.timeout(self._timeout):
                if not self._layout_checked:
                    await self.layout.check(self._redis)
                    self._layout_checked = True
                return await coro
        except StoreConfigError:
            coro.close()
            raise
        except (redis_errors.RedisError, OSError) as exc:
            coro.close()
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> StoreError:
        """The StoreError for ``exc``; a link that timed out or broke is never reused."""
        if not isinstance(exc, redis_errors.ResponseError):
            self._drop_link()  # a half-read reply stream can't be trusted
        return StoreError(f"redis {self._name}: {describe(exc)}")

    def _ready_link(self) -> RedisLink | None:
        """The open link, once the layout is checked: then a call needs nothing but the link,
        whose own timer bounds it (see resp.py)."""
        link = self._link
        if link is None or link.error is not None or not self._layout_checked:
            return None
        return link

    async def _get_link(self) -> RedisLink:
        link = self._link
        if link is None or link.closed:
            async with self._link_lock:
                link = self._link
                if link is None or link.closed:
                    link = self._link = await RedisLink.open(
                        self._pool.make_connection(), self._timeout
                    )
        return link

    def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    @property
    def unique_mode(self) -> str:
        return self.layout.unique

    async def connect(self) -> None:
        await self._call(self._redis.ping())

    async def write(self, events: Sequence[Event]) -> None:
        """One MULTI/EXEC per batch, packed in C and sent in one write."""
        link = self._ready_link()
        if link is None:
            await self._call(self._write(events))
            return
        packed, replies, expire = self._write_request(events)
        try:
            check_exec(await link.request(packed, replies))
        except (redis_errors.RedisError, OSError) as exc:
            raise self._failed(exc) from None
        self.layout.expired(expire)

    async def _write(self, events: Sequence[Event]) -> None:
        packed, replies, expire = self._write_request(events)
        link = await self._get_link()
        check_exec(await link.request(packed, replies))
        self.layout.expired(expire)

    def _write_request(self, events: Sequence[Event]) -> tuple[bytes, int, list[tuple[int, int]]]:
        layout = self.layout
        pack = hiredis.pack_command
        commands = [MULTI]
        hours: dict[int, str] = {}
        parts = layout.split(events)
        for (hour, shard), part in parts.items():
            commands += layout.write_commands(hour, shard, *part)
            hours[hour] = str(hour)
        zadd: list[object] = ["ZADD", layout.hours_key]
        for hour, member in hours.items():
            zadd += (hour, member)
        commands.append(pack(tuple(zadd)))
        expire = layout.expiries(parts)
        if expire:  # with a retention: once per (hour, shard) and process, not every batch
            for hour, shard in expire:
                commands += [pack(cmd) for cmd in layout.expire_commands(hour, shard)]
            commands.append(pack(layout.trim_hours_command()))
        commands.append(EXEC)
        return b"".join(commands), len(commands), expire

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours((hour,)))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        """Every shard of every hour asked in one MULTI/EXEC: one consistent snapshot."""
        link = self._ready_link()
        if link is None:
            return await self._call(self._read_hours(hours))
        try:
            replies = check_exec(await link.request(*self._read_request(hours)))
        except (redis_errors.RedisError, OSError) as exc:
            raise self._failed(exc) from None
        return self._counts(replies, len(hours))

    async def _read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        link = await self._get_link()
        replies = check_exec(await link.request(*self._read_request(hours)))
        return self._counts(replies, len(hours))

    def _read_request(self, hours: Sequence[int]) -> tuple[bytes, int]:
        shards = range(self.layout.shards)
        commands = [MULTI, *self.layout.read_commands([(h, s) for h in hours for s in shards])]
        commands.append(EXEC)
        return b"".join(commands), len(commands)

    def _counts(self, replies: list, hours: int) -> list[HourCounts]:
        per_hour = 2 * self.layout.shards
        sums = self.layout.sum_replies
        return [sums(replies[i * per_hour : (i + 1) * per_hour]) for i in range(hours)]

    async def hours(self) -> list[int]:
        raw = await self._call(self._redis.zrevrange(self.layout.hours_key, 0, -1))
        return [int(h) for h in raw if self.layout.kept(int(h))]

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def close(self) -> None:
        self._drop_link()
        await self._redis.aclose()


def check_exec(replies: list) -> list:
    """The EXEC reply of a MULTI ... EXEC, or ResponseError for any refused or failed command.

    A command refused while queueing (out of memory, wrong arguments) makes Redis discard
    the whole transaction (EXECABORT): nothing of the batch is applied.
    """
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise redis_errors.ResponseError(str(reply))
    result = replies[-1]
    if not isinstance(result, list):
        raise redis_errors.ResponseError(f"transaction not applied: {result!r}")
    for reply in result:
        if isinstance(reply, ReplyError):
            raise redis_errors.ResponseError(str(reply))
    return result


def describe(exc: BaseException) -> str:
    """One line about a Redis failure, without any password the URL may carry."""
    if isinstance(exc, TimeoutError | redis_errors.TimeoutError):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
