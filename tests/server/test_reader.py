"""GET coalescing against a real SQLite store whose answers come back slowly.

Read-your-writes is easy to keep when reads are fast and easy to lose when they
are slow: a coalescer that lets a GET join a read already on its way to the
store can hand that GET a snapshot taken before a POST it saw acknowledged. So
the store here is a real ``SQLiteStore`` whose reads take their snapshot at once
and then answer only after a delay, as over a slow network. The same scenarios
run against ``CoalescingReader`` and against a naive "join the read in flight"
coalescer, to show that the tests catch the stale answers the naive one gives.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from tapad.server.reader import CoalescingReader
from tapad.server.writer import GroupCommitter
from tapad.store.base import (
    Duplicates,
    Event,
    HourCounts,
    PartialWrite,
    StoreCondition,
    StoreError,
    UniqueCount,
)
from tapad.store.sqlite import SQLiteStore
from tests.support import wait_until_async

HOUR = 494_000  # any hour will do; the store starts empty
READ_DELAY = 0.05  # seconds between a read's snapshot and its answer


class SlowReadStore:
    """A real SQLite store whose read answers arrive ``delay`` seconds after the snapshot.

    Writes go straight through. ``reads`` counts what reached the store, so tests
    can see how many GETs shared one read.
    """

    unique_mode = "exact"

    def __init__(self, path: Path, delay: float = READ_DELAY) -> None:
        self.inner = SQLiteStore(str(path), synchronous="normal")
        self.delay = delay
        self.reads = 0
        self.snapshots = 0  # reads whose snapshot is taken (their answer still to come)
        self.in_doubt = self.inner.in_doubt
        self.fault: str | None = None

    async def connect(self) -> None:
        await self.inner.connect()

    async def write(self, events: Sequence[Event]) -> Duplicates:
        return await self.inner.write(events)

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours([hour]))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        self.reads += 1
        counts = await self.inner.read_hours(hours)  # the snapshot is taken now...
        self.snapshots += 1
        await asyncio.sleep(self.delay)  # ...and the answer comes back later: the slow store
        return counts

    async def hours(self) -> list[int]:
        return await self.inner.hours()

    async def ping(self) -> None:
        await self.inner.ping()

    # The rest of the Store protocol, straight through.
    def condition(self) -> StoreCondition:
        return self.inner.condition()

    async def probe_write(self) -> None:
        await self.inner.probe_write()

    async def delete_hours(
        self, hours: Sequence[int], progress: Callable[[int], None] | None = None
    ) -> int:
        return await self.inner.delete_hours(hours, progress)

    async def uniques(self, hours: Sequence[int]) -> UniqueCount:
        return await self.inner.uniques(hours)

    async def close(self) -> None:
        await self.inner.close()


class JoinInFlightReader:
    """The wrong coalescer: a GET joins whatever read of its hour is in flight."""

    def __init__(self, store: SlowReadStore) -> None:
        self._store = store
        self._in_flight: dict[int, asyncio.Task[HourCounts]] = {}
        self.store_reads = 0

    def read(self, hour: int) -> Awaitable[HourCounts]:
        task = self._in_flight.get(hour)
        if task is None:
            self.store_reads += 1
            task = self._in_flight[hour] = asyncio.ensure_future(self._store.read(hour))
            task.add_done_callback(lambda _: self._in_flight.pop(hour, None))
        return task


R = TypeVar("R")
ReaderFactory = Callable[[SlowReadStore], CoalescingReader | JoinInFlightReader]


def run_with_store(
    tmp_path: Path, scenario: Callable[[SlowReadStore, GroupCommitter], Awaitable[R]]
) -> R:
    """Run ``scenario`` with a fresh slow store and a group committer on it."""

    async def main() -> R:
        store = SlowReadStore(tmp_path / "tapad.db")
        await store.connect()
        committer = GroupCommitter(store)
        committer.start()
        try:
            return await scenario(store, committer)
        finally:
            await committer.drain()
            await store.close()

    return asyncio.run(main())


def post(committer: GroupCommitter, user: str) -> Awaitable[PartialWrite | int | None]:
    return committer.submit(Event(HOUR, user, True))


async def stale_after_ack(
    reader_factory: ReaderFactory, store: SlowReadStore, committer: GroupCommitter
) -> tuple[int, int]:
    """GET, then POST (acknowledged) while that read is in flight, then GET again.

    Returns (clicks the second GET saw, clicks acknowledged before it was sent).
    """
    reader = reader_factory(store)
    first = reader.read(HOUR)  # its read is now on its way, snapshot: no events
    await wait_until_async(lambda: store.snapshots, what="the first read's snapshot")
    await post(committer, "alice")  # acknowledged: committed to SQLite
    second = await reader.read(HOUR)  # arrived after the ack: must see alice
    # The first read's snapshot was taken before alice was posted: a read really was in flight
    # when she was acknowledged, which is what the second GET must not join. (Were it 1, the
    # scenario would prove nothing: the second GET could then share the first read safely.)
    assert (await first).clicks == 0
    return second.clicks, 1


def test_get_after_ack_sees_the_event_while_an_older_read_is_in_flight(tmp_path: Path) -> None:
    seen, acked = run_with_store(
        tmp_path, lambda store, committer: stale_after_ack(CoalescingReader, store, committer)
    )
    assert seen == acked


def test_the_same_check_catches_a_coalescer_that_joins_the_read_in_flight(
    tmp_path: Path,
) -> None:
    """The scenario has teeth: the naive coalescer answers from a stale snapshot."""
    seen, acked = run_with_store(
        tmp_path, lambda store, committer: stale_after_ack(JoinInFlightReader, store, committer)
    )
    assert seen < acked


async def concurrent_load(
    reader_factory: ReaderFactory, store: SlowReadStore, committer: GroupCommitter
) -> tuple[int, int, int]:
    """Writers and readers at once; every GET checks it saw every click acked before it.

    Returns (stale answers, GETs answered, reads that reached the store).
    """
    reader = reader_factory(store)
    acked = 0
    stale = 0
    gets = 0
    rng = random.Random(5)

    async def writer(n: int) -> None:
        nonlocal acked
        for i in range(25):
            await post(committer, f"user-{n}-{i}")
            acked += 1
            await asyncio.sleep(rng.uniform(0, READ_DELAY / 4))  # random interleaving, on purpose

    async def getter() -> None:
        nonlocal stale, gets
        for _ in range(25):
            before = acked  # every POST acknowledged before this GET was sent
            counts = await reader.read(HOUR)
            gets += 1
            if counts.clicks < before:
                stale += 1
            await asyncio.sleep(rng.uniform(0, READ_DELAY / 4))  # random interleaving, on purpose

    await asyncio.gather(*(writer(n) for n in range(4)), *(getter() for _ in range(20)))
    final = await reader.read(HOUR)
    assert final == HourCounts(acked, acked, 0)
    return stale, gets, store.reads


def test_concurrent_gets_share_reads_and_never_miss_an_acknowledged_post(
    tmp_path: Path,
) -> None:
    stale, gets, reads = run_with_store(
        tmp_path, lambda store, committer: concurrent_load(CoalescingReader, store, committer)
    )
    assert stale == 0
    assert gets == 20 * 25
    assert reads < gets / 2  # GETs really do share reads (counts, not timings)


def test_concurrent_load_catches_the_naive_coalescer(tmp_path: Path) -> None:
    stale, _, _ = run_with_store(
        tmp_path, lambda store, committer: concurrent_load(JoinInFlightReader, store, committer)
    )
    assert stale > 0


def test_gets_arriving_during_a_read_all_join_the_next_one(tmp_path: Path) -> None:
    """One read in flight, one open read: a burst of GETs costs exactly two store reads."""

    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)
        first = reader.read(HOUR)
        await asyncio.sleep(0)  # the first read leaves
        await post(committer, "bob")
        burst = [reader.read(HOUR) for _ in range(100)]
        assert reader.store_reads == 1  # the burst waits for the read in flight to return
        answers = await asyncio.gather(first, *burst)
        assert all(a == HourCounts(1, 1, 0) for a in answers[1:])
        assert store.reads == reader.store_reads == 2
        other = await reader.read(HOUR + 1)  # another hour has its own read
        assert other == HourCounts()
        assert store.reads == 3

    run_with_store(tmp_path, scenario)


def test_gets_for_many_hours_share_the_next_read_and_see_every_ack(tmp_path: Path) -> None:
    """Past hours ride along: GETs for ten hours, arriving during a read, cost one more."""

    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)
        first = reader.read(HOUR)
        await asyncio.sleep(0)  # the first read leaves
        await committer.submit(Event(HOUR - 5, "dave", True))  # acknowledged
        burst = [reader.read(HOUR - h) for h in range(10)]
        answers = await asyncio.gather(first, *burst)
        assert answers[1 + 5] == HourCounts(1, 1, 0)  # the past hour's GET saw the ack
        assert all(a == HourCounts() for i, a in enumerate(answers) if i != 1 + 5)
        assert store.reads == reader.store_reads == 2

    run_with_store(tmp_path, scenario)


def test_a_cancelled_get_does_not_wedge_its_hour(tmp_path: Path) -> None:
    """A GET given up on mid-read (its task cancelled) must not leave later GETs hanging."""

    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)
        # The read in flight outlasts carol's commit below even on a loaded machine: the
        # open read (waiting's) leaves after it, so it must see carol.
        store.delay = 1.0

        async def get() -> HourCounts:
            return await reader.read(HOUR)

        gone = asyncio.ensure_future(get())
        await wait_until_async(lambda: store.reads, what="its read in flight")
        waiting = asyncio.ensure_future(get())  # joins the open read behind it
        await asyncio.sleep(0)  # one turn of the loop: it joins
        gone.cancel()
        await post(committer, "carol")
        async with asyncio.timeout(5):
            assert (await waiting).clicks == 1
            assert (await reader.read(HOUR)).clicks == 1

    run_with_store(tmp_path, scenario)


def test_a_get_arriving_after_a_cancelled_one_does_not_inherit_its_cancellation(
    tmp_path: Path,
) -> None:
    """GETs share the open read's future; a cancelled GET cancels it, later GETs need another."""

    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)

        async def get() -> HourCounts:
            return await reader.read(HOUR)

        first = reader.read(HOUR)  # in flight
        await asyncio.sleep(0)  # one turn of the loop: the read leaves
        gone = asyncio.ensure_future(get())  # waits on the open read
        await asyncio.sleep(0)  # one turn: it waits
        gone.cancel()
        await asyncio.sleep(0)  # one turn: the cancellation runs
        await post(committer, "erin")
        async with asyncio.timeout(5):
            assert (await get()).clicks == 1  # answered, not cancelled
            await first

    run_with_store(tmp_path, scenario)


