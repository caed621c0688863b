"""``--retention-hours R``: an hour's keys expire R hours after the hour ends (real Redis)."""

from __future__ import annotations

import asyncio
import time

from tapad.store import open_store
from tests.support import RedisClusterProcs, RedisServer, TapadServer, http, parse_counts

H_MS = 3_600_000


def post(url: str, ts: int, user: str) -> int:
    return http("POST", f"{url}/analytics?timestamp={ts}&user={user}&click")[0]


def counts(url: str, ts: int) -> dict[str, int]:
    status, _, body = http("GET", f"{url}/analytics?timestamp={ts}")
    assert status == 200
    return parse_counts(body)


def ttl(redis: RedisServer, key: str, *cluster: str) -> int:
    return int(redis.cli(*cluster, "TTL", key))


def expected_ttl(hour: int, retention: int) -> tuple[int, int]:
    """The TTL bounds of an hour's keys written now: deadline minus now, give or take 5 s."""
    left = (hour + 1 + retention) * 3600 - time.time()
    return int(left) - 5, int(left) + 1


def stored_hours(url: str) -> list[int]:
    async def go() -> list[int]:
        store = open_store(url)
        try:
            await store.connect()
            return await store.hours()
        finally:
            await store.close()

    return asyncio.run(go())


def test_hours_expire_after_the_retention_and_servers_agree_on_it(
    redis_server: RedisServer, redis_url: str
) -> None:
    now = int(time.time() * 1000)
    hour = now // H_MS
    server = TapadServer(redis_url, "--retention-hours", "2").start()
    try:
        assert post(server.url, now, "a") == 200
        assert post(server.url, now - H_MS, "b") == 200
        assert post(server.url, now - 5 * H_MS, "old") == 200  # ended more than 2 hours ago
        assert counts(server.url, now - 5 * H_MS) == {
            "unique_users": 0,
            "clicks": 0,
            "impressions": 0,
        }
        assert counts(server.url, now)["clicks"] == 1
    finally:
        server.stop()
    for h in (hour, hour - 1):
        low, high = expected_ttl(h, 2)
        for key in (f"tapad:{{{h}.0}}:u", f"tapad:{{{h}.0}}:n", f"tapad:{{{h}.0}}:h"):
            assert low <= ttl(redis_server, key) <= high, key  # the sketch (:h) too
    assert redis_server.cli("EXISTS", f"tapad:{{{hour - 5}.0}}:u") == "0"
    assert redis_server.cli("HGET", "tapad:layout", "retention") == "2"
    assert stored_hours(redis_url) == [hour, hour - 1]
    raw_index = redis_server.cli("ZRANGE", "tapad:hours", "0", "-1").split()
    assert str(hour - 5) not in raw_index

    # A server started without the option adopts the store's retention ...
    adopted = TapadServer(redis_url).start()
    try:
        assert post(adopted.url, now + H_MS, "c") == 200
    finally:
        adopted.stop()
    low, high = expected_ttl(hour + 1, 2)
    assert low <= ttl(redis_server, f"tapad:{{{hour + 1}.0}}:u") <= high
    # ... one asking for another retention refuses to start, in one line.
    refused = TapadServer(redis_url, "--retention-hours", "3").start(wait=False)
    assert refused.wait(30) == 2
    last = refused.log.decode().strip().splitlines()[-1]
    assert last.startswith("error: the store was set up with shards=1 unique=exact retention=2")

    # Without a retention (another key prefix: another store), nothing expires.
    forever = TapadServer(f"{redis_url}?prefix=forever:").start()
    try:
        assert post(forever.url, now, "a") == 200
    finally:
        forever.stop()
    assert ttl(redis_server, f"forever:{{{hour}.0}}:u") == -1
    assert redis_server.cli("HGET", "forever:layout", "retention") == "0"


def test_retention_on_the_cluster(redis_cluster: RedisClusterProcs, cluster_url: str) -> None:
    now = int(time.time() * 1000)
    hour = now // H_MS
    server = TapadServer(cluster_url, "--retention-hours", "1").start()
    try:
        for i in range(40):
            assert post(server.url, now, f"user{i}") == 200
        assert counts(server.url, now)["unique_users"] == 40
    finally:
        server.stop()
    low, high = expected_ttl(hour, 1)
    keys = [
        (node, k)
        for node, ks in zip(
            redis_cluster.nodes, redis_cluster.keys_per_node(f"tapad:{{*}}:{hour}:*"), strict=True
        )
        for k in ks
    ]
    assert len(keys) == 3 * 3  # users, their sketch and counts; a shard per master
    for node, key in keys:
        assert low <= ttl(node, key) <= high, key
