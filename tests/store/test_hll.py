"""``--unique hll``: HyperLogLog per (hour, shard) on a real Redis and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tapad.store import Event, StoreOptions, open_store
from tests.support import RedisServer, TapadServer, http, parse_counts

NOW_MS = int(time.time() * 1000)
HOUR = NOW_MS // 3_600_000
USERS = 40_000


async def fill(url: str, unique: str, users: range, repeat: int = 1) -> dict[str, int]:
    """Write ``users`` (each ``repeat`` times) into the current hour; return the store's read."""
    store = open_store(url, StoreOptions(timeout=5.0, unique=unique))
    try:
        await store.connect()
        assert store.unique_mode == unique
        events = [Event(HOUR, f"user-{u}", u % 4 == 0) for _ in range(repeat) for u in users]
        for start in range(0, len(events), 2000):
            await store.write(events[start : start + 2000])
        counts = await store.read(HOUR)
        return {
            "unique_users": counts.unique_users,
            "clicks": counts.clicks,
            "impressions": counts.impressions,
        }
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_hll_estimates_tens_of_thousands_of_users_within_3_percent(
    where: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url" if where == "redis" else "cluster_url")
    got = asyncio.run(fill(url, "hll", range(USERS), repeat=2))
    clicks = 2 * len(range(0, USERS, 4))
    # Clicks and impressions stay exact; only the unique count is an estimate.
    assert got["clicks"] == clicks
    assert got["impressions"] == 2 * USERS - clicks
    assert abs(got["unique_users"] - USERS) <= 0.03 * USERS, got


def test_hll_memory_is_bounded_while_a_set_grows(redis_server: RedisServer) -> None:
    """Bytes for one hour on one shard: a set grows with users, a HyperLogLog stops at ~12 KB."""

    def users_key_bytes() -> int:
        return int(redis_server.cli("MEMORY", "USAGE", f"tapad:{{{HOUR}.0}}:u"))

    sizes = {}
    for mode in ("exact", "hll"):
        redis_server.flush()
        asyncio.run(fill(redis_server.url, mode, range(10_000)))
        small = users_key_bytes()
        asyncio.run(fill(redis_server.url, mode, range(10_000, 40_000)))
        sizes[mode] = (small, users_key_bytes())
    exact_small, exact_large = sizes["exact"]
    hll_small, hll_large = sizes["hll"]
    assert exact_large > 3 * exact_small  # a set: bytes per user
    # Dense HyperLogLog: 12,304 bytes of registers and header, 14,336 once jemalloc rounds up.
    assert hll_large <= 15 * 1024
    assert hll_large <= hll_small * 1.1  # no growth with more users


def test_serve_unique_hll_over_http_and_a_mismatch_is_refused(redis_url: str) -> None:
    server = TapadServer(redis_url, "--unique", "hll").start()
    try:
        for i in range(300):
            kind = "click" if i % 3 == 0 else "impression"
            status, _, _ = http(
                "POST", f"{server.url}/analytics?timestamp={NOW_MS}&user=u{i % 150}&{kind}"
            )
            assert status == 200
        _, _, body = http("GET", f"{server.url}/analytics?timestamp={NOW_MS}")
        got = parse_counts(body)
    finally:
        server.stop()
    assert "(unique users: hll)" in server.log.decode()
    assert got["clicks"] == 100 and got["impressions"] == 200
    assert abs(got["unique_users"] - 150) <= 0.03 * 150

    refused = TapadServer(redis_url, "--unique", "exact").start(wait=False)
    assert refused.wait(30) == 2
    last = refused.log.decode().strip().splitlines()[-1]
    assert last.startswith("error: the store was set up with shards=1 unique=hll")


def test_hll_on_sqlite_is_one_line(tmp_path: Path) -> None:
    server = TapadServer(f"sqlite:///{tmp_path}/t.db", "--unique", "hll").start(wait=False)
    assert server.wait(30) == 2
    assert server.log.decode().strip().splitlines() == [
        "error: the sqlite store counts unique users exactly; --unique hll needs Redis"
    ]


def test_shards_on_sqlite_is_one_line(tmp_path: Path) -> None:
    server = TapadServer(f"sqlite:///{tmp_path}/t.db", "--shards", "4").start(wait=False)
    assert server.wait(30) == 2
    assert server.log.decode().strip().splitlines() == [
        "error: the sqlite store has no shards; --shards needs Redis"
    ]
