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

Each GET (and each range) waits on a future of its own, as each POST does in the
committer: a GET whose handler is cancelled cancels the future it waits on, and must not
take the answer away from the other GETs of its read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from itertools import chain
from typing import Any

from tapad.server.outage import Outage
from tapad.store.base import HourCounts, Store, StoreError

Waiter = asyncio.Future[HourCounts]
RangeWaiter = asyncio.Future[list[HourCounts]]
NO_RANGES: tuple[()] = ()  # most reads have no range: no list to make for them


class CoalescingReader:
    def __init__(self, store: Store, outage: Outage | None = None) -> None:
        self._store = store
        self.outage = outage or Outage("reads", "hours", None, writes=False)
        self._open: dict[int, list[Waiter]] = {}  # hour -> its GETs, waiting
        self._ranges: list[tuple[range, RangeWaiter]] = []  # open too
        self._in_flight = False
        self._loop = asyncio.get_running_loop()
        self.store_reads = 0  # how many reads went to the store (tests and metrics)

    def read(self, hour: int) -> Waiter:
        waiter: Waiter = self._loop.create_future()
        waiters = self._open.get(hour)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._open[hour] = [waiter]
        self._wake()
        return waiter

    def read_range(self, hours: range) -> RangeWaiter:
        """A range of hours (``GET /analytics/hours``) joins the open read as a whole: one
        store round trip for all of them, shared with the GETs around it, and one future
        for the range rather than one per hour (744 of them cost more than the read)."""
        waiter: RangeWaiter = self._loop.create_future()
        self._ranges.append((hours, waiter))
        self._wake()
        return waiter

    def _wake(self) -> None:
        """Start the sender unless a read is on its way (it takes what is open when back)."""
        if not self._in_flight:
            self._in_flight = True
            self._loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._open or self._ranges:
                await asyncio.sleep(0)  # one more pass of the event loop, as the committer does
                batch, self._open = self._open, {}
                ranges: Sequence[tuple[range, RangeWaiter]] = NO_RANGES
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
                        answers = [(waiters, by_hour[hour]) for hour, waiters in batch.items()]
                        spans = [(waiter, [by_hour[hour] for hour in r]) for r, waiter in ranges]
                    else:
                        answers = list(zip(batch.values(), counts, strict=True))
                        spans = []
                except Exception as exc:  # a StoreError, or one nobody foresaw: never
                    self.outage.failed(len(hours), exc)  # leave a GET waiting for ever
                    self._fail(batch, ranges, StoreError("read failed"))
                else:
                    self.outage.succeeded()
                    for waiters, hour_counts in answers:
                        for waiter in waiters:
                            if not waiter.done():  # done: its GET was cancelled
                                waiter.set_result(hour_counts)
                    for range_waiter, range_counts in spans:
                        if not range_waiter.done():
                            range_waiter.set_result(range_counts)
        finally:
            self._in_flight = False

    def _fail(
        self,
        batch: dict[int, list[Waiter]],
        ranges: Sequence[tuple[range, RangeWaiter]],
        exc: StoreError,
    ) -> None:
        # GETs that queued behind a failed read get its answer now: sending their read
        # too would make them wait two store timeouts for the same 503.
        behind, self._open = self._open, {}
        ranges_behind, self._ranges = self._ranges, []
        waiters: list[asyncio.Future[Any]] = [
            *chain.from_iterable((*batch.values(), *behind.values())),
            *(waiter for _, waiter in (*ranges, *ranges_behind)),
        ]
        for waiter in waiters:
            if not waiter.done():  # done: its GET was cancelled
                waiter.set_exception(exc)
