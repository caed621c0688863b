"""Group commit: many POSTs, one store transaction, and no timer.

A POST appends its event to the open batch and waits for that batch's outcome; a
``POST /analytics/batch`` appends all its events at once and waits the same way, once.
One committer task writes batches one after another; whatever arrives while a
batch is being committed forms the next one (up to ``max_batch`` events). Under
light load a batch holds one event and commits at once; under heavy load batches
grow by themselves, which is where the throughput comes from. No POST is
answered before the batch holding its event is committed.

Each POST waits on a future of its own, not on one the batch shares: a handler
cancelled while it waits (its client gone, or the shutdown timeout) cancels the
future it waits on, and that must not take the answer away from the other POSTs of
its batch. The batch is committed all the same.

Before taking a batch the committer yields to the event loop once, so requests
whose bytes are already in the socket buffers are parsed and join it: one more
poll, cheap when idle, and under load much larger batches. Every batch costs the
event loop a round trip (a send, a receive, a wake-up), so fewer batches cut CPU per
POST (measured with ``bench/ab.py``; the figures are in docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from tapad.server.outage import Outage
from tapad.store.base import (
    CommitUnknown,
    Event,
    PartialWrite,
    Store,
    StoreConfigError,
    StoreError,
)
from tapad.words import counted

if TYPE_CHECKING:
    from tapad.server.metrics import Metrics

# What a POST's future resolves to: None (every event of it counted), an int (how many of
# its events were not counted because their id was known), or a PartialWrite (a cluster
# batch applied in part).
Outcome = PartialWrite | int | None
Waiter = asyncio.Future[Outcome]


class Overloaded(StoreError):
    """More events are waiting than ``max_pending`` allows; refuse instead of growing memory."""


class InDoubt(CommitUnknown):
    """The committer hit an error nobody foresaw while the batch was being written: it may
    or may not have been applied, so its POSTs are not promised a 503 (which says "not
    recorded") but told the outcome is unknown (504)."""


class _Batch:
    __slots__ = ("events", "starts", "waiters")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.waiters: list[Waiter] = []
        self.starts: list[int] = []  # where each waiter's events begin in ``events``


def answer_duplicates(batch: _Batch, duplicates: frozenset[int]) -> None:
    """Answer each POST of a committed batch with how many of its events were duplicates."""
    ends = [*batch.starts[1:], len(batch.events)]
    for waiter, start, end in zip(batch.waiters, batch.starts, ends, strict=True):
        if not waiter.done():
            found = sum(1 for position in duplicates if start <= position < end)
            waiter.set_result(found or None)


def answer(waiters: list[Waiter], outcome: Outcome) -> None:
    """Answer each POST of a batch, but those whose handler was cancelled (done already)."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(outcome)


def fail(waiters: list[Waiter], error: StoreError) -> None:
    """Fail each POST of a batch, but those whose handler was cancelled."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # seen, even if its POST is gone before it looks


class GroupCommitter:
    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 2048,
        max_pending: int = 50_000,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics  # observed once per batch, never per event
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._batches: deque[_Batch] = deque()
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._committed = asyncio.Event()  # set after each batch (drain waits on it)
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        unforeseen: Callable[[], None] | None = None
        if metrics is not None:
            unforeseen = metrics.store_errors.labels("write").inc
        self.outage = Outage("batches", "events", "store refusing writes", writes=True,
                             on_unforeseen=unforeseen)  # fmt: skip

    @property
    def pending(self) -> int:
        return self._pending

    def failing_writes(self, within: float) -> str | None:
        """What /healthz says if the last batch failed in the last ``within`` seconds and
        none has succeeded since. A store can answer PING and still refuse every write (a
        Redis out of memory). The window lets a server that a load balancer stopped sending
        POSTs to say healthy again, get traffic, and find out."""
        return self.outage.failing(within)

    def start(self) -> None:
        self._task = asyncio.create_task(self._commit_forever(), name="tapad-group-commit")

    def submit(self, event: Event) -> Waiter:
        """Queue an event; the returned future resolves once its batch is committed: to None,
        or to a PartialWrite if only part of it was (a cluster master failed mid-batch),
        which says whether this event's part was. A failed batch raises StoreError
        (CommitUnknown if it may have been applied)."""
        if self._pending >= self._max_pending:
            raise Overloaded(f"{counted(self._pending, 'event')} already waiting")
        batches = self._batches
        if batches and len(batches[-1].events) < self._max_batch:
            batch = batches[-1]
        else:
            batch = _Batch()
            batches.append(batch)
            self._wakeup.set()
        batch.starts.append(len(batch.events))
        batch.events.append(event)
        waiter: Waiter = self._loop.create_future()
        batch.waiters.append(waiter)
        self._pending += 1
        return waiter

    def submit_all(self, events: list[Event]) -> Waiter:
        """Queue a request's events as one unit (``POST /analytics/batch``); one future for
        them all, resolving as ``submit``'s does (the caller asks a PartialWrite about each).

        They go into a single batch, so on one SQLite file or one Redis they are committed in
        one transaction, never split over two: into the open batch if they fit under
        ``max_batch``, else into a new one (a request of more than ``max_batch`` events
        gets a batch of its own). Refused whole (Overloaded) if they would take the queue
        past ``max_pending``, unless nothing is waiting: a request larger than the limit
        still gets through an idle server.
        """
        count = len(events)
        pending = self._pending
        if pending and pending + count > self._max_pending:
            raise Overloaded(f"{pending} events already waiting")
        batches = self._batches
        if batches and len(batches[-1].events) + count <= self._max_batch:
            batch = batches[-1]
        else:
            batch = _Batch()
            batches.append(batch)
            self._wakeup.set()
        batch.starts.append(len(batch.events))
        batch.events.extend(events)
        waiter: Waiter = self._loop.create_future()
        batch.waiters.append(waiter)
        self._pending = pending + count
        return waiter

    async def _commit_forever(self) -> None:
        while True:
            if not self._batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await asyncio.sleep(0)  # one more pass of the event loop: see the module's doc
            batch = self._batches.popleft()
            if self._metrics is not None:
                self._metrics.batch_started(len(batch.events), self._pending)
            try:
                duplicates = await self._store.write(batch.events)
            except PartialWrite as exc:
                answer(batch.waiters, exc)  # a result: each POST asks about its own part
                self._failed(batch, exc, sum(map(exc.in_doubt, batch.events)))
            except CommitUnknown as exc:  # may have been applied: 504
                fail(batch.waiters, exc)
                self._failed(batch, exc, unknown=len(batch.events))
            except StoreError as exc:  # known not applied: 503
                fail(batch.waiters, exc)
                self._failed(batch, exc)
            except StoreConfigError as exc:  # refused before sending: 503, and a fault
                fail(batch.waiters, StoreError(str(exc)))
                self._failed(batch, exc)
            except Exception as exc:  # nobody foresaw it: may have been applied
                fail(batch.waiters, InDoubt(f"{type(exc).__name__} while committing"))
                self._failed(batch, exc, unknown=len(batch.events))
            else:
                if duplicates:
                    answer_duplicates(batch, duplicates)
                else:
                    answer(batch.waiters, None)
                self.outage.succeeded()
            finally:
                self._pending -= len(batch.events)
                self._committed.set()
                if self._metrics is not None and not self._batches:
                    self._metrics.pending_changed(self._pending)

    def _failed(self, batch: _Batch, exc: Exception, unknown: int = 0) -> None:
        """Fail the batches that queued up while this one was failing, and log the outage.

        Trying each in turn would make a POST wait for every batch ahead of it to time
        out; failing them now bounds any POST's wait to about one store timeout. They
        were never sent: 503. The next POST starts a fresh batch, which is how the server
        notices the store is back.
        """
        self.outage.failed(len(batch.events), exc)
        if unknown and self._metrics is not None:
            self._metrics.outcome_unknown.inc(unknown)
        error = StoreError("not sent: the batch ahead of it failed")
        while self._batches:
            queued = self._batches.popleft()
            fail(queued.waiters, error)
            self._pending -= len(queued.events)
            self.outage.failed(len(queued.events), error)

    async def drain(self) -> None:
        """Wait until every queued batch is committed (or failed), then stop the committer."""
        while self._batches or self._pending:
            self._committed.clear()
            await self._committed.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
