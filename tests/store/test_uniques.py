"""``Store.uniques``: distinct users over a range of hours, on every store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tapad.store import Event, StoreOptions, UniqueCount, open_store
from tests.support import RedisClusterProcs, RedisServer

run = asyncio.run
HOUR = 480_000  # 2024-10-04: any hour will do, far from the tests that use "now"


async def write_and_count(
    url: str,
    batches: Sequence[Sequence[Event]],
    hours: Sequence[int],
    **options: Any,
) -> UniqueCount:
    store = open_store(url, StoreOptions(**options))
    await store.connect()
    try:
        for batch in batches:
            await store.write(batch)
        return await store.uniques(hours)
    finally:
        await store.close()


def three_hours() -> list[list[Event]]:
    """alice in all three hours, bob in two, carol in one: 3 distinct, 6 summed."""
    return [
        [Event(HOUR, "alice", True), Event(HOUR, "bob", False)],
        [Event(HOUR + 1, "alice", False), Event(HOUR + 1, "bob", False)],
        [Event(HOUR + 2, "alice", True), Event(HOUR + 2, "carol", False)],
    ]


def test_a_user_in_three_hours_counts_once(store_url: str) -> None:
    hours = range(HOUR, HOUR + 3)
    assert run(write_and_count(store_url, three_hours(), hours)) == UniqueCount(3, True)


def test_only_the_hours_asked_are_counted(store_url: str) -> None:
    got = run(write_and_count(store_url, three_hours(), [HOUR + 1, HOUR + 2, HOUR + 3]))
    assert got == UniqueCount(3, True)  # alice, bob, carol
    assert run(write_and_count(store_url, [], [HOUR + 1])) == UniqueCount(2, True)
    assert run(write_and_count(store_url, [], [HOUR - 5, HOUR - 4])) == UniqueCount(0, True)


def test_a_cluster_counts_across_hours_and_shards(cluster_url: str) -> None:
    batches = [[Event(HOUR + h, f"user{i}", i % 2 == 0) for i in range(200)] for h in range(4)]
    hours = range(HOUR, HOUR + 4)
    assert run(write_and_count(cluster_url, batches, hours)) == UniqueCount(200, True)
    # Past the limit: the sketches, merged per shard in the shard's own slot.
    estimate = run(write_and_count(cluster_url, [], hours, exact_uniques_limit=10))
    assert not estimate.exact
    assert abs(estimate.unique_users - 200) <= 6


def test_past_the_limit_redis_estimates_and_says_so(redis_url: str) -> None:
    users = 5_000
    batches = [
        [Event(HOUR + h, f"u{i}", False) for i in range(h * 1000, h * 1000 + users)]
        for h in range(4)
    ]  # 8,000 distinct, 20,000 entries summed over the hours
    hours = range(HOUR, HOUR + 4)
    assert run(write_and_count(redis_url, batches, hours)) == UniqueCount(8_000, True)
    got = run(write_and_count(redis_url, [], hours, exact_uniques_limit=19_999))
    assert not got.exact
    assert abs(got.unique_users - 8_000) <= 0.03 * 8_000
    # At the limit exactly, still exact.
    assert run(write_and_count(redis_url, [], hours, exact_uniques_limit=20_000)).exact


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_hll_mode_estimates_within_3_percent(where: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_url" if where == "redis" else "cluster_url")
    users = 20_000
    # Five hours, each a window of 8,000 users sliding by 3,000: 20,000 distinct in all.
    batches = [
        [Event(HOUR + h, f"user-{i}", i % 3 == 0) for i in range(h * 3000, h * 3000 + 8000)]
        for h in range(5)
    ]
    assert batches[-1][-1].user == f"user-{users - 1}"
    got = run(write_and_count(url, batches, range(HOUR, HOUR + 5), unique="hll"))
    assert not got.exact
    assert abs(got.unique_users - users) <= 0.03 * users, got


def test_hours_written_before_the_sketches_still_estimate(redis_server: RedisServer) -> None:
    """A store from before the sketches: sets only. Past the limit their members are added
    to the merge key instead (and an hour that has its sketch is merged as usual)."""
    redis_server.flush()
    for i in range(300):
        redis_server.cli("SADD", f"tapad:{{{HOUR}.0}}:u", f"old{i}", f"both{i}")
    run(
        write_and_count(
            redis_server.url, [[Event(HOUR + 1, f"both{i}", True) for i in range(300)]], []
        )
    )
    hours = range(HOUR, HOUR + 2)
    assert run(write_and_count(redis_server.url, [], hours)) == UniqueCount(600, True)
    got = run(write_and_count(redis_server.url, [], hours, exact_uniques_limit=1))
    assert not got.exact
    assert abs(got.unique_users - 600) <= 18
    # Nothing of the count is left behind in the store.
    assert redis_server.cli("--raw", "KEYS", "tapad:uniques:*") == ""


def test_a_cluster_store_laid_out_before_shard_tags_estimates_too(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """{hour.shard} keys, each in a slot of its own: the sketches are copied next to the
    merge key (GET, SET) before PFMERGE, which cannot read across slots."""
    redis_cluster.nodes[0].cli(
        "-c", "HSET", "tapad:layout", "shards", "4", "unique", "exact", "retention", "0"
    )
    batches = [[Event(HOUR + h, f"user{i}", False) for i in range(h * 50, h * 50 + 300)]
               for h in range(3)]  # fmt: skip
    hours = range(HOUR, HOUR + 3)
    assert run(write_and_count(cluster_url, batches, hours)) == UniqueCount(400, True)
    got = run(write_and_count(cluster_url, [], hours, exact_uniques_limit=1))
    assert not got.exact and abs(got.unique_users - 400) <= 12


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_events_with_ids_feed_the_sketches_too(where: str, request: pytest.FixtureRequest) -> None:
    """Counted by the ids script, not the plain commands: their users reach the sketch as
    well (each hour has a sketch, from its events without ids, that must hold them all)."""
    url = str(request.getfixturevalue(f"{where}_url"))
    batches = [
        [
            Event(HOUR + h, f"v{i}", True, f"id-{h}-{i}" if i % 2 else None)
            for i in range(h * 500, h * 500 + 1000)
        ]
        for h in range(3)
    ]  # 2,000 distinct users, 3,000 entries summed over the hours; half of them with ids
    hours = range(HOUR, HOUR + 3)
    assert run(write_and_count(url, batches, hours)) == UniqueCount(2_000, True)
    got = run(write_and_count(url, [], hours, exact_uniques_limit=10))
    assert not got.exact
    assert abs(got.unique_users - 2_000) <= 0.03 * 2_000
