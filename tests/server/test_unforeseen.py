"""Whatever fails behind the hot path is an outage, said in a few words.

An exception the committer or the reader did not foresee (a bug, in tapad or in a store)
takes the path of a store error: the rate-limited log (its traceback at most once per
line, never once per batch), /healthz 503, the store-error metric. A store configuration
fault found mid-run makes /healthz 503 with one clear log line. No answer and no /healthz
shows exception text, hosts or user names: those go to the log.

The server runs in this process, on loopback, on a real SQLite store made to fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tapad.server.config import ServeSettings
from tapad.server.run import assemble
from tapad.store.base import CommitUnknown, Duplicates, Event, HourCounts, StoreConfigError
from tapad.store.sqlite import SQLiteStore
from tests.support import RedisServer, TapadServer, http

SECRET = "db-7.internal.example:6379 user=alice"  # what must stay in the log
TS = 3_600_000 * 5


class BuggyStore(SQLiteStore):
    """A real SQLite store with a bug in its write and read paths."""

    async def write(self, events: Sequence[Event]) -> Duplicates:
        raise KeyError(SECRET)

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        raise ZeroDivisionError(SECRET)


class MisconfiguredStore(SQLiteStore):
    """A store that finds it is misconfigured on every write (a key of the wrong type)."""

    async def write(self, events: Sequence[Event]) -> Duplicates:
        raise StoreConfigError(f"WRONGTYPE at {SECRET}")


class SilentStore(SQLiteStore):
    """A store that stayed silent past the commit deadline for every batch."""

    async def write(self, events: Sequence[Event]) -> Duplicates:
        raise CommitUnknown(f"no reply from {SECRET}")


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) if r.exc_info else r.getMessage() for r in self.records)


@pytest.fixture
def kept() -> Iterator[Kept]:
    handler = Kept()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tapad")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@asynccontextmanager
async def serving(store: SQLiteStore) -> AsyncIterator[str]:
    await store.connect()
    server, handler = assemble(store, ServeSettings())
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await handler.committer.drain()
        await store.close()


async def fetch(session: aiohttp.ClientSession, method: str, url: str) -> tuple[int, str]:
    async with session.request(method, url) as response:
        return response.status, await response.text()


def metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_a_bug_in_the_write_and_read_paths_is_an_outage(tmp_path: Path, kept: Kept) -> None:
    async def main() -> list[tuple[int, str]]:
        store = BuggyStore(str(tmp_path / "t.db"))
        async with serving(store) as url, aiohttp.ClientSession() as s:
            posts = [await fetch(s, "POST", f"{url}/analytics?timestamp={TS}&user=u{i}&click")
                     for i in range(30)]  # fmt: skip
            get = await fetch(s, "GET", f"{url}/analytics?timestamp={TS}")
            health = await fetch(s, "GET", f"{url}/healthz")
            metrics = await fetch(s, "GET", f"{url}/metrics")
        return [*posts, get, health, metrics]

    *posts, get, health, metrics = asyncio.run(main())
    # may have been applied (it failed while committing): not a 503, which promises "not"
    assert {status for status, _ in posts} == {504}
    assert posts[0][1].count("\n") == 1 and "outcome unknown" in posts[0][1]
    assert get[0] == 503
    assert health == (503, "internal error: see the server log\n")
    for _, body in (*posts, get, health):
        assert "alice" not in body and "internal.example" not in body and "Error" not in body
    assert metric(metrics[1], 'tapad_store_errors_total{op="write"}') == 30
    assert metric(metrics[1], 'tapad_store_errors_total{op="read"}') == 1
    assert metric(metrics[1], "tapad_events_outcome_unknown_total") == 30
    log = kept.text()
    assert SECRET in log and "KeyError" in log and "ZeroDivisionError" in log
    tracebacks = [r for r in kept.records if r.exc_info]
    assert len(tracebacks) == 2, log  # one for the writes, one for the reads: not 30 + 1


def test_a_store_fault_mid_run_is_one_log_line_and_healthz_503(tmp_path: Path, kept: Kept) -> None:
    async def main() -> list[tuple[int, str]]:
        store = MisconfiguredStore(str(tmp_path / "t.db"))
        async with serving(store) as url, aiohttp.ClientSession() as s:
            posts = [await fetch(s, "POST", f"{url}/analytics?timestamp={TS}&user=u{i}&click")
                     for i in range(20)]  # fmt: skip
            health = await fetch(s, "GET", f"{url}/healthz")
            await asyncio.sleep(0)  # one turn of the loop between the two probes
            health_again = await fetch(s, "GET", f"{url}/healthz")
        return [*posts, health, health_again]

    *posts, health, health_again = asyncio.run(main())
    assert {status for status, _ in posts} == {503}  # refused before sending: not recorded
    assert health == health_again == (503, "store misconfigured: see the server log\n")
    assert all("WRONGTYPE" not in body and "alice" not in body for _, body in posts)
    faults = [r for r in kept.records if r.getMessage().startswith("store misconfigured")]
    assert len(faults) == 1, kept.text()  # one clear line, not one per batch
    assert "WRONGTYPE" in faults[0].getMessage() and faults[0].levelno == logging.ERROR
    assert not [r for r in kept.records if r.exc_info]  # a foreseen fault: no traceback


def test_a_batch_in_doubt_is_answered_504_in_one_line_and_counted(
    tmp_path: Path, kept: Kept
) -> None:
    async def main() -> list[tuple[int, str]]:
        async with (
            serving(SilentStore(str(tmp_path / "t.db"))) as url,
            aiohttp.ClientSession() as s,
        ):
            posts = await asyncio.gather(
                *(fetch(s, "POST", f"{url}/analytics?timestamp={TS}&user=u{i}&impression")
                  for i in range(40))
            )  # fmt: skip
            metrics = await fetch(s, "GET", f"{url}/metrics")
        return [*posts, metrics]

    *posts, metrics = asyncio.run(main())
    # the batches not yet sent when the first one failed are known not applied: 503
    statuses = [status for status, _ in posts]
    assert set(statuses) <= {503, 504} and 504 in statuses, statuses
    assert all(body.count("\n") == 1 and "alice" not in body for _, body in posts)
    unknown = metric(metrics[1], "tapad_events_outcome_unknown_total")
    assert unknown == statuses.count(504)
    answered_504 = metric(
        metrics[1], 'tapad_http_request_duration_seconds_count{method="POST",status="504"}'
    )
    assert answered_504 == statuses.count(504)
    assert "answered 504" in kept.text()


def test_an_error_inside_exec_on_a_real_redis_is_one_error_line_and_healthz_503(
    tmp_path: Path,
) -> None:
    """Someone wrote a key of the wrong type under tapad's prefix: Redis applies the rest of
    the transaction. That batch is in doubt (504), /healthz says the store is misconfigured,
    the log says it once at ERROR, and no answer shows Redis's words."""
    redis = RedisServer(tmp_path / "redis").start()
    srv = TapadServer(redis.url).start()
    try:
        assert http("POST", f"{srv.url}/analytics?timestamp={TS}&user=a&click")[0] == 200
        users = next(
            k for k in redis.cli("--scan", "--pattern", "tapad:*").split() if k.endswith(":u")
        )
        redis.cli("DEL", users)
        redis.cli("SET", users, "not a set")
        first = http("POST", f"{srv.url}/analytics?timestamp={TS}&user=b&click")
        later = [
            http("POST", f"{srv.url}/analytics?timestamp={TS}&user=c{i}&click") for i in range(5)
        ]
        health = http("GET", f"{srv.url}/healthz")
    finally:
        srv.stop()
        redis.stop()
    assert first[0] == 504
    assert {status for status, _, _ in later} == {503}  # refused before sending
    assert (health[0], health[2]) == (503, "store misconfigured: see the server log\n")
    for _, _, body in (first, *later, health):
        assert "WRONGTYPE" not in body and str(redis.port) not in body
    log = srv.log.decode()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "WRONGTYPE" in errors[0], log
    assert "Traceback" not in log
