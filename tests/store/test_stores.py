"""Every store behind the one interface, on a real SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tapad.store import Event, HourCounts, StoreConfigError, StoreOptions, open_store
from tests.support import RedisServer, TapadServer, http, parse_counts

run = asyncio.run


async def write_and_read(url: str) -> tuple[HourCounts, HourCounts, list[int]]:
    store = open_store(url)
    await store.connect()
    try:
        await store.write([Event(10, "a", True), Event(10, "b", False), Event(10, "a", False)])
        await store.write([Event(10, "c", True), Event(12, "a", True)])
        return await store.read(10), await store.read(11), await store.hours()
    finally:
        await store.close()


def test_write_read_hours(store_url: str) -> None:
    ten, eleven, hours = run(write_and_read(store_url))
    assert ten == HourCounts(unique_users=3, clicks=2, impressions=2)
    assert eleven == HourCounts()
    assert hours == [12, 10]


async def read_several(url: str) -> list[HourCounts]:
    store = open_store(url)
    await store.connect()
    try:
        await store.write([Event(h, f"u{i}", i % 2 == 0) for h in (3, 5) for i in range(h)])
        return await store.read_hours([5, 4, 3])
    finally:
        await store.close()


def test_read_hours_answers_each_hour_in_the_order_asked(store_url: str) -> None:
    assert run(read_several(store_url)) == [
        HourCounts(unique_users=5, clicks=3, impressions=2),
        HourCounts(),
        HourCounts(unique_users=3, clicks=2, impressions=1),
    ]


async def reopen_and_read(url: str) -> HourCounts:
    await write_and_read(url)
    store = open_store(url)
    await store.connect()
    try:
        return await store.read(10)
    finally:
        await store.close()


def test_data_outlives_the_store_object(store_url: str) -> None:
    assert run(reopen_and_read(store_url)) == HourCounts(3, 2, 2)


async def layout(url: str, **options: Any) -> str:
    store = open_store(url, StoreOptions(**options))
    try:
        await store.connect()
        return store.unique_mode
    finally:
        await store.close()


def test_redis_layout_is_fixed_at_first_start(redis_url: str) -> None:
    assert run(layout(redis_url, unique="hll")) == "hll"
    assert run(layout(redis_url)) == "hll"  # unspecified: adopts the store's layout
    with pytest.raises(StoreConfigError, match="unique=hll"):
        run(layout(redis_url, unique="exact"))
    with pytest.raises(StoreConfigError, match="shards=1"):
        run(layout(redis_url, shards=4))


def test_two_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    one, two = TapadServer(url).start(), TapadServer(url).start()
    ts = 1_700_000_000_000

    async def post_all() -> int:
        async with aiohttp.ClientSession() as session:

            async def post(srv: TapadServer, i: int) -> int:
                query = f"timestamp={ts}&user=u{i % 700}&{'click' if i % 2 else 'impression'}"
                async with session.post(f"{srv.url}/analytics?{query}") as resp:
                    return resp.status

            return (await asyncio.gather(*(post((one, two)[i % 2], i) for i in range(2000)))).count(
                200
            )

    try:
        assert run(post_all()) == 2000
        for srv in (one, two):
            _, _, body = http("GET", f"{srv.url}/analytics?timestamp={ts}")
            assert parse_counts(body) == {"unique_users": 700, "clicks": 1000, "impressions": 1000}
    finally:
        one.stop()
        two.stop()


def test_redis_over_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    redis = RedisServer(tmp_path / "r", None, "--unixsocket", str(sock), "--unixsocketperm", "700")
    redis.start()
    try:
        ten, _, hours = run(write_and_read(f"unix://{sock}?db=3&prefix=ads:"))
        assert ten == HourCounts(3, 2, 2) and hours == [12, 10]
        assert redis.cli("-n", "3", "EXISTS", "ads:hours") == "1"
    finally:
        redis.stop()