def test_a_failed_read_fails_its_gets_and_the_next_read_works(tmp_path: Path) -> None:
    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)
        await post(committer, "dave")
        await store.inner.close()  # the store goes away: reads fail with StoreError
        with pytest.raises(StoreError):
            await reader.read(HOUR)
        store.inner = SQLiteStore(str(tmp_path / "tapad.db"))  # and comes back
        async with asyncio.timeout(5):
            assert (await reader.read(HOUR)).clicks == 1

    run_with_store(tmp_path, scenario)


def test_a_range_joins_the_next_read_with_the_gets_and_sees_every_ack(tmp_path: Path) -> None:
    """GET /analytics/hours: a whole range rides along with the GETs in one read, and like
    them never joins a read that left before it arrived."""

    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)
        first = reader.read(HOUR)
        await asyncio.sleep(0)  # the first read leaves, snapshot: no events
        await committer.submit(Event(HOUR - 3, "fay", True))  # acknowledged
        await post(committer, "gus")
        hours = range(HOUR - 10, HOUR + 1)
        span = reader.read_range(hours)
        current = reader.read(HOUR)
        other_span = reader.read_range(range(HOUR - 1, HOUR + 2))  # overlaps: read once
        counts, now, other, _ = await asyncio.gather(span, current, other_span, first)
        assert len(counts) == 11
        assert counts[7] == HourCounts(1, 1, 0), "the range missed an acknowledged event"
        assert counts[10] == now == HourCounts(1, 1, 0)
        assert [c for i, c in enumerate(counts) if i not in (7, 10)] == [HourCounts()] * 9
        assert other == [HourCounts(), HourCounts(1, 1, 0), HourCounts()]
        assert store.reads == reader.store_reads == 2

    run_with_store(tmp_path, scenario)


