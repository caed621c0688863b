"""The Redis store's pipelined link (tapad/store/redis/protocol.py), against a real redis-server.

Batches and coalesced reads share one connection and get their replies first in,
first out. What must hold: many requests in flight at once each get their own
replies; a read sent after a write sees it; a refused command fails its own call
only and the link carries on (but a command failing inside EXEC, which Redis
applies in part, stops writes); a link that breaks fails what waits on it and the
next call opens a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from tapad.store import Event, HourCounts, StoreError, StoreFault, open_store
from tapad.store.redis.node import RedisStore
from tests.support import RedisServer

run = asyncio.run


def test_many_requests_in_flight_get_their_own_replies(redis_url: str) -> None:
    async def main() -> list[HourCounts]:
        store = open_store(redis_url)
        await store.connect()
        try:
            calls: list[Coroutine[Any, Any, object]] = []
            for hour in range(40):  # hour h gets h+1 clicks, written and read in one go
                events = [Event(hour, f"u{i}", True) for i in range(hour + 1)]
                calls.append(store.write(events))
                calls.append(store.read(hour))
            results = await asyncio.gather(*calls)
            return [r for r in results[1::2] if isinstance(r, HourCounts)]
        finally:
            await store.close()

    reads = run(main())
    assert reads == [HourCounts(h + 1, h + 1, 0) for h in range(40)]


def test_an_error_inside_exec_is_a_store_fault_and_stops_writes(
    redis_server: RedisServer, redis_url: str
) -> None:
    """WRONGTYPE inside EXEC: Redis applies the batch's other commands. What was written
    is exactly that part (the count, not the user); the store says so (not a plain 503),
    refuses every later write without sending it, fails ping (/healthz 503), and still
    reads, on the same connection."""

    async def main() -> None:
        store = open_store(redis_url)
        assert isinstance(store, RedisStore)
        await store.connect()
        try:
            await store.write([Event(7, "a", True)])
            link = store._node.ready()
            redis_server.cli("SET", "tapad:{8.0}:u", "not a set")
            with pytest.raises(StoreFault, match="WRONGTYPE"):
                await store.write([Event(8, "b", True)])
            with pytest.raises(StoreError, match="misconfigured"):
                await store.write([Event(9, "c", True)])
            with pytest.raises(StoreError, match="misconfigured"):
                await store.ping()
            assert await store.read(7) == HourCounts(1, 1, 0)
            assert store._node.ready() is link  # a fault, not a broken link
        finally:
            await store.close()

    run(main())
    # What the half-applied batch left: its click counted, its user not added, and
    # nothing at all of the refused batch.
    assert redis_server.cli("HGET", "tapad:{8.0}:n", "c") == "1"
    assert redis_server.cli("GET", "tapad:{8.0}:u") == "not a set"
    assert redis_server.cli("EXISTS", "tapad:{9.0}:n", "tapad:{9.0}:u") == "0"


def test_a_refused_transaction_applies_nothing_and_the_link_carries_on(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A command refused while queueing (wrong arguments, out of memory) discards the whole
    transaction: a plain StoreError, nothing written, the next batch goes through."""

    async def main() -> None:
        store = open_store(redis_url)
        assert isinstance(store, RedisStore)
        await store.connect()
        try:
            redis_server.cli("CONFIG", "SET", "maxmemory", "1")
            try:
                with pytest.raises(StoreError, match="OOM") as refused:
                    await store.write([Event(8, "b", True)])
                assert not isinstance(refused.value, StoreFault)
            finally:
                redis_server.cli("CONFIG", "SET", "maxmemory", "0")
            await store.write([Event(9, "c", True)])
            assert store.fault is None
        finally:
            await store.close()

    run(main())
    assert redis_server.cli("EXISTS", "tapad:{8.0}:n", "tapad:{8.0}:u") == "0"
    assert redis_server.cli("HGET", "tapad:{9.0}:n", "c") == "1"


def test_a_broken_link_fails_its_waiters_and_the_next_call_reconnects(redis_url: str) -> None:
    async def main() -> None:
        store = open_store(redis_url)
        assert isinstance(store, RedisStore)
        await store.connect()
        try:
            await store.write([Event(9, "a", True)])
            link = store._node.ready()
            assert link is not None
            waiting = asyncio.ensure_future(store.read(9))
            await asyncio.sleep(0)  # its request is on the link
            link.close()  # as when the server goes away
            with pytest.raises(StoreError):
                await waiting
            assert await store.read(9) == HourCounts(1, 1, 0)  # a new link
            assert store._node.ready() is not link
        finally:
            await store.close()

    run(main())
