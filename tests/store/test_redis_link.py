"""The Redis store's pipelined link (tapad/store/resp.py), against a real redis-server.

Batches and coalesced reads share one connection and get their replies first in,
first out. What must hold: many requests in flight at once each get their own
replies; a read sent after a write sees it; a refused command fails its own call
only and the link carries on; a link that breaks fails what waits on it and the
next call opens a new one.
"""

from __future__ import annotations

import asyncio

import pytest

from tapad.store import Event, HourCounts, StoreError, open_store
from tapad.store.redis import RedisStore
from tests.support import RedisServer

run = asyncio.run


def test_many_requests_in_flight_get_their_own_replies(redis_url: str) -> None:
    async def main() -> list[HourCounts]:
        store = open_store(redis_url)
        await store.connect()
        try:
            calls = []
            for hour in range(40):  # hour h gets h+1 clicks, written and read in one go
                events = [Event(hour, f"u{i}", True) for i in range(hour + 1)]
                calls.append(store.write(events))
                calls.append(store.read(hour))
            results = await asyncio.gather(*calls)
            return results[1::2]
        finally:
            await store.close()

    reads = run(main())
    assert reads == [HourCounts(h + 1, h + 1, 0) for h in range(40)]


def test_a_refused_command_fails_its_call_and_the_link_carries_on(
    redis_server: RedisServer, redis_url: str
) -> None:
    async def main() -> None:
        store = open_store(redis_url)
        assert isinstance(store, RedisStore)
        await store.connect()
        try:
            await store.write([Event(7, "a", True)])
            link = store._link
            redis_server.cli("-n", "0", "SET", "tapad:{8.0}:u", "not a set")
            with pytest.raises(StoreError, match="WRONGTYPE"):
                await store.write([Event(8, "b", True)])
            assert await store.read(7) == HourCounts(1, 1, 0)
            assert store._link is link  # same connection: a refusal is not a broken link
        finally:
            await store.close()

    run(main())


def test_a_broken_link_fails_its_waiters_and_the_next_call_reconnects(redis_url: str) -> None:
    async def main() -> None:
        store = open_store(redis_url)
        assert isinstance(store, RedisStore)
        await store.connect()
        try:
            await store.write([Event(9, "a", True)])
            link = store._link
            assert link is not None
            waiting = asyncio.ensure_future(store.read(9))
            await asyncio.sleep(0)  # its request is on the link
            link.close()  # as when the server goes away
            with pytest.raises(StoreError):
                await waiting
            assert await store.read(9) == HourCounts(1, 1, 0)  # a new link
            assert store._link is not link
        finally:
            await store.close()

    run(main())
