"""``AsyncClient``: the same delivery as ``Client``, as one task on the caller's event loop.

``click()`` and ``impression()`` are plain calls that never block the loop: a full queue
raises ``QueueFull`` at once. The sender task starts with the first event; ``flush()``
and ``aclose()`` are awaited. An asyncio program ends its loop before interpreter exit,
so there is no exit hook to flush from: use ``async with`` or ``await aclose()`` (events
still pending when the client is garbage-collected are named in a warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from types import TracebackType

import httpx

from tapad.client.delivery import (
    Answer,
    ErrorHandler,
    Stats,
    batch_target,
    one_line,
    parse_ack,
    refused,
    report,
    retry_delay,
)
from tapad.client.errors import DeliveryError, FlushTimeout, QueueFull
from tapad.client.events import Event, IdMaker, encode, stamp

log = logging.getLogger("tapad.client")


class AsyncClient:
    """``async with AsyncClient(url) as tapad: tapad.click("alice")``."""

    def __init__(
        self,
        url: str,
        write_token: str | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        retry_for: float = 300.0,
        timeout: float = 10.0,
        on_error: ErrorHandler | None = None,
    ) -> None:
        self.endpoint, self._headers = batch_target(url, write_token, batch_size)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.retry_for = retry_for
        self.timeout = timeout
        self.on_error = on_error
        self._queue: deque[Event] = deque()
        self._oldest = 0.0
        self._given = 0
        self._settled = 0
        self._flush_until = 0
        self._stats = Stats()
        self._refused_total = 0
        self._closing = False
        self._work: asyncio.Event | None = None  # made on the loop, at the first event
        self._settled_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = IdMaker()

    def click(self, user: str, *, timestamp: int | None = None, id: str | None = None) -> None:
        """Queue a click; ValueError for an event the server would refuse, QueueFull when full."""
        self._add(user, "click", timestamp, id)

    def impression(self, user: str, *, timestamp: int | None = None, id: str | None = None) -> None:
        """Queue an impression (as ``click``)."""
        self._add(user, "impression", timestamp, id)

    def _add(self, user: str, kind: str, timestamp: int | None, event_id: str | None) -> None:
        event = stamp(user, kind, timestamp, event_id, self._ids)
        if self._closing:
            raise RuntimeError("tapad client is closed")
        if self._given - self._settled >= self.max_queue:
            raise QueueFull(f"{self.max_queue} events already waiting for the server")
        queue = self._queue
        queue.append(event)
        self._given += 1
        self._stats.queued += 1
        if len(queue) == 1:
            self._oldest = time.monotonic()
            self._wake()
        elif len(queue) >= self.batch_size:
            self._wake()

    def _wake(self) -> None:
        if self._task is None:
            self._work = asyncio.Event()
            self._settled_event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._send_forever(), name="tapad-client"
            )
        assert self._work is not None
        self._work.set()

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every event given so far is acknowledged or refused (FlushTimeout)."""
        target = self._given
        if self._settled >= target:
            return
        self._flush_until = max(self._flush_until, target)
        self._wake()
        assert self._settled_event is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._settled < target:
            self._settled_event.clear()
            left = None if deadline is None else deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._settled_event.wait(), left)
            except TimeoutError:
                raise FlushTimeout(target - self._settled, timeout or 0.0) from None

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush (for at most ``timeout`` seconds, if given), then stop the sender task."""
        try:
            await self.flush(timeout)
        finally:
            self._closing = True
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        """Counts of events: queued, sent, acknowledged, duplicates, retried, refused."""
        return self._stats.as_dict()

    @property
    def pending(self) -> int:
        return self._given - self._settled

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        if exc_type is None and self._refused_total:
            n = self._refused_total
            raise DeliveryError(None, "refused by the server (see on_error and the log)", n)

    def __del__(self) -> None:
        pending = self._given - self._settled
        if pending:
            log.warning("tapad.client: AsyncClient dropped with %d events not delivered", pending)

    async def _send_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            while True:
                batch = await self._next_batch()
                await self._deliver(http, batch)

    async def _next_batch(self) -> list[Event]:
        work = self._work
        assert work is not None
        queue = self._queue
        while True:
            if queue:
                waited = time.monotonic() - self._oldest
                if (
                    len(queue) >= self.batch_size
                    or waited >= self.flush_interval
                    or self._settled < self._flush_until
                ):
                    break
                work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(work.wait(), self.flush_interval - waited)
            else:
                work.clear()
                await work.wait()
        batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
        if queue:
            self._oldest = time.monotonic()
        self._stats.sent += len(batch)
        return batch

    async def _deliver(self, http: httpx.AsyncClient, batch: list[Event]) -> None:
        body = encode(batch, self._ids)
        first = time.monotonic()
        retries = 0
        while True:
            answer = await self._post(http, body)
            if answer.acknowledged:
                accepted, duplicates = parse_ack(answer.text, len(batch))
                self._stats.acknowledged += accepted
                self._stats.duplicates += duplicates
                self._settle(len(batch))
                return
            if answer.retryable:
                delay = retry_delay(retries, answer.retry_after)
                spent = time.monotonic() - first
                if spent + delay > self.retry_for:
                    self._refuse(refused(answer, len(batch), gave_up_after=spent))
                    return
                retries += 1
                self._stats.retried += len(batch)
                await asyncio.sleep(delay)
                continue
            self._refuse(refused(answer, len(batch)))
            return

    async def _post(self, http: httpx.AsyncClient, body: bytes) -> Answer:
        try:
            response = await http.post(self.endpoint, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return Answer(
            response.status_code,
            response.text if response.status_code == 200 else one_line(response.text),
            response.headers.get("Retry-After"),
        )

    def _settle(self, events: int) -> None:
        self._settled += events
        assert self._settled_event is not None
        self._settled_event.set()

    def _refuse(self, error: DeliveryError) -> None:
        self._stats.refused += error.events
        self._refused_total += error.events
        report(error, self.on_error)
        self._settle(error.events)
