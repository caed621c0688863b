"""GET coalescing: concurrent GETs for one hour share one store read.

Read-your-writes forbids joining a read that is already on its way to the
store: it may have been sent before the writes a late GET must see. So each
hour has at most one read in flight and one *open* read that has not been sent;
a GET joins the open one (creating it if needed), and the open read is sent only
when the one in flight has come back. Every GET is therefore answered by a read
that left after it arrived.
"""

from __future__ import annotations

import asyncio

from tapad.server.shared_future import new_shared_future, settle
from tapad.store.base import HourCounts, Store, StoreError


class CoalescingReader:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._open: dict[int, asyncio.Future[HourCounts]] = {}
        self._in_flight: set[int] = set()
        self._loop = asyncio.get_running_loop()
        self.store_reads = 0  # how many reads went to the store (tests and metrics)

    def read(self, hour: int) -> asyncio.Future[HourCounts]:
        fut = self._open.get(hour)
        if fut is None or fut.done():  # done: a cancelled GET took it down, start afresh
            fut = self._open[hour] = new_shared_future(self._loop)
            if hour not in self._in_flight:
                self._loop.create_task(self._send(hour))
        return fut

    async def _send(self, hour: int) -> None:
        while (fut := self._open.pop(hour, None)) is not None:
            self._in_flight.add(hour)
            self.store_reads += 1
            try:
                counts = await self._store.read(hour)
            except StoreError as exc:
                outcome: HourCounts | StoreError = exc
            except Exception as exc:
                outcome = StoreError(f"internal error: {type(exc).__name__}")
            else:
                outcome = counts
            finally:
                self._in_flight.discard(hour)
            if fut.done():  # a cancelled GET took it down (see shared_future): nobody waits
                continue
            settle(fut, outcome)
            if isinstance(outcome, StoreError):
                # GETs that queued behind a failed read get its answer now: sending their
                # read too would make them wait two store timeouts for the same 503.
                behind = self._open.pop(hour, None)
                if behind is not None:
                    settle(behind, outcome)
