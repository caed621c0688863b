"""Event ids on every store: an (hour, user, id) already recorded is not counted again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tapad.buckets import current_hour
from tapad.store import Event, HourCounts, StoreOptions, open_store
from tapad.store.sqlite import SQLiteStore
from tests.support import RedisServer

HOUR = current_hour()  # ids of an hour past --dedup-hours are forgotten at once


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tapad.db"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("cluster_url"))


async def write_and_read(
    url: str, *batches: list[Event]
) -> tuple[list[frozenset[int]], dict[int, HourCounts]]:
    store = open_store(url)
    await store.connect()
    try:
        found = [await store.write(batch) for batch in batches]
        hours = sorted({e.hour for batch in batches for e in batch})
        return found, dict(zip(hours, await store.read_hours(hours), strict=True))
    finally:
        await store.close()


async def test_a_known_id_is_not_counted_again(any_store_url: str) -> None:
    first = [
        Event(HOUR, "alice", True, "a1"),
        Event(HOUR, "bob", False, "b1"),
        Event(HOUR, "alice", True, "a1"),  # the same event twice in one batch
        Event(HOUR, "carol", False),  # no id: counted as before
    ]
    again = [
        Event(HOUR, "bob", False, "b1"),  # a retry: known
        Event(HOUR, "dave", True, "b1"),  # the same id for another user: another event
        Event(HOUR + 1, "bob", False, "b1"),  # the same id in another hour: another event
        Event(HOUR, "carol", False),  # no id: counted again
    ]
    found, counts = await write_and_read(any_store_url, first, again)
    assert found == [frozenset({2}), frozenset({0})]
    assert counts[HOUR] == HourCounts(unique_users=4, clicks=2, impressions=3)
    assert counts[HOUR + 1] == HourCounts(unique_users=1, clicks=0, impressions=1)


async def test_a_batch_of_known_ids_only_changes_nothing(any_store_url: str) -> None:
    batch = [Event(HOUR, f"u{n}", n % 2 == 0, f"id-{n}") for n in range(3000)]
    found, counts = await write_and_read(any_store_url, batch, batch)
    assert found == [frozenset(), frozenset(range(3000))]
    assert counts[HOUR] == HourCounts(unique_users=3000, clicks=1500, impressions=1500)


async def test_sqlite_forgets_ids_after_dedup_hours(tmp_path: Path) -> None:
    now = [HOUR * 3600.0 + 10]
    store = SQLiteStore(
        str(tmp_path / "t.db"), StoreOptions(dedup_hours=2), clock=lambda: now[0], sweep_every=None
    )
    await store.connect()
    try:
        assert await store.write([Event(HOUR, "alice", True, "x")]) == frozenset()
        now[0] += 2 * 3600  # the hour ended 1 h ago: still remembered
        await store.sweep()
        assert await store.write([Event(HOUR, "alice", True, "x")]) == frozenset({0})
        now[0] += 3600  # two hours past its end: forgotten
        await store.sweep()
        assert await store.write([Event(HOUR, "alice", True, "x")]) == frozenset()
        assert (await store.read(HOUR)).clicks == 2
    finally:
        await store.close()


def test_redis_ids_expire_after_dedup_hours(redis_server: RedisServer) -> None:
    redis_server.flush()

    async def go() -> None:
        store = open_store(redis_server.url, StoreOptions(dedup_hours=5))
        await store.connect()
        try:
            await store.write([Event(HOUR, "alice", True, "x")])
        finally:
            await store.close()

    asyncio.run(go())
    (key,) = redis_server.cli("--scan", "--pattern", "tapad:*:d").split()
    assert int(redis_server.cli("EXPIRETIME", key)) == (HOUR + 1 + 5) * 3600
