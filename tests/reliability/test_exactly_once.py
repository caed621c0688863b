"""Exactly once: clients that retry every failure blindly, with event ids, are counted
exactly once through store faults that force answers of unknown outcome (504).

Each scenario runs twice on one server and store: with ids (the current hour), then the
same faults without ids (the hour before). Half the clients send single POSTs, half batches;
every 503, 504, timeout and broken connection is retried with the same request until it is
acknowledged. With ids, every hour holds exactly the acknowledged events: none lost, none
counted twice. Without ids, a 504 whose batch was applied after all is counted again by its
retry: the test prints how many (``pytest -s``) and records it as a property, and asserts
only that nothing acknowledged was lost.

Faults: a Redis with an fsync'ed AOF paused past the commit deadline, then paused again and
killed and restarted on its port and dir; the same on one master of a Redis Cluster of the
test's own; SQLite on a file system frozen past the deadline (``fsfreeze``).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tapad import settings
from tapad.buckets import MS_PER_HOUR
from tests.reliability.test_redis_faults import AOF
from tests.reliability.test_sqlite_faults import frozen, frozen_fs  # noqa: F401 - a fixture
from tests.support import (
    PATIENCE,
    RedisClusterProcs,
    RedisServer,
    TapadServer,
    http,
    parse_counts,
    wait_until,
)

STORE_TIMEOUT = settings.default("store_timeout")
DEADLINE = settings.default("commit_deadline")
USERS = [f"u{i}" for i in range(300)]
RETRIED = (0, 429, 500, 502, 503, 504)  # 0: no answer (timeout, connection lost)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Clients:
    """Clients that retry every failure with the same request until it is acknowledged.

    ``batch`` events per request for half of them, single POSTs for the others. The events
    acknowledged are tallied here; ``stop`` sends nothing new but lets every request in
    flight go on until it is acknowledged, so the tally is complete.
    """

    url: str
    timestamp: int
    ids: bool
    concurrency: int = 8
    batch: int = 20
    timeout: float = 3 * DEADLINE
    clicks: int = 0
    impressions: int = 0
    users: set[str] = field(default_factory=set)
    attempts: Counter[int] = field(default_factory=Counter)  # every attempt's answer
    duplicates: int = 0  # events the server said it already had (ids only)
    refused: list[str] = field(default_factory=list)  # answers no retry can fix: a bug
    _prefix: str = field(default_factory=lambda: f"{random.getrandbits(48):012x}-")
    _serial: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def acknowledged(self) -> int:
        return self.clicks + self.impressions

    def start(self) -> Clients:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        wait_until(lambda: self.acknowledged >= 300, PATIENCE, what="traffic acknowledged")
        return self

    def more(self, count: int = 200, timeout: float = 60) -> None:
        """Wait for ``count`` more events acknowledged: the store is back."""
        n = self.acknowledged
        wait_until(lambda: self.acknowledged >= n + count, timeout, what="more acknowledged")

    def wait_for(self, status: int, timeout: float = DEADLINE + 15) -> None:
        n = self.attempts[status]
        wait_until(lambda: self.attempts[status] > n, timeout, what=f"an answer {status}")

    def stop(self, timeout: float = 120) -> Clients:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "requests still unacknowledged"
        return self

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(
                    self._client(session, self.batch if i % 2 else 1)
                    for i in range(self.concurrency)
                )
            )

    def _events(self, size: int) -> list[tuple[str, bool, str]]:
        made = []
        for _ in range(size):
            self._serial += 1
            made.append(
                (random.choice(USERS), random.random() < 0.5, f"{self._prefix}{self._serial}")
            )
        return made

    async def _client(self, session: aiohttp.ClientSession, size: int) -> None:
        while not self._stop.is_set():
            events = self._events(size)
            if size == 1:
                user, click, event_id = events[0]
                url = (
                    f"{self.url}/analytics?timestamp={self.timestamp}&user={user}"
                    f"&{'click' if click else 'impression'}"
                )
                if self.ids:
                    url += f"&id={event_id}"
                body, headers = None, None
            else:
                url = f"{self.url}/analytics/batch"
                lines = []
                for user, click, event_id in events:
                    event = {"timestamp": self.timestamp, "user": user}
                    event["event"] = "click" if click else "impression"
                    if self.ids:
                        event["id"] = event_id
                    lines.append(json.dumps(event))
                body = ("\n".join(lines) + "\n").encode()
                headers = {"Content-Type": "application/x-ndjson"}
            backoff = 0.02
            while True:  # blind: the same request until acknowledged
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        status, text = resp.status, await resp.text()
                        duplicate = resp.headers.get("Tapad-Duplicate") == "1"
                except (TimeoutError, aiohttp.ClientError, OSError):
                    status, text, duplicate = 0, "", False
                self.attempts[status] += 1
                if status == 200:
                    break
                if status not in RETRIED:
                    self.refused.append(f"{status} {text[:100]}")
                    return
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # a client's backoff
                backoff = min(0.5, backoff * 2)
            if size == 1:
                self.duplicates += duplicate
            else:
                self.duplicates += json.loads(text)["duplicates"]
            for user, click, _ in events:
                self.users.add(user)
                if click:
                    self.clicks += 1
                else:
                    self.impressions += 1


def stored(srv: TapadServer, timestamp: int) -> dict[str, int]:
    status, _, body = http("GET", f"{srv.url}/analytics?timestamp={timestamp}")
    assert status == 200, body
    return parse_counts(body)


def exactly_once(
    srv: TapadServer,
    faults: Callable[[Clients], None],
    name: str,
    record_property: Callable[[str, object], None],
) -> None:
    """The faults with ids, then without: with ids every acknowledged event is counted
    exactly once; without, none is lost and the over-count is reported."""
    now = int(time.time() * 1000)
    results = {}
    for ids, timestamp in ((True, now), (False, now - MS_PER_HOUR)):
        clients = Clients(srv.url, timestamp, ids).start()
        try:
            faults(clients)
            clients.more()
        finally:
            clients.stop()
        assert not clients.refused, clients.refused[:5]
        results[ids] = (clients, stored(srv, timestamp))
    with_ids, have = results[True]
    without, had = results[False]
    over = had["clicks"] + had["impressions"] - without.acknowledged
    print(
        f"\n{name}: with ids {with_ids.acknowledged} acknowledged, {with_ids.duplicates} "
        f"retries found already recorded, attempts {dict(with_ids.attempts)}, store "
        f"{have}; without ids {without.acknowledged} acknowledged, {over} counted twice, "
        f"attempts {dict(without.attempts)}"
    )
    record_property(f"{name}: counted twice without ids", over)
    record_property(f"{name}: duplicates found with ids", with_ids.duplicates)
    for clients in (with_ids, without):  # the faults made answers of unknown outcome
        assert clients.attempts[504] + clients.attempts[0] >= 1, dict(clients.attempts)
    assert have == {
        "unique_users": len(with_ids.users),
        "clicks": with_ids.clicks,
        "impressions": with_ids.impressions,
    }, f"with ids: {with_ids.acknowledged} acknowledged events, store {have}"
    assert had["clicks"] >= without.clicks and had["impressions"] >= without.impressions, (
        f"without ids: acknowledged events lost ({without.clicks} clicks, "
        f"{without.impressions} impressions acknowledged; store {had})"
    )


def pause_past_the_deadline(node: RedisServer, clients: Clients) -> None:
    """Paused until a batch in flight is answered 504; Redis runs it when it wakes."""
    node.pause()
    try:
        clients.wait_for(504)
    finally:
        node.resume()
    clients.more()


def kill_mid_batch_and_restart(node: RedisServer, clients: Clients) -> None:
    """Paused first so that a batch is surely in flight, then SIGKILL, then back on the
    same port and dir: the batch is settled against what the AOF kept."""
    assert node.proc is not None
    node.pause()
    time.sleep(2 * STORE_TIMEOUT)  # the pause kept up: a batch is then surely in flight
    node.proc.kill()
    node.proc.wait(10)
    node.proc = None
    time.sleep(0.5)  # the outage kept up a moment: retries meet a refused port
    node.start()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", None, *AOF).start()
    yield server
    server.stop()


def test_redis_paused_then_killed(
    aof_redis: RedisServer, record_property: Callable[[str, object], None]
) -> None:
    def faults(clients: Clients) -> None:
        pause_past_the_deadline(aof_redis, clients)
        kill_mid_batch_and_restart(aof_redis, clients)

    srv = TapadServer(aof_redis.url).start()
    try:
        exactly_once(srv, faults, "redis", record_property)
    finally:
        srv.stop()
    assert b"Traceback" not in srv.log


def test_redis_cluster_master_paused_then_killed(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    cluster = RedisClusterProcs(tmp_path / "cluster", masters=3)
    for node in cluster.nodes:
        node.extra = (*node.extra, *AOF)
    cluster.start()
    victim = cluster.nodes[0]

    def faults(clients: Clients) -> None:
        pause_past_the_deadline(victim, clients)
        cluster.wait_ok()
        kill_mid_batch_and_restart(victim, clients)
        cluster.wait_ok()

    srv = None
    try:
        srv = TapadServer(cluster.url).start()
        exactly_once(srv, faults, "redis cluster", record_property)
    finally:
        if srv is not None:
            srv.stop()
        cluster.stop()
    assert b"Traceback" not in srv.log


def test_sqlite_disk_stalled(
    frozen_fs: Path,  # noqa: F811 - the fixture imported above
    record_property: Callable[[str, object], None],
) -> None:
    def faults(clients: Clients) -> None:
        with frozen(frozen_fs):  # past the deadline: the batch in flight answered 504
            clients.wait_for(504)
        clients.more()
        with frozen(frozen_fs):  # past the store timeout, within the deadline
            time.sleep(STORE_TIMEOUT + 1.5)  # the stall kept up past the store timeout

    srv = TapadServer(f"sqlite:///{frozen_fs / 'tapad.db'}").start()
    try:
        exactly_once(srv, faults, "sqlite", record_property)
    finally:
        srv.stop()
    assert b"Traceback" not in srv.log
