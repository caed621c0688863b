"""Group commit: many POSTs, one store transaction, and no timer.

A POST appends its event to the open batch and waits on that batch's future.
One committer task writes batches one after another; whatever arrives while a
batch is being committed forms the next one (up to ``max_batch`` events). Under
light load a batch holds one event and commits at once; under heavy load batches
grow by themselves, which is where the throughput comes from. No POST is
answered before the batch holding its event is committed.

Before taking a batch the committer yields to the event loop once, so requests
whose bytes are already in the socket buffers are parsed and join it: one more
poll, cheap when idle, and under load much larger batches. Every batch costs the
event loop a round trip (a send, a receive, a wake-up), so fewer batches cut CPU per
POST (measured with ``bench/ab.py``; the figures are in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from tapad.server.shared_future import new_shared_future, settle
from tapad.store.base import (
    CommitUnknown,
    Event,
    PartialWrite,
    Store,
    StoreConfigError,
    StoreError,
)

if TYPE_CHECKING:
    from tapad.server.metrics import Metrics

log = logging.getLogger("tapad.writer")


class Overloaded(StoreError):
    """More events are waiting than ``max_pending`` allows; refuse instead of growing memory."""


class _Batch:
    __slots__ = ("done", "events")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[Event] = []
        self.done: asyncio.Future[PartialWrite | None] = new_shared_future(loop)


class _OutageLog:
    """Log a store outage in a few lines, not one per failed batch (thousands a second)."""

    EVERY = 5.0  # seconds between "still failing" lines

    def __init__(self) -> None:
        self.since: float | None = None
        self.last_line = 0.0
        self.batches = self.events = 0
        self.last_failure: tuple[float, str] | None = None  # (when, why) until a batch succeeds

    def failed(self, events: int, exc: BaseException) -> None:
        now = time.monotonic()
        self.last_failure = (now, str(exc))
        self.batches += 1
        self.events += events
        if self.since is None or now - self.last_line >= self.EVERY:
            log.warning(
                "store failing: %d batches (%d events) not committed, answered 503: %s",
                self.batches,
                self.events,
                exc,
            )
            self.since = self.since or now
            self.last_line = now
            self.batches = self.events = 0

    def succeeded(self) -> None:
        self.last_failure = None
        if self.since is not None:
            if self.batches:
                log.warning("%d more batches (%d events) answered 503", self.batches, self.events)
            log.warning("store back after %.1fs: committing again", time.monotonic() - self.since)
            self.since = None
            self.batches = self.events = 0


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
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._outage = _OutageLog()

    @property
    def pending(self) -> int:
        return self._pending

    def failing_writes(self, within: float) -> str | None:
        """Why the last batch failed, if it did in the last ``within`` seconds and none has
        succeeded since. A store can answer PING and still refuse every write (a Redis out
        of memory); /healthz asks this too. The window lets a server that a load balancer
        stopped sending POSTs to say healthy again, get traffic, and find out."""
        failure = self._outage.last_failure
        if failure is None or time.monotonic() - failure[0] > within:
            return None
        return failure[1]

    def start(self) -> None:
        self._task = asyncio.create_task(self._commit_forever(), name="tapad-group-commit")

    def submit(self, event: Event) -> asyncio.Future[PartialWrite | None]:
        """Queue an event; the returned future resolves once its batch is committed: to None,
        or to a PartialWrite if only part of it was (a cluster master failed mid-batch),
        which says whether this event's part was. A failed batch raises StoreError."""
        if self._pending >= self._max_pending:
            raise Overloaded(f"{self._pending} events already waiting")
        batches = self._batches
        # (a batch whose future a cancelled POST took down is not joined: see shared_future)
        if batches and len(batches[-1].events) < self._max_batch and not batches[-1].done.done():
            batch = batches[-1]
        else:
            batch = _Batch(self._loop)
            batches.append(batch)
            self._wakeup.set()
        batch.events.append(event)
        self._pending += 1
        return batch.done

    async def _commit_forever(self) -> None:
        while True:
            if not self._batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await asyncio.sleep(0)  # one more pass of the event loop: see the module's doc
            batch = self._batches.popleft()
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(batch.events))
                self._metrics.pending.set(self._pending)
            try:
                await self._store.write(batch.events)
            except PartialWrite as exc:
                if not batch.done.done():  # a result, not an error: each POST asks it
                    batch.done.set_result(exc)  # whether its own part was committed
                self._fail_queued(StoreError(str(exc)))
                self._outage.failed(len(batch.events), exc)
            except (StoreError, StoreConfigError) as exc:
                # CommitUnknown stays itself for its own batch (504: may have been applied)
                error = StoreError(str(exc))
                settle(batch.done, exc if isinstance(exc, CommitUnknown) else error)
                self._fail_queued(error)  # never sent: 503
                self._outage.failed(len(batch.events), exc)
            except Exception as exc:
                log.exception("batch of %d events failed", len(batch.events))
                settle(batch.done, StoreError(f"internal error: {type(exc).__name__}"))
            else:
                settle(batch.done, None)
                self._outage.succeeded()
            finally:
                self._pending -= len(batch.events)
                if self._metrics is not None and not self._batches:
                    self._metrics.pending.set(self._pending)

    def _fail_queued(self, error: StoreError) -> None:
        """Fail the batches that queued up while the store was failing.

        Trying each in turn would make a POST wait for every batch ahead of it to time
        out; failing them now bounds any POST's wait to about one store timeout. The
        next POST starts a fresh batch, which is how the server notices the store is back.
        """
        while self._batches:
            queued = self._batches.popleft()
            settle(queued.done, error)
            self._pending -= len(queued.events)
            self._outage.failed(len(queued.events), error)

    async def drain(self) -> None:
        """Wait until every queued batch is committed (or failed), then stop the committer."""
        while self._batches or self._pending:
            last = self._batches[-1].done if self._batches else None
            if last is not None:
                await asyncio.wait([last])
            else:
                await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
