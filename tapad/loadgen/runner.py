"""The load engine: a fixed pool of worker coroutines, each on a keep-alive connection.

Per-request work is kept to the bone (one request string, one awaited answer, two
clock reads, an array append) so the tool measures the server, not itself; the HTTP
client is tapad's own lean one (``http.py``). Timeouts are enforced by one watchdog
task instead of a timer per request.

Retries follow what an answer promises (docs/operations.md): a 503 means "not recorded", and
a connection that could not be made means "not sent", so both are retried. A POST whose
outcome is unknown (a 504, a timeout, a connection lost after sending, an unreadable answer)
is never retried, since a retry could count it twice: it is counted as unknown and handed to
``on_unknown`` (the ledger keeps it apart). GETs change nothing and are retried after a lost
connection too.

With event ids (``retry_for``), a retry can no longer count an event twice: the server
acknowledges a known id without counting it again. Then every 503, 504 (and any other 5xx),
429, timeout and broken connection is retried with the same request, so the same ids, until
it is acknowledged or ``retry_for`` seconds have passed since its first send; only an event
still unacknowledged then, after an attempt that may have been recorded, is unknown.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tapad.loadgen.http import Connection, Endpoint, HttpError, NotSent
from tapad.words import counted

TIMEOUT = "timeout"
CONNECTION_ERROR = "connection error"
MAX_BACKOFF = 2.0


@dataclass(frozen=True)
class LoadConfig:
    method: str  # "POST" or "GET"
    requests: int
    concurrency: int
    rate: float | None = None  # target requests per second, None for as fast as possible
    retries: int = 5  # extra attempts after a 503 or a connection that was never made
    timeout: float = 10.0  # seconds for one attempt
    backoff: float = 0.05  # first retry delay; doubles per attempt
    # A body for each request (batches): ``make`` then returns (target, token, body).
    content_type: str | None = None
    # POST with event ids: retry every answer but a 200 or a 4xx (429 aside) until
    # acknowledged, for up to this many seconds from the first send; None: see the doc.
    retry_for: float | None = None
    token: str | None = field(default=None, repr=False)  # sent as Authorization: Bearer


@dataclass
class Outcome:
    """Running counters; the progress display reads them while the run goes on."""

    requests: int = 0
    done: int = 0
    acknowledged: int = 0
    unknown: int = 0  # POSTs whose outcome is unknown: maybe recorded, maybe not
    retried: int = 0
    duplicates: int = 0  # events acknowledged as already recorded (their id was known)
    statuses: Counter[int] = field(default_factory=Counter)  # each request's final answer
    failures: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    started: float = 0.0
    finished: float = 0.0
    interrupted: bool = False
    gave_up: str = ""  # why the run stopped early, if it did
    unreachable_in_a_row: int = 0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def elapsed(self) -> float:
        end = self.finished or time.perf_counter()
        return max(end - self.started, 1e-9) if self.started else 0.0


# (path and query, token for on_answer), and the body when the config has a content type
MakeRequest = Callable[[], tuple[str, Any] | tuple[str, Any, bytes]]
# Called with the token of a 200 answer and its body: None if fine, else a failure label.
OnAnswer = Callable[[Any, bytes], str | None]
# Called with the token of a POST whose outcome is unknown.
OnUnknown = Callable[[Any], None]


def _ignore(token: object) -> None:
    return None


class _Runner:
    def __init__(
        self,
        config: LoadConfig,
        endpoint: Endpoint,
        make: MakeRequest,
        on_answer: OnAnswer,
        outcome: Outcome,
        on_unknown: OnUnknown = _ignore,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.make = make
        self.on_answer = on_answer
        self.on_unknown = on_unknown
        self.outcome = outcome
        self.next = 0
        self.stop = False
        self.in_flight = [0.0] * config.concurrency  # loop time an attempt started, 0 when idle
        self.timed_out = [False] * config.concurrency
        self.tasks: list[asyncio.Task[None]] = []
        self.give_up_after = max(50, 2 * config.concurrency)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.start = loop.time()
        self.outcome.started = time.perf_counter()
        self.tasks = [asyncio.create_task(self.worker(i)) for i in range(self.config.concurrency)]
        watchdog = asyncio.create_task(self.watchdog())
        try:
            await asyncio.gather(*self.tasks)
        finally:
            watchdog.cancel()
            self.outcome.finished = time.perf_counter()

    async def watchdog(self) -> None:
        """Cancel attempts older than the timeout; the worker turns that into a failure."""
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout
        while True:
            await asyncio.sleep(min(0.25, timeout / 4))
            now = loop.time()
            for i, began in enumerate(self.in_flight):
                if began and now - began > timeout and not self.timed_out[i]:
                    self.timed_out[i] = True
                    self.tasks[i].cancel()

    async def worker(self, wid: int) -> None:
        connection = Connection(self.endpoint)
        try:
            await self._work(wid, connection)
        finally:
            connection.close()

    async def _work(self, wid: int, connection: Connection) -> None:
        config, outcome = self.config, self.outcome
        request = connection.request
        method, total, rate, retries = config.method, config.requests, config.rate, config.retries
        latencies = outcome.latencies
        loop = asyncio.get_running_loop()
        clock = time.perf_counter
        in_flight, timed_out = self.in_flight, self.timed_out
        changes = method == "POST"  # a POST whose outcome is unknown is never retried
        content_type = config.content_type
        retry_for = config.retry_for
        payload: bytes | None = None
        while not self.stop:
            index = self.next
            if index >= total:
                return
            self.next = index + 1
            if rate:
                delay = self.start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if self.stop:  # interrupted while waiting for its slot: never sent
                        return
            if content_type is None:
                target, token = self.make()  # type: ignore[misc]
            else:
                target, token, payload = self.make()  # type: ignore[misc]
            began = clock()
            attempt = 0
            doubt = False  # an attempt may have been recorded
            while True:
                label = None
                status = 0
                body = b""
                retry_after = None
                duplicate = False
                sent = True
                in_flight[wid] = loop.time()
                try:
                    answer = await request(method, target, payload, content_type or "")
                    status, body, retry_after = answer.status, answer.body, answer.retry_after
                    duplicate = answer.duplicate
                except asyncio.CancelledError:
                    if not timed_out[wid]:
                        raise
                    timed_out[wid] = False
                    task = asyncio.current_task()
                    assert task is not None  # a worker is always a task
                    task.uncancel()
                    label = TIMEOUT
                except HttpError as exc:
                    label = f"bad response ({exc})"
                except NotSent:
                    label = CONNECTION_ERROR
                    sent = False
                except OSError:
                    label = CONNECTION_ERROR
                in_flight[wid] = 0.0
                # 504, or any 5xx but 503 (a proxy's 502): the server may have recorded it
                unknown = (
                    changes and sent and (label is not None or (status >= 500 and status != 503))
                )
                if retry_for is None:
                    retry = status == 503 or (label == CONNECTION_ERROR and not unknown)
                    retry = retry and attempt < retries
                else:  # ids: nothing can count twice, retry all but a refusal
                    doubt = doubt or unknown
                    retry = status == 429 or status >= 500 or label is not None
                    retry = retry and not self.stop and clock() - began < retry_for
                if retry:
                    attempt += 1
                    outcome.retried += 1
                    await asyncio.sleep(_backoff(config.backoff, attempt, retry_after))
                    continue
                break
            latencies.append(clock() - began)
            if status:
                outcome.statuses[status] += 1
            if doubt and status != 200:  # the last attempt's 503 does not undo an earlier 504
                unknown = True
            if unknown:
                outcome.unknown += 1
                self.on_unknown(token)
            if status == 200:
                label = self.on_answer(token, body)
                if label is None:
                    outcome.acknowledged += 1
                    if retry_for is not None:
                        outcome.duplicates += _duplicates(body) if content_type else duplicate
            elif label is None:
                label = f"HTTP {status}"
            if label is not None:
                outcome.failures[label] += 1
            outcome.done += 1
            if status:
                outcome.unreachable_in_a_row = 0
            else:
                outcome.unreachable_in_a_row += 1
                if outcome.unreachable_in_a_row >= self.give_up_after and not self.stop:
                    # Every request would wait out its retries against a dead server.
                    self.stop = True
                    outcome.gave_up = (
                        f"stopped early: {counted(outcome.unreachable_in_a_row, 'request')} "
                        f"in a row got no answer (last: {label})"
                    )


def _duplicates(body: bytes) -> int:
    """``duplicates`` of a batch's answer, ``{"accepted": N, "duplicates": D}``."""
    try:
        found = json.loads(body).get("duplicates", 0)
    except (ValueError, AttributeError):
        return 0
    return found if isinstance(found, int) else 0


def _backoff(base: float, attempt: int, retry_after: str | None) -> float:
    delay = min(MAX_BACKOFF, base * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
    if retry_after and retry_after.isdigit():
        delay = max(delay, min(float(retry_after), MAX_BACKOFF))
    return delay


async def run_load(
    base: str,
    config: LoadConfig,
    make: MakeRequest,
    on_answer: OnAnswer,
    outcome: Outcome | None = None,
    stop: asyncio.Event | None = None,
    on_unknown: OnUnknown = _ignore,
) -> Outcome:
    """Send ``config.requests`` requests to ``base`` (the endpoint URL) and count the answers.

    Setting ``stop`` (Ctrl-C) lets every worker finish its request in flight and
    return, so the counts (and the ledger built from them) stay true.
    """
    outcome = outcome or Outcome()
    outcome.requests = config.requests
    runner = _Runner(config, Endpoint(base, config.token), make, on_answer, outcome, on_unknown)
    stopper = None
    if stop is not None:

        async def watch_stop() -> None:
            await stop.wait()
            runner.stop = True
            outcome.interrupted = True

        stopper = asyncio.create_task(watch_stop())
    try:
        await runner.run()
    finally:
        if stopper is not None:
            stopper.cancel()
    return outcome
