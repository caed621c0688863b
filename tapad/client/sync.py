"""``Client``: events buffered in the caller's thread, delivered by background threads.

The caller's cost is a check, a stamp and an append under a lock; two sender threads take
up to ``batch_size`` events each (or what ``flush_interval`` gathered), post them as one
batch and retry it with the same ids until it is acknowledged, refused, or ``retry_for``
has passed. Batches settle out of order; ``flush()`` waits until every event before its
mark has.

What analytics-python and posthog-python users lost, and what this does instead:
events pending at exit are flushed by an ``atexit`` hook (not merely a joined thread);
after ``fork()`` the child gets its own lock, queue and sender (``os.register_at_fork``)
rather than a dead thread; a full queue blocks ``max_block`` seconds and then raises
instead of dropping; ``flush()`` takes a timeout.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
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

_LIVE: weakref.WeakSet[Client] = weakref.WeakSet()  # clients a forked child must reset
# Batches in flight at once, each from a sender thread of its own: while one waits for its
# answer the next is on its way, and the server's group commit may take both in one
# transaction. Events settle out of order; flush() waits for all before its mark.
SENDERS = 2


class Client:
    """Send click and impression events to a tapad server from any number of threads.

    ``with Client(url) as tapad: tapad.click("alice")``; leaving the block (or
    ``close()``) flushes. See the package's documentation for each argument.
    """

    def __init__(
        self,
        url: str,
        write_token: str | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        max_block: float = 5.0,
        retry_for: float = 300.0,
        timeout: float = 10.0,
        exit_timeout: float = 10.0,
        on_error: ErrorHandler | None = None,
    ) -> None:
        self.endpoint, self._headers = batch_target(url, write_token, batch_size)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.max_block = max_block
        self.retry_for = retry_for
        self.timeout = timeout
        self.exit_timeout = exit_timeout
        self.on_error = on_error
        self._fresh_state()
        _LIVE.add(self)
        ref = weakref.ref(self)
        atexit.register(_flush_at_exit, ref)

    def _fresh_state(self) -> None:
        """Everything a process owns alone: made at start and again in a forked child."""
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the sender waits on it
        self._settled_cv = threading.Condition(self._lock)  # callers and flush() wait on it
        self._queue: deque[Event] = deque()
        self._oldest = 0.0  # monotonic time the oldest queued event was given
        self._given = 0  # events taken so far
        self._settled = 0  # of those, acknowledged or refused
        self._taken = 0  # of those, taken from the queue into batches (in order)
        self._in_flight: dict[int, int] = {}  # a batch not yet settled: its first event's number
        self._flush_until = 0  # send at once while events before this are not all settled
        self._stats = Stats()
        self._refused_total = 0
        self._closing = False
        self._abandon = threading.Event()  # close() gave up: stop retrying
        self._threads: list[threading.Thread] = []
        self._ids = IdMaker()
        # Made here, in the caller's thread: httpx imports its transport lazily, and a
        # fork() while the sender thread was halfway through that import would leave the
        # child a module it can never finish importing. A child makes its own (the
        # parent's pool holds the parent's connections).
        self._http = [httpx.Client(timeout=self.timeout) for _ in range(SENDERS)]

    # -- the caller's side -----------------------------------------------------------

    def click(self, user: str, *, timestamp: int | None = None, id: str | None = None) -> None:
        """Queue a click; raises ValueError for an event the server would refuse."""
        self._add(user, "click", timestamp, id)

    def impression(self, user: str, *, timestamp: int | None = None, id: str | None = None) -> None:
        """Queue an impression; raises ValueError for an event the server would refuse."""
        self._add(user, "impression", timestamp, id)

    def _add(self, user: str, kind: str, timestamp: int | None, event_id: str | None) -> None:
        event = stamp(user, kind, timestamp, event_id, self._ids)
        with self._lock:
            if self._closing:
                raise RuntimeError("tapad client is closed")
            if self._given - self._settled >= self.max_queue:
                self._wait_for_room()
            queue = self._queue
            queue.append(event)
            self._given += 1
            self._stats.queued += 1
            if len(queue) == 1:
                self._oldest = time.monotonic()
                if not self._threads:
                    self._start()
                self._work.notify()
            elif len(queue) >= self.batch_size:
                self._work.notify()

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self.max_block
        while self._given - self._settled >= self.max_queue:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueueFull(
                    f"{self.max_queue} events already waiting for the server "
                    f"after {self.max_block:g}s"
                )
            self._settled_cv.wait(left)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every event given so far is acknowledged or refused.

        Raises FlushTimeout (saying how many are neither) when ``timeout`` runs out.
        """
        with self._lock:
            target = self._given
            self._flush_until = max(self._flush_until, target)
            self._work.notify()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._settled_before() < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FlushTimeout(target - self._settled_before(), timeout or 0.0)
                self._settled_cv.wait(left)

    def _settled_before(self) -> int:
        """How many of the first events given are all settled (under the lock): batches
        settle out of order with two in flight, so it is where the oldest unsettled
        batch, or the queue, begins."""
        return min(self._in_flight) if self._in_flight else self._taken

    def close(self, timeout: float | None = None) -> None:
        """Flush (for at most ``timeout`` seconds, if given), then stop the sender."""
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closing = True
                self._work.notify_all()
            self._abandon.set()
            for thread in self._threads:
                thread.join(1.0)  # a daemon: one stuck in a request is left
            _LIVE.discard(self)

    def stats(self) -> dict[str, int]:
        """Counts of events: queued, sent, acknowledged, duplicates, retried, refused."""
        with self._lock:
            return self._stats.as_dict()

    @property
    def pending(self) -> int:
        """Events given and neither acknowledged nor refused yet."""
        with self._lock:
            return self._given - self._settled

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc_type is None and self._refused_total:
            n = self._refused_total
            raise DeliveryError(None, "refused by the server (see on_error and the log)", n)

    # -- the sender thread -------------------------------------------------------------

    def _start(self) -> None:
        for n, http in enumerate(self._http):
            thread = threading.Thread(
                target=self._send_forever, args=(http,), name=f"tapad-client-{n}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _send_forever(self, http: httpx.Client) -> None:
        with http:
            while True:
                taken = self._next_batch()
                if taken is None:
                    return
                self._deliver(http, *taken)

    def _next_batch(self) -> tuple[int, list[Event]] | None:
        """Wait for a full batch, ``flush_interval`` since the oldest event, a flush or
        close; None when closing with nothing left."""
        with self._lock:
            queue = self._queue
            while True:
                if queue:
                    waited = time.monotonic() - self._oldest
                    if (
                        len(queue) >= self.batch_size
                        or waited >= self.flush_interval
                        or self._settled_before() < self._flush_until
                        or self._closing
                    ):
                        break
                    self._work.wait(self.flush_interval - waited)
                elif self._closing:
                    return None
                else:
                    self._work.wait()
            batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            if queue:
                self._oldest = time.monotonic()
            start = self._taken
            self._in_flight[start] = len(batch)
            self._taken += len(batch)
            self._stats.sent += len(batch)
            return start, batch

    def _deliver(self, http: httpx.Client, start: int, batch: list[Event]) -> None:
        body = encode(batch, self._ids)
        first = time.monotonic()
        retries = 0
        while True:
            answer = self._post(http, body)
            if answer.acknowledged:
                accepted, duplicates = parse_ack(answer.text, len(batch))
                self._settle(start, len(batch), acknowledged=accepted, duplicates=duplicates)
                return
            if answer.retryable:
                delay = retry_delay(retries, answer.retry_after)
                spent = time.monotonic() - first
                if spent + delay > self.retry_for or self._abandon.is_set():
                    self._refuse(start, refused(answer, len(batch), gave_up_after=spent))
                    return
                retries += 1
                with self._lock:
                    self._stats.retried += len(batch)
                if self._abandon.wait(delay):
                    self._refuse(start, refused(answer, len(batch), gave_up_after=spent))
                    return
                continue
            self._refuse(start, refused(answer, len(batch)))
            return

    def _post(self, http: httpx.Client, body: bytes) -> Answer:
        try:
            response = http.post(self.endpoint, content=body, headers=self._headers)
        except httpx.HTTPError as exc:  # timeouts, refused and broken connections
            return Answer(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return Answer(
            response.status_code,
            response.text if response.status_code == 200 else one_line(response.text),
            response.headers.get("Retry-After"),
        )

    def _settle(
        self, start: int, events: int, *, acknowledged: int = 0, duplicates: int = 0
    ) -> None:
        with self._lock:
            del self._in_flight[start]
            self._settled += events
            self._stats.acknowledged += acknowledged
            self._stats.duplicates += duplicates
            self._settled_cv.notify_all()

    def _refuse(self, start: int, error: DeliveryError) -> None:
        with self._lock:
            self._stats.refused += error.events
            self._refused_total += error.events
        report(error, self.on_error)
        self._settle(start, error.events)

    def _after_fork_in_child(self) -> None:
        self._fresh_state()
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:  # multiprocessing's children end in os._exit: no atexit
            mp_util.Finalize(self, _flush_at_exit, args=(weakref.ref(self),), exitpriority=10)


def _flush_at_exit(ref: Callable[[], Client | None]) -> None:
    """Deliver what is pending at interpreter exit, for at most ``exit_timeout`` seconds."""
    client = ref()
    if client is None or client._closing or client.pending == 0:
        return
    try:
        client.close(client.exit_timeout)
    except FlushTimeout as exc:
        log.warning("tapad.client: %s at exit; they are lost", exc)
        print(f"tapad.client: {exc} at exit; they are lost", file=sys.stderr)


def _reset_in_child() -> None:
    for client in list(_LIVE):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_in_child)
