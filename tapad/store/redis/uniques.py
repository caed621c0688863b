"""Distinct users over a range of hours on Redis, in steps short enough not to stall it.

Redis runs one command at a time: a SUNION of a week of hour sets, or a PFCOUNT of hundreds
of sketches, would hold up every POST and GET for as long as it runs. So the count is made
of many short calls, on a connection of its own (the hot path's link is never queued behind
it), each touching at most about a thousand members or a few dozen sketches, and each
followed by a pause as long as the call took (``PACE``), so that a count never has more
than about half of Redis's time, however long the range:

- exact: SCARD every (hour, shard) set; if they hold at most ``limit`` members in all, SSCAN
  each in steps of ``SCAN_STEP`` into a Python set, whose size is the answer (paced too: the
  set is built on the event loop, ``MERGE_PACE``).
- estimate (past the limit, or in hll mode): merge the hours' HyperLogLog sketches into a
  short-lived key per shard, ``MERGE_STEP`` sketches per PFMERGE, and add up the shards'
  PFCOUNTs (a user is always in the same shard, so shards never share users). Where a
  sketch lives in another slot than the merge key (a cluster store of the older
  {hour.shard} layout) its bytes are copied over with GET and SET first. Sets written
  before the sketches existed have none: their members are SSCANned into the merge key
  with PFADD instead, still in short steps.

docs/uniques.md says why these and what they cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from tapad.store.base import UniqueCount
from tapad.store.redis.keys import KeyLayout
from tapad.store.redis.protocol import CommandError, RedisLink, ReplyError, pack

SCAN_STEP = 1000  # members per SSCAN: well under a millisecond of Redis each
MERGE_STEP = 32  # sketches per PFMERGE: a dense merge is tens of microseconds a sketch
KEYS_STEP = 256  # SCARD/EXISTS/GET per request (each O(1))
MERGE_TTL_MS = 60_000  # a merge key left behind by a failed count goes away by itself
# Pause after each call, as a share of the time it took: 1.0 leaves Redis at least half of
# the time for the hot path while a count runs (docs/performance.md).
PACE = 1.0
# And after each step of members merged in the tapad process, a pause this many times as long
# as adding them to the set took: about half of what a step costs the event loop (reading the
# reply, making the members Python objects), so a count keeps to about a tenth of the event
# loop's time, which the hot path needs (docs/performance.md). On a busy machine
# the step takes longer, and so does the pause.
MERGE_PACE = 20

Command = tuple[Any, ...]


class Counting(Protocol):
    """Where a count's commands go: links of their own, not the hot path's."""

    async def each(self, keys: Sequence[str], *command: Any) -> list[Any]:
        """``command key`` for each key (the key goes right after the command's name),
        replies in the keys' order."""

    async def on(self, key: str, commands: list[Command]) -> list[Any]:
        """Commands on ``key``'s node (all in its slot), in one request."""

    def merge_key(self, shard: int, token: str) -> tuple[str, bool]:
        """The short-lived key a shard's sketches are merged in, and whether the shard's
        sketches share its slot (PFMERGE can read them where they are)."""


async def request(link: RedisLink, commands: Sequence[Command]) -> list[Any]:
    """Commands in one pipelined request (no transaction), then a pause (``PACE``);
    CommandError for an error reply."""
    start = time.perf_counter()
    replies = await link.request(b"".join(pack(c) for c in commands), len(commands))
    await asyncio.sleep((time.perf_counter() - start) * PACE)
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise CommandError(str(reply))
    return replies


def steps(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def count_uniques(
    counting: Counting, layout: KeyLayout, hours: Sequence[int], limit: int, token: str
) -> UniqueCount:
    pairs = [(hour, shard) for hour in dict.fromkeys(hours) for shard in range(layout.shards)]
    if not pairs:
        return UniqueCount(0, layout.unique == "exact")
    if layout.unique == "hll":
        return UniqueCount(await estimate(counting, layout, pairs, [], token), False)
    sizes = await counting.each([layout.users_key(h, s) for h, s in pairs], "SCARD")
    filled = [pair for pair, size in zip(pairs, sizes, strict=True) if size]
    if sum(sizes) <= limit:
        seen: set[bytes] = set()
        for hour, shard in filled:
            async for members in scan(counting, layout.users_key(hour, shard)):
                start = time.perf_counter()
                seen.update(members)
                await asyncio.sleep((time.perf_counter() - start) * MERGE_PACE)
        return UniqueCount(len(seen), True)
    found = await counting.each([layout.sketch_key(h, s) for h, s in filled], "EXISTS")
    sketched = [pair for pair, exists in zip(filled, found, strict=True) if exists]
    unsketched = [pair for pair, exists in zip(filled, found, strict=True) if not exists]
    return UniqueCount(await estimate(counting, layout, sketched, unsketched, token), False)


async def scan(counting: Counting, key: str) -> AsyncIterator[list[bytes]]:
    """A set's members, ``SCAN_STEP`` at a time (a member may come twice: callers dedupe)."""
    cursor = b"0"
    while True:
        ((cursor, members),) = await counting.on(key, [("SSCAN", key, cursor, "COUNT", SCAN_STEP)])
        if members:
            yield members
        if cursor == b"0":
            return


async def estimate(
    counting: Counting,
    layout: KeyLayout,
    sketched: Sequence[tuple[int, int]],
    unsketched: Sequence[tuple[int, int]],
    token: str,
) -> int:
    """The sum over shards of the PFCOUNT of the shard's sketches (and unsketched sets)."""
    total = 0
    for shard in range(layout.shards):
        sources = [layout.sketch_key(h, s) for h, s in sketched if s == shard]
        sets = [layout.users_key(h, s) for h, s in unsketched if s == shard]
        if not sources and not sets:
            continue
        merged, same_slot = counting.merge_key(shard, token)
        # Left behind by a count that fails half way, the key expires by itself.
        await counting.on(merged, [("PFADD", merged), ("PEXPIRE", merged, MERGE_TTL_MS)])
        for step in steps(sources, MERGE_STEP):
            if same_slot:
                await counting.on(merged, [("PFMERGE", merged, *step)])
            else:
                await copy_and_merge(counting, merged, step)
        for key in sets:
            async for members in scan(counting, key):
                await counting.on(merged, [("PFADD", merged, *members)])
        count, _ = await counting.on(merged, [("PFCOUNT", merged), ("DEL", merged)])
        total += int(count)
    return total


async def copy_and_merge(counting: Counting, merged: str, sources: Sequence[str]) -> None:
    """Sketches from other slots: their bytes (a HyperLogLog is a string) set on a key next
    to ``merged``, then merged there."""
    staged = f"{merged}:staged"
    commands: list[Command] = []
    for raw in await counting.each(sources, "GET"):
        if raw is not None:
            commands += [("SET", staged, raw, "PX", MERGE_TTL_MS), ("PFMERGE", merged, staged)]
    if commands:
        await counting.on(merged, [*commands, ("DEL", staged)])
