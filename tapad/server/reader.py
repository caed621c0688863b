"""GET coalescing: concurrent GETs share one store read.

Read-your-writes forbids joining a read that is already on its way to the
store: it may have been sent before the writes a late GET must see. So there is
at most one read in flight and one *open* read that has not been sent; a GET
joins the open one (adding its hour if it is new), and the open read is sent
only when the one in flight has come back. Every GET is therefore answered by a
read that left after it arrived.

One read covers every hour asked for since the last one left, in one round trip
(``Store.read_hours``): the 5% of GETs for past hours ride along with the
current hour's read instead of costing a round trip each, which under load was a
third of all reads. Like the group committer, the reader yields to the event loop
once before a read leaves, so GETs already in the socket buffers join it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from itertools import chain

from tapad.server.shared_future import new_shared_future, settle
from tapad.store.base import HourCounts, Store, StoreError

NO_RANGES: tuple[()] = ()  # most reads have no range: no list to make for them


class CoalescingReader:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._open: dict[int, asyncio.Future[HourCounts]] = {}  # hour -> its GETs' future
        self._ranges: list[tuple[range, asyncio.Future[list[HourCounts]]]] = []  # open too
        self._in_flight = False
        self._loop = asyncio.get_running_loop()
        self.store_reads = 0  # how many reads went to the store (tests and metrics)

    def read(self, hour: int) -> asyncio.Future[HourCounts]:
        fut = self._open.get(hour)
        if fut is None or fut.done():  # done: a cancelled GET took it down, start afresh
            fut = self._open[hour] = new_shared_future(self._loop)
            if not self._in_flight:
                self._in_flight = True
                self._loop.create_task(self._send())
        return fut

    def read_range(self, hours: range) -> asyncio.Future[list[HourCounts]]:
        """A range of hours (``GET /analytics/hours``) joins the open read as a whole: one
        store round trip for all of them, shared with the GETs around it, and one future
        for the range rather than one per hour (744 of them cost more than the read)."""
        fut: asyncio.Future[list[HourCounts]] = new_shared_future(self._loop)
        self._ranges.append((hours, fut))
        if not self._in_flight:
            self._in_flight = True
            self._loop.create_task(self._send())
        return fut

    async def _send(self) -> None:
        try:
            while self._open or self._ranges:
                await asyncio.sleep(0)  # one more pass of the event loop, as the committer does
                batch, self._open = self._open, {}
                ranges: Sequence[tuple[range, asyncio.Future[list[HourCounts]]]] = NO_RANGES
                if self._ranges:
                    ranges, self._ranges = self._ranges, []
                hours = list(batch)
                if ranges:  # every hour once, the GETs' first
                    hours = list(dict.fromkeys(chain(hours, *(r for r, _ in ranges))))
                self.store_reads += 1
                try:
                    counts = await self._store.read_hours(hours)
                    if ranges:
                        by_hour = dict(zip(hours, counts, strict=True))
                        answers = [(fut, by_hour[hour]) for hour, fut in batch.items()]
                        spans = [(fut, [by_hour[hour] for hour in r]) for r, fut in ranges]
                    else:
                        answers = list(zip(batch.values(), counts, strict=True))
                        spans = []
                except StoreError as exc:
                    self._fail(batch, ranges, exc)
                except Exception as exc:  # never leave a GET waiting for ever
                    self._fail(batch, ranges, StoreError(f"internal error: {type(exc).__name__}"))
                else:
                    for fut, hour_counts in answers:
                        settle(fut, hour_counts)  # a no-op if a cancelled GET took it down
                    for range_fut, range_counts in spans:
                        settle(range_fut, range_counts)
        finally:
            self._in_flight = False

    def _fail(
        self,
        batch: dict[int, asyncio.Future[HourCounts]],
        ranges: Sequence[tuple[range, asyncio.Future[list[HourCounts]]]],
        exc: StoreError,
    ) -> None:
        # GETs that queued behind a failed read get its answer now: sending their read
        # too would make them wait two store timeouts for the same 503.
        behind, self._open = self._open, {}
        ranges_behind, self._ranges = self._ranges, []
        for fut in (*batch.values(), *behind.values()):
            settle(fut, exc)
        for _, range_fut in (*ranges, *ranges_behind):
            settle(range_fut, exc)
