"""``tapad.client`` against real tapad servers: every event given is counted exactly once.

Counts are read back through ``GET /analytics/hours``; each test owns its store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapad.client import AsyncClient, Client, DeliveryError, FlushTimeout, QueueFull
from tests.support import (
    RedisServer,
    TapadServer,
    free_port,
    http,
    wait_for_port,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
HOUR_MS = 3_600_000


def totals(url: str, first_ms: int, last_ms: int, token: str | None = None) -> dict[str, int]:
    """Clicks and impressions summed over the hours from ``first_ms`` to ``last_ms``."""
    query = f"{url}/analytics/hours?from={first_ms}&to={last_ms}"
    if token:
        query += f"&key={token}"
    status, _, body = http("GET", query)
    assert status == 200, body
    hours = json.loads(body)["hours"]
    return {
        "clicks": sum(h["clicks"] for h in hours),
        "impressions": sum(h["impressions"] for h in hours),
    }


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TapadServer]:
    server = TapadServer(f"sqlite:///{tmp_path}/tapad.db").start()
    yield server
    server.stop()


def test_events_are_counted_once_after_flush(server: TapadServer) -> None:
    start = now_ms()
    with Client(server.url, flush_interval=0.05) as tapad:
        for n in range(1234):
            tapad.click(f"u{n % 97}")
        for n in range(766):
            tapad.impression(f"u{n % 97}")
        tapad.flush(timeout=60)
        assert tapad.stats()["acknowledged"] == 2000
    assert totals(server.url, start, now_ms()) == {"clicks": 1234, "impressions": 766}
    stats = tapad.stats()
    assert stats["queued"] == stats["sent"] == stats["acknowledged"] == 2000
    assert stats["refused"] == stats["duplicates"] == 0


def test_a_given_id_is_counted_once_and_reported_as_duplicate(server: TapadServer) -> None:
    ts = now_ms()
    with Client(server.url) as tapad:
        for _ in range(3):
            tapad.click("alice", timestamp=ts, id="order-17")
            tapad.flush(timeout=60)
    assert totals(server.url, ts, ts)["clicks"] == 1
    assert tapad.stats()["acknowledged"] == 1
    assert tapad.stats()["duplicates"] == 2


def test_bad_events_raise_at_the_call(server: TapadServer) -> None:
    with Client(server.url) as tapad:
        with pytest.raises(ValueError, match="user: must be 1 to 256 characters, got 300"):
            tapad.click("x" * 300)
        with pytest.raises(ValueError, match="user"):
            tapad.impression("")
        with pytest.raises(ValueError, match="timestamp"):
            tapad.click("alice", timestamp=-1)
        with pytest.raises(ValueError, match="id"):
            tapad.click("alice", id="a\nb")
        with pytest.raises(TypeError, match="timestamp"):
            tapad.click("alice", timestamp=1.5)  # type: ignore[arg-type]
    assert tapad.stats()["queued"] == 0


def test_a_script_that_never_flushes_still_delivers_everything(server: TapadServer) -> None:
    start = now_ms()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "no_flush.py"), server.url, "5000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert totals(server.url, start, now_ms()) == {"clicks": 0, "impressions": 5000}


def test_fork_gives_each_child_its_own_sender(server: TapadServer) -> None:
    start = now_ms()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "forking.py"), server.url, "4", "300"],
        capture_output=True,
        text=True,
        timeout=120,  # a child left hanging at exit fails here
    )
    assert done.returncode == 0, done.stderr
    assert totals(server.url, start, now_ms()) == {"clicks": 600, "impressions": 1200}


def test_the_quickstart_example_runs(server: TapadServer) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "TAPAD_URL": server.url},
    )
    assert done.returncode == 0, done.stderr
    assert "'acknowledged': 2" in done.stdout
    assert totals(server.url, 1795802400000, 1795802400000)["impressions"] == 1


def test_a_full_queue_raises_and_loses_nothing_it_took(tmp_path: Path) -> None:
    port = free_port()  # no server there yet: every batch is retried
    url = f"http://127.0.0.1:{port}"
    tapad = Client(url, batch_size=10, flush_interval=0.01, max_queue=50, max_block=0.2)
    taken = 0
    with pytest.raises(QueueFull, match="50 events already waiting"):
        for n in range(1000):
            tapad.click(f"u{n}")
            taken += 1
    assert taken == 50
    with pytest.raises(FlushTimeout, match="50 events neither acknowledged nor refused"):
        tapad.flush(timeout=0.1)
    start = now_ms() - HOUR_MS
    server = TapadServer(f"sqlite:///{tmp_path}/tapad.db", port=port).start()
    try:
        tapad.close(timeout=120)
        assert totals(url, start, now_ms())["clicks"] == 50
        assert tapad.stats()["retried"] > 0
    finally:
        server.stop()


def test_refused_batches_reach_on_error_and_are_not_retried(tmp_path: Path) -> None:
    server = TapadServer(
        f"sqlite:///{tmp_path}/tapad.db", "--accept-past", "1", "--write-token", "w1"
    ).start()
    errors: list[DeliveryError] = []
    try:
        old = now_ms() - 72 * HOUR_MS
        tapad = Client(server.url, "w1", on_error=errors.append)
        tapad.click("alice", timestamp=old)
        tapad.flush(timeout=60)
        assert [(e.status, e.events) for e in errors] == [(400, 1)]
        assert "timestamp" in errors[0].message
        with pytest.raises(DeliveryError, match="1 event not recorded"):
            tapad.__exit__(None, None, None)

        wrong = Client(server.url, "not-the-token", on_error=errors.append)
        wrong.click("bob")
        wrong.flush(timeout=60)
        assert [(e.status, e.events) for e in errors[1:]] == [(401, 1)]
        for client in (tapad, wrong):
            assert client.stats()["retried"] == 0
            assert client.stats()["refused"] == 1
        wrong.close()
    finally:
        server.stop()


def test_async_client_inside_an_aiohttp_app(server: TapadServer) -> None:
    port = free_port()
    start = now_ms()
    app = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "aiohttp_app.py"), server.url, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc=app)
        for n in range(300):
            status, _, _ = http("GET", f"http://127.0.0.1:{port}/view?user=v{n % 30}")
            assert status == 200
    finally:
        app.terminate()
        out, _ = app.communicate(timeout=60)
    assert app.returncode == 0, out
    assert totals(server.url, start, now_ms()) == {"clicks": 0, "impressions": 300}


async def test_async_client_flush_and_queue_full(server: TapadServer) -> None:
    start = now_ms()
    async with AsyncClient(server.url, flush_interval=0.05) as tapad:
        for n in range(500):
            tapad.click(f"a{n}")
        await tapad.flush(timeout=60)
        assert tapad.stats()["acknowledged"] == 500
    assert totals(server.url, start, now_ms())["clicks"] == 500

    nowhere = AsyncClient(f"http://127.0.0.1:{free_port()}", max_queue=5)
    for n in range(5):
        nowhere.click(f"b{n}")
    with pytest.raises(QueueFull):
        nowhere.click("one too many")
    with pytest.raises(FlushTimeout, match="5 events"):
        await nowhere.flush(timeout=0.2)
    with pytest.raises(FlushTimeout, match="5 events"):  # closing says what it gave up on
        await nowhere.aclose(timeout=0)
    assert nowhere.pending == 5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_threads_through_a_redis_outage_count_exactly_once(tmp_path: Path) -> None:
    """100,000 events from 8 threads while Redis is paused past the store timeout, then
    killed and restarted (AOF always): every event counted once, none twice."""
    redis = RedisServer(tmp_path / "redis", None, "--appendonly", "yes", "--appendfsync", "always")
    redis.start()
    server = TapadServer(redis.url, "--store-timeout", "0.3").start()
    per_thread = 12_500
    start = now_ms()
    tapad = Client(server.url, batch_size=500, flush_interval=0.05, timeout=2.0)
    progress = [0] * 8

    def send(thread: int) -> None:
        for n in range(per_thread):
            tapad.click(f"t{thread}-{n % 1000}")
            progress[thread] = n + 1

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: sum(progress) > 20_000, what="a fifth of the events given")
        redis.pause()
        wait_until(lambda: tapad.stats()["retried"] > 0, what="a batch retried while paused")
        redis.resume()
        wait_until(lambda: sum(progress) > 60_000, what="more events given")
        assert redis.proc is not None
        redis.proc.kill()
        redis.proc.wait()
        retried = tapad.stats()["retried"]
        wait_until(lambda: tapad.stats()["retried"] > retried, what="a batch retried while down")
        redis.start()
        for t in threads:
            t.join()
        tapad.flush(timeout=240)
        assert totals(server.url, start, now_ms())["clicks"] == 100_000
        stats = tapad.stats()
        assert stats["acknowledged"] + stats["duplicates"] == 100_000
        assert stats["refused"] == 0
        assert stats["retried"] > 0
    finally:
        tapad.close(timeout=5)
        server.stop()
        redis.stop()
