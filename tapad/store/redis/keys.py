"""The key schema of the Redis stores (single and cluster): per (hour, shard) a set of users,
a hash of counts and, in ``exact`` mode, a HyperLogLog sketch of the same users.

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

The sketch (``...:h``, beside ``:u`` and ``:n`` under the same tag) is added to in the same
transaction as the set, so the two always hold the same users; it is what makes distinct
users over a long range cheap to estimate (docs/uniques.md). In ``hll`` mode the users key
is itself a HyperLogLog, and there is no separate sketch.

``tapad:hours`` indexes the hours that have data (for ``tally``). The layout (shard count,
unique-users mode, retention, and the tags if any) is written once to ``tapad:layout``; a
server with other values refuses to start rather than silently disagree. With a retention
of R hours, both keys of an hour expire R hours after the hour ends (EXPIREAT, sent once per
(hour, shard) by each process). Commit markers (see ``tapad.store.redis.link``) are short-lived
keys next to the data they vouch for.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, cast

from tapad.store.base import Event, HourCounts, StoreConfigError, aggregate
from tapad.store.redis.protocol import pack

UNIQUE_MODES = ("exact", "hll")
# One (hour, shard)'s events that carry ids, applied inside the batch's MULTI/EXEC: an
# event is counted only if its id is new for its hour and user (SADD answers 1). KEYS: the
# users, the counts, the ids and the users' sketch of the (hour, shard), one slot (the
# sketch is the users key itself in hll mode); ARGV: when the ids expire,
# "SADD" or "PFADD" for the users, then (position in the batch, user, c|i, id) per event.
# Returns the positions of the duplicates. EVAL, not EVALSHA: a NOSCRIPT inside EXEC would
# fail alone while the rest of the transaction applied; Redis caches the script anyway.
COUNT_NEW_IDS = """
local dups, users, clicks, imps = {}, {}, 0, 0
for i = 3, #ARGV, 4 do
  local user = ARGV[i + 1]
  if redis.call('SADD', KEYS[3], #user .. ':' .. user .. ARGV[i + 3]) == 1 then
    users[#users + 1] = user
    if ARGV[i + 2] == 'c' then clicks = clicks + 1 else imps = imps + 1 end
  else
    dups[#dups + 1] = tonumber(ARGV[i])
  end
end
for i = 1, #users, 1000 do
  redis.call(ARGV[2], KEYS[1], unpack(users, i, math.min(i + 999, #users)))
  if KEYS[4] ~= KEYS[1] then
    redis.call('PFADD', KEYS[4], unpack(users, i, math.min(i + 999, #users)))
  end
end
if clicks > 0 then redis.call('HINCRBY', KEYS[2], 'c', clicks) end
if imps > 0 then redis.call('HINCRBY', KEYS[2], 'i', imps) end
redis.call('EXPIREAT', KEYS[3], ARGV[1])
return dups
"""
# (position in the batch, user, click, id) of an event that carries an id
Tagged = tuple[int, str, bool, str]
# One (hour, shard)'s part of a batch: users and counts of the events without ids, and
# the events with ids (counted by COUNT_NEW_IDS).
Part = tuple[set[str], int, int, list[Tagged]]
MULTI = pack(("MULTI",))
EXEC = pack(("EXEC",))
DISCARD = pack(("DISCARD",))
MARKER_MARGIN = 60  # seconds a commit marker outlives the commit deadline
SCAN_COUNT = 1000  # keys Redis looks at per SCAN call
DEL_KEYS = 1000  # keys per DEL command inside an hour's transaction
# An hour's key after the prefix: {hour.shard}:... (untagged) or {tag}:hour:... (tagged).
# Anything else under the prefix (layout, hours index, commit markers) is no hour's.
_HOUR_KEY = re.compile(rb"\{(?:(\d+)\.\d+\}|[^{}]*\}:(\d+):)")
_GLOB = re.compile(r"([*?\[\]\\])")


class KeyLayout:
    """Where an event goes: which shard, which keys. Shared by the single and cluster stores."""

    def __init__(
        self,
        prefix: str,
        shards: int | None,
        unique: str | None,
        default_shards: int,
        retention_hours: int | None = None,
        dedup_hours: int = 48,
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
        self.dedup_hours = dedup_hours  # hours an hour's ids are kept after it ends
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

    def ids_key(self, hour: int, shard: int) -> str:
        if self.tags is not None:
            return f"{self.prefix}{{{self.tags[shard]}}}:{hour}:d"
        return f"{self.prefix}{{{hour}.{shard}}}:d"

    def sketch_key(self, hour: int, shard: int) -> str:
        """The HyperLogLog of an (hour, shard)'s users: the users key itself in hll mode."""
        if self.unique == "hll":
            return self.users_key(hour, shard)
        if self.tags is not None:
            return f"{self.prefix}{{{self.tags[shard]}}}:{hour}:h"
        return f"{self.prefix}{{{hour}.{shard}}}:h"

    def split(self, events: Sequence[Event]) -> dict[tuple[int, int], Part]:
        """Fold a batch per (hour, shard): users, clicks, impressions of the events without
        ids; the events with ids, each with its position, to be counted if new."""
        shard_of = self.shard_of if self.shards > 1 else None
        tagged = [(i, e) for i, e in enumerate(events) if e.id is not None]
        if tagged:
            events = [e for e in events if e.id is None]
        parts: dict[tuple[int, int], Part] = {
            key: (users, clicks, imps, []) for key, (users, clicks, imps) in
            aggregate(events, shard_of).items()
        }  # fmt: skip
        for position, (hour, user, click, event_id) in tagged:
            key = (hour, shard_of(user) if shard_of is not None else 0)
            part = parts.get(key)
            if part is None:
                part = parts[key] = (set(), 0, 0, [])
            part[3].append((position, user, click, cast(str, event_id)))
        return parts

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
        commands = [
            ("EXPIREAT", self.users_key(hour, shard), deadline),
            ("EXPIREAT", self.counts_key(hour, shard), deadline),
        ]
        if self.unique == "exact":
            commands.append(("EXPIREAT", self.sketch_key(hour, shard), deadline))
        return commands

    def trim_hours_command(self) -> tuple[str, str, str, str]:
        """Drop expired hours from the hours index (scores are hours)."""
        oldest_kept = int(time.time()) // 3600 - self.retention
        return ("ZREMRANGEBYSCORE", self.hours_key, "-inf", f"({oldest_kept}")

    def expired(self, pairs: list[tuple[int, int]]) -> None:
        """Remember pairs whose EXPIREAT is applied (a key past its deadline is gone: resend)."""
        if len(self._expiring) > 100_000:
            self._expiring = {p for p in self._expiring if self.kept(p[0])}
        self._expiring.update(p for p in pairs if self.kept(p[0]))

    # -- removing hours (``tapad delete``) ----------------------------------------------

    def hour_keys_pattern(self) -> str:
        """A SCAN pattern matching every key of every hour (and only a few others), so one
        scan finds the keys of any hours, whatever they hold: users, counts, ids."""
        return _GLOB.sub(r"\\\1", self.prefix) + "{*"

    def hour_of_key(self, key: bytes) -> int | None:
        """The hour a key belongs to, or None for a key of no hour."""
        prefix = self.prefix.encode()
        if not key.startswith(prefix):
            return None
        match = _HOUR_KEY.match(key, len(prefix))
        if match is None:
            return None
        return int(match.group(1) or match.group(2))

    def known_keys(self, hour: int) -> list[str]:
        """The keys an hour's events are written to, in every shard (found or not by a scan)."""
        keys: list[str] = []
        for shard in range(self.shards):
            keys += (
                self.users_key(hour, shard),
                self.counts_key(hour, shard),
                self.ids_key(hour, shard),
                self.sketch_key(hour, shard),
            )
        return keys

    def delete_commands(self, keys: Sequence[str | bytes]) -> list[bytes]:
        """DEL commands for ``keys``, ``DEL_KEYS`` at a time (for inside a MULTI)."""
        ordered = list(keys)
        return [pack(("DEL", *ordered[i : i + DEL_KEYS])) for i in range(0, len(ordered), DEL_KEYS)]

    def unindex_command(self, hour: int) -> bytes:
        return pack(("ZREM", self.hours_key, str(hour)))

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
        self,
        hour: int,
        shard: int,
        users: set[str],
        clicks: int,
        impressions: int,
        tagged: Sequence[Tagged] = (),
    ) -> list[bytes]:
        """One (hour, shard) part of a batch: add its users (to the set and its sketch, or to
        the HyperLogLog), count its clicks and impressions; the events with ids through
        COUNT_NEW_IDS (whose reply, a list, names duplicates)."""
        add = "PFADD" if self.unique == "hll" else "SADD"
        commands = []
        if users:
            commands.append(pack((add, self.users_key(hour, shard), *users)))
            if self.unique != "hll":
                commands.append(pack(("PFADD", self.sketch_key(hour, shard), *users)))
        counts = self.counts_key(hour, shard)
        if clicks:
            commands.append(pack(("HINCRBY", counts, "c", clicks)))
        if impressions:
            commands.append(pack(("HINCRBY", counts, "i", impressions)))
        if tagged:
            args: list[object] = [self.ids_deadline(hour), add]
            for position, user, click, event_id in tagged:
                args += (position, user, "c" if click else "i", event_id)
            keys = (
                self.users_key(hour, shard),
                counts,
                self.ids_key(hour, shard),
                self.sketch_key(hour, shard),
            )
            commands.append(pack(("EVAL", COUNT_NEW_IDS, len(keys), *keys, *args)))
        return commands

    def ids_deadline(self, hour: int) -> int:
        """Unix time at which an hour's ids are forgotten: ``dedup_hours`` after it ends,
        or when the hour itself goes, if sooner."""
        deadline = (hour + 1 + self.dedup_hours) * 3600
        return min(deadline, self.deadline(hour)) if self.retention else deadline

    @staticmethod
    def duplicates(replies: Sequence[Any]) -> set[int]:
        """The duplicates' positions in a batch, from its EXEC's replies: COUNT_NEW_IDS is
        the only command of a write whose reply is a list."""
        return {p for reply in replies if isinstance(reply, list) for p in reply}

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
