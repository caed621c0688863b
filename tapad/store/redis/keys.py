"""The key schema of the Redis stores (single and cluster): per (hour, shard) a set of users
and a hash of counts.

Keys of one (hour, shard) share a hash tag, so on a Redis Cluster each shard's part of a
batch lands in one slot and is applied atomically there. Two schemes:

- ``tapad:{491234.3}:u`` and ``tapad:{491234.3}:n``: the tag is the (hour, shard), so each
  hour's shards fall in slots spread at random. A single Redis, and every cluster store
  created before the tags below.
- ``tapad:{s3.17}:491234:u`` and ``tapad:{s3.17}:491234:n``: one tag per shard, written in
  the layout (``tags``) when a cluster store is created, each chosen so that its slot was
  owned by a different master then (shard i on the i-th master, round robin). Every hour of
  a shard shares its slot, so a batch is one transaction per shard, and with as many shards
  as masters (the default for a new cluster store) one per master, however many hours it
  holds.

``tapad:hours`` indexes the hours that have data (for ``tally``). The layout (shard count,
unique-users mode, retention, and the tags if any) is written once to ``tapad:layout``; a
server with other values refuses to start rather than silently disagree. With a retention
of R hours, both keys of an hour expire R hours after the hour ends (EXPIREAT, sent once per
(hour, shard) by each process). Commit markers (see ``tapad.store.redis.link``) are short-lived
keys next to the data they vouch for.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from tapad.store.base import Event, HourCounts, StoreConfigError, aggregate
from tapad.store.redis.protocol import pack

UNIQUE_MODES = ("exact", "hll")
MULTI = pack(("MULTI",))
EXEC = pack(("EXEC",))
MARKER_MARGIN = 60  # seconds a commit marker outlives the commit deadline


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
        # One hash tag per shard (the tagged scheme), or None: {hour.shard} tags.
        self.tags: list[str] | None = None
        self.unique = unique or "exact"
        self.retention = retention_hours or 0  # hours kept after an hour ends; 0: for ever
        self.hours_key = f"{prefix}hours"
        self.layout_key = f"{prefix}layout"
        self._expiring: set[tuple[int, int]] = set()  # (hour, shard) whose EXPIREAT was sent

    def shard_of(self, user: str) -> int:
        if self.shards == 1:
            return 0
        return zlib.crc32(user.encode("utf-8", "surrogatepass")) % self.shards

    def tag(self, hour: int, shard: int) -> str:
        """The hash tag of an (hour, shard)'s keys: which slot they live in."""
        if self.tags is not None:
            return self.tags[shard]
        return f"{hour}.{shard}"

    def users_key(self, hour: int, shard: int) -> str:
        if self.tags is not None:
            return f"{self.prefix}{{{self.tags[shard]}}}:{hour}:u"
        return f"{self.prefix}{{{hour}.{shard}}}:u"

    def counts_key(self, hour: int, shard: int) -> str:
        if self.tags is not None:
            return f"{self.prefix}{{{self.tags[shard]}}}:{hour}:n"
        return f"{self.prefix}{{{hour}.{shard}}}:n"

    def split(self, events: Sequence[Event]) -> dict[tuple[int, int], tuple[set[str], int, int]]:
        """Fold a batch per (hour, shard): users, clicks, impressions."""
        return aggregate(events, self.shard_of if self.shards > 1 else None)

    def deadline(self, hour: int) -> int:
        """Unix time at which an hour's keys expire: ``retention`` hours after it ends."""
        return (hour + 1 + self.retention) * 3600

    def kept(self, hour: int) -> bool:
        return not self.retention or self.deadline(hour) > time.time()

    def expiries(self, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
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
    def sum_replies(replies: list[Any]) -> HourCounts:
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
        count = "PFCOUNT" if self.unique == "hll" else "SCARD"
        commands = []
        for hour, shard in pairs:
            commands.append(pack((count, self.users_key(hour, shard))))
            commands.append(pack(("HMGET", self.counts_key(hour, shard), "c", "i")))
        return commands

    def check_commands(self) -> list[bytes]:
        """Write our layout where the store has none, then read the store's (one round trip)."""
        return [
            pack(("HSETNX", self.layout_key, "shards", str(self.shards))),
            pack(("HSETNX", self.layout_key, "unique", self.unique)),
            pack(("HSETNX", self.layout_key, "retention", str(self.retention))),
            pack(("HGETALL", self.layout_key)),
        ]

    def hours_command(self) -> bytes:
        return pack(("ZREVRANGE", self.hours_key, 0, -1))

    def kept_hours(self, raw: list[bytes]) -> list[int]:
        """The hours of a ZREVRANGE of the index, without those past the retention."""
        return [int(h) for h in raw if self.kept(int(h))]

    def index_command(self, hours: Iterable[int]) -> bytes:
        """Put hours in the hours index (scores are hours)."""
        zadd: list[object] = ["ZADD", self.hours_key]
        for hour in hours:
            zadd += (hour, str(hour))
        return pack(tuple(zadd))

    def marker_key(self, token: str, tag: str | None = None) -> str:
        """A link's commit marker; on a cluster, next to the part it vouches for (its hash
        ``tag``, so in the same slot and transaction)."""
        if tag is None:
            return f"{self.prefix}commit:{token}"
        return f"{self.prefix}commit:{{{tag}}}:{token}"

    @staticmethod
    def marker_command(key: str, seq: int, commit_deadline: float) -> bytes:
        ttl = int(commit_deadline) + MARKER_MARGIN
        return pack(("SET", key, seq, "EX", ttl))

    def pack_expire(self, hour: int, shard: int) -> list[bytes]:
        return [pack(cmd) for cmd in self.expire_commands(hour, shard)]

    def pack_trim(self) -> bytes:
        return pack(self.trim_hours_command())

    @staticmethod
    def pack_get(key: str) -> bytes:
        return pack(("GET", key))
