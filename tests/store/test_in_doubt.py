"""A batch whose reply is lost after sending is settled before anyone is answered
(tapad/store/redis/link.py): applied (return), not applied (sent again), or still out of reach
at the commit deadline (CommitUnknown). A batch never sent fails at once (StoreError).

Each test runs its own redis-server, since it gets paused or cut off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tapad.store import (
    CommitUnknown,
    Event,
    HourCounts,
    InDoubt,
    StoreError,
    StoreOptions,
    open_store,
)
from tapad.store.redis.node import RedisStore
from tests.store.proxy import Proxy
from tests.support import LOOPBACK, RedisServer, wait_until, wait_until_async

TIMEOUT = 0.3  # the store timeout of these tests: a paused Redis is past it quickly


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    await wait_until_async(condition, timeout, interval=0.01)


def open_redis(url: str, deadline: float) -> RedisStore:
    store = open_store(url, StoreOptions(timeout=TIMEOUT, commit_deadline=deadline))
    assert isinstance(store, RedisStore)
    return store


def test_a_lost_reply_of_an_applied_batch_is_a_success(own_redis: RedisServer) -> None:
    """Redis paused past the store timeout but back within the deadline: the batch ran
    when it woke up, the marker says so, the write returns; counted once."""

    async def main() -> InDoubt:
        store = open_redis(own_redis.url, deadline=10)
        try:
            await store.write([Event(1, "warm-up", True)])
            own_redis.pause()
            write = asyncio.ensure_future(store.write([Event(2, "a", True), Event(2, "b", False)]))
            await until(lambda: store.in_doubt.settling == 1)  # past the store timeout
            own_redis.resume()
            await write
            assert store.in_doubt.settling == 0
            assert await store.read(2) == HourCounts(2, 1, 1)
            return store.in_doubt
        finally:
            own_redis.resume()
            await store.close()

    assert asyncio.run(main()) == InDoubt(applied=1)


def test_a_batch_lost_on_the_way_is_sent_again_once(own_redis: RedisServer) -> None:
    """The batch's bytes never reached Redis (a lossy network: the proxy swallows them):
    the old connection is killed, the marker is missing, so the store sends it again."""
    proxy = Proxy(own_redis.port).start()

    async def main() -> InDoubt:
        store = open_redis(f"redis://{LOOPBACK}:{proxy.port}/0", deadline=10)
        try:
            await store.write([Event(1, "warm-up", True)])
            proxy.swallow = True
            asyncio.get_running_loop().call_later(2 * TIMEOUT, setattr, proxy, "swallow", False)
            await store.write([Event(3, "a", True)])
            assert await store.read(3) == HourCounts(1, 1, 0)
            return store.in_doubt
        finally:
            await store.close()

    try:
        assert asyncio.run(main()) == InDoubt(not_applied=1)
    finally:
        proxy.stop()
    assert own_redis.cli("HGET", "tapad:{3.0}:n", "c") == "1"


def test_redis_silent_past_the_deadline_is_commit_unknown(own_redis: RedisServer) -> None:
    """Paused past the deadline: CommitUnknown, counted as unknown. Redis runs the batch
    when it wakes up (its bytes were in Redis's socket): stored <= acked + unknown."""

    async def main() -> InDoubt:
        store = open_redis(own_redis.url, deadline=1.0)
        try:
            await store.write([Event(1, "warm-up", True)])
            own_redis.pause()
            with pytest.raises(CommitUnknown):
                await store.write([Event(4, "a", True)])
            return store.in_doubt
        finally:
            own_redis.resume()
            await store.close()

    assert asyncio.run(main()) == InDoubt(unknown=1)
    wait_until(
        lambda: own_redis.cli("HGET", "tapad:{4.0}:n", "c") == "1",
        10,
        interval=0.05,
        what="the batch Redis had applied",
    )


def test_a_batch_never_sent_fails_at_once(own_redis: RedisServer) -> None:
    """Redis gone (connection refused): StoreError, not CommitUnknown; nothing in doubt."""

    async def main() -> InDoubt:
        store = open_redis(own_redis.url, deadline=10)
        try:
            await store.write([Event(1, "warm-up", True)])
            own_redis.stop()
            await wait_until_async(
                lambda: store._node.ready() is None, what="the link seeing the connection close"
            )
            started = time.monotonic()
            with pytest.raises(StoreError) as failed:
                await store.write([Event(5, "a", True)])
            assert not isinstance(failed.value, CommitUnknown)
            assert time.monotonic() - started < 5  # not held until the 10 s deadline
            return store.in_doubt
        finally:
            await store.close()

    assert asyncio.run(main()) == InDoubt()


def test_a_user_without_client_kill_works_and_answers_in_doubt_unknown(tmp_path: Path) -> None:
    """An ACL user refused CLIENT (INFO, KILL) still reads and writes; a batch in doubt
    cannot be settled (the old connection cannot be ended), so it is CommitUnknown at once
    instead of a guess."""
    redis = RedisServer(tmp_path / "acl").start()
    redis.cli("ACL", "SETUSER", "tapad", "on", ">s3cret", "~*", "+@all", "-client")

    async def main() -> InDoubt:
        store = open_redis(f"redis://tapad:s3cret@{LOOPBACK}:{redis.port}/0", deadline=10)
        try:
            await store.write([Event(1, "warm-up", True)])
            assert await store.read(1) == HourCounts(1, 1, 0)
            redis.pause()
            started = time.monotonic()
            with pytest.raises(CommitUnknown):
                await store.write([Event(6, "a", True)])
            assert time.monotonic() - started < 5  # not held until the 10 s deadline
            return store.in_doubt
        finally:
            redis.resume()
            await store.close()

    try:
        assert asyncio.run(main()) == InDoubt(unknown=1)
    finally:
        redis.stop()