def test_a_failed_read_fails_its_ranges_and_those_behind_it(tmp_path: Path) -> None:
    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)
        await post(committer, "hal")
        await store.inner.close()  # reads now fail with StoreError
        span = reader.read_range(range(HOUR - 2, HOUR + 1))
        await asyncio.sleep(0)  # its read leaves
        behind = reader.read_range(range(HOUR, HOUR + 1))
        single = reader.read(HOUR)
        for fut in (span, behind, single):
            with pytest.raises(StoreError):
                await fut
        store.inner = SQLiteStore(str(tmp_path / "tapad.db"))  # and comes back
        async with asyncio.timeout(5):
            assert (await reader.read_range(range(HOUR, HOUR + 1)))[0].clicks == 1

    run_with_store(tmp_path, scenario)


def test_a_cancelled_range_does_not_wedge_the_reader(tmp_path: Path) -> None:
    async def scenario(store: SlowReadStore, committer: GroupCommitter) -> None:
        reader = CoalescingReader(store)

        async def hours() -> list[HourCounts]:
            return await reader.read_range(range(HOUR - 1, HOUR + 1))

        gone = asyncio.ensure_future(hours())
        await wait_until_async(lambda: store.reads, what="its read in flight")
        gone.cancel()
        await post(committer, "ivy")
        async with asyncio.timeout(5):
            assert (await hours())[1].clicks == 1
            assert (await reader.read(HOUR)).clicks == 1

    run_with_store(tmp_path, scenario)
