"""Download distinct user names with a pool of threads sharing one HTTP client.

Sources like randomuser.me hand out a page of random names per request and throttle
bursts, so the pool retries throttling, server errors and timeouts with backoff, and
gives up only after a bounded run of failures in a row (a dead source should end the
command in seconds, a flaky one should not).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tapad.usernames.parse import NotNamesError, parse_names
from tapad.words import counted

DEFAULT_URL = "https://randomuser.me/api/?results=100&inc=login"
USER_AGENT = "tapad-usernames-fetch/1"
MAX_BACKOFF = 4.0


class FetchError(Exception):
    """Fetching stopped; ``str()`` is the one line for the user. ``names`` is what was gathered."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


@dataclass
class FetchStats:
    requests: int = 0
    failures: int = 0


@dataclass
class _Pool:
    """What the threads share; every field is touched only under ``lock``."""

    wanted: int
    names: dict[str, None]
    max_failures: int
    stale_limit: int
    on_progress: Callable[[int], None] | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    in_a_row: int = 0  # failures since the last success, across all threads
    stale: int = 0  # successful answers in a row that brought nothing new
    error: str | None = None
    last_failure: str = ""
    stats: FetchStats = field(default_factory=FetchStats)

    def add(self, batch: list[str]) -> None:
        with self.lock:
            self.stats.requests += 1
            self.in_a_row = 0
            before = len(self.names)
            for name in batch:
                if len(self.names) >= self.wanted:
                    break
                self.names.setdefault(name, None)
            self.stale = 0 if len(self.names) > before else self.stale + 1
            if len(self.names) >= self.wanted:
                self.stop.set()
            elif self.stale >= self.stale_limit:
                self.give_up(
                    f"the source keeps repeating itself: {self.stale} answers in a row "
                    f"brought no new name"
                )
            total = len(self.names)
        if self.on_progress is not None:
            self.on_progress(total)

    def failed(self, reason: str) -> None:
        with self.lock:
            self.stats.requests += 1
            self.stats.failures += 1
            self.in_a_row += 1
            self.last_failure = reason
            if self.in_a_row >= self.max_failures:
                self.give_up(f"{counted(self.in_a_row, 'request')} in a row failed, last: {reason}")

    def give_up(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.stop.set()


def fetch_usernames(
    url: str,
    count: int,
    *,
    threads: int = 8,
    existing: list[str] | None = None,
    timeout: float = 10.0,
    max_failures: int = 20,
    backoff: float = 0.25,
    stale_limit: int = 20,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[str], FetchStats]:
    """Names from ``existing`` first, then new ones in arrival order, ``count`` in all.

    Raises FetchError (carrying the names gathered so far) when the source fails.
    """
    pool = _Pool(
        wanted=count,
        names=dict.fromkeys(existing or []),
        max_failures=max_failures,
        stale_limit=stale_limit,
        on_progress=on_progress,
    )
    if len(pool.names) >= count:
        return list(pool.names), pool.stats
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with (
        httpx.Client(
            timeout=timeout,
            limits=limits,
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
        ) as client,
        ThreadPoolExecutor(threads, thread_name_prefix="tapad-fetch") as executor,
    ):
        workers = [executor.submit(_worker, client, url, pool, backoff) for _ in range(threads)]
        for worker in workers:
            worker.result()
    names = list(pool.names)
    if pool.error is not None:
        raise FetchError(pool.error, names)
    return names, pool.stats


def _worker(client: httpx.Client, url: str, pool: _Pool, backoff: float) -> None:
    """Request until the pool is full or stopped; back off on this thread's own failures."""
    mine = 0  # this thread's failures in a row: the backoff exponent
    while not pool.stop.is_set():
        reason, retry_after = _fetch_once(client, url, pool)
        if reason is None:
            mine = 0
            continue
        mine += 1
        delay = min(MAX_BACKOFF, backoff * 2 ** (mine - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_BACKOFF * 2))
        pool.stop.wait(delay)


def _fetch_once(client: httpx.Client, url: str, pool: _Pool) -> tuple[str | None, float | None]:
    """One request: hand names to the pool, or say why it failed (None when it did not)."""
    try:
        response = client.get(url)
    except httpx.TimeoutException:
        pool.failed("timed out")
        return "timeout", None
    except httpx.TransportError as exc:
        reason = f"cannot connect: {exc}" if str(exc) else f"cannot connect: {type(exc).__name__}"
        pool.failed(reason)
        return reason, None
    status = response.status_code
    if status == 429 or status >= 500:
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        pool.failed(reason)
        return reason, _retry_after(response)
    if status != 200:
        with pool.lock:
            pool.give_up(f"{url} answered HTTP {status} {response.reason_phrase}".rstrip())
        return "fatal", None
    try:
        names = parse_names(response.text, response.headers.get("content-type", ""))
    except NotNamesError as exc:
        with pool.lock:
            pool.give_up(f"{url} {exc}")
        return "fatal", None
    pool.add(names)
    return None, None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
