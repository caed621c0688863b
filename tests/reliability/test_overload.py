"""Backpressure: past --max-pending a POST is answered 503 at once, and memory stays flat while
clients keep pushing into a store that does not answer (a SIGSTOPped Redis)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.reliability.tools import Traffic, rss_kib
from tests.support import LOOPBACK, RedisServer, TapadServer, http


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


STORE_TIMEOUT = 5.0  # long, so an answer that waited for the store is told by its latency
COMMIT_DEADLINE = 10.0


@pytest.mark.timeout(120)  # a hung store under load until the queue is full
def test_past_max_pending_post_gets_503_at_once(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    srv = TapadServer(redis.url, "--max-pending", "40", "--store-timeout", str(STORE_TIMEOUT),
                      "--commit-deadline", str(COMMIT_DEADLINE))  # fmt: skip
    srv.start()
    traffic = Traffic(srv.url, concurrency=120, limit=6_000, timeout=6 * STORE_TIMEOUT)
    try:
        assert http("POST", f"{srv.url}/analytics?timestamp=5&user=warm&click")[0] == 200
        redis.pause()
        traffic.start()
        traffic.wait_for(lambda t: len(t.answers) >= 600, timeout=20)
        traffic.stop()
        _, _, text = http("GET", f"{srv.url}/metrics")
    finally:
        redis.resume()
        traffic.stop()
        srv.stop()
        redis.stop()
    overloaded = [a for a in traffic.answers if "overloaded" in a.body]
    assert len(overloaded) > 100, traffic.statuses()
    assert all(a.status == 503 and a.retry_after == "1" for a in overloaded)
    slowest = max(a.seconds for a in overloaded)
    print(f"slowest overloaded answer: {slowest:.3f}s of {len(overloaded)}")
    # None of them waited for the hung store: that would take a store timeout.
    assert slowest < STORE_TIMEOUT, f"an overloaded answer took {slowest:.2f}s"
    # The batch in flight when Redis stopped is in doubt: its POSTs wait for the commit
    # deadline and get 504 (see docs/operations.md); every other POST 503, never sent.
    # Every POST is answered within about two store timeouts and the deadline (loosely).
    assert all(a.seconds < 3 * STORE_TIMEOUT + COMMIT_DEADLINE for a in traffic.answers)
    assert 503 in traffic.statuses() and set(traffic.statuses()) <= {503, 504}
    assert metric(text, "tapad_pending_events") <= 40


@pytest.mark.timeout(180)  # samples memory over a sustained overload
def test_memory_stays_flat_under_sustained_overload(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    srv = TapadServer(redis.url, "--max-pending", "100").start()
    idle: list[socket.socket] = []
    traffic = Traffic(srv.url, concurrency=150, limit=200_000, timeout=10)
    try:
        assert http("POST", f"{srv.url}/analytics?timestamp=5&user=warm&click")[0] == 200
        redis.pause()
        traffic.start()
        for _ in range(1000):  # and many clients that connect and say nothing
            idle.append(socket.create_connection((LOOPBACK, srv.port), timeout=5))
        # warm: every buffer and pool has reached its working size
        traffic.wait_for(lambda t: len(t.answers) >= 3000)
        warm, answered = rss_kib(srv.pid), len(traffic.answers)
        samples = []
        for _ in range(6):
            time.sleep(1)  # the sampling period of a measurement over time, not a wait
            samples.append(rss_kib(srv.pid))
        answered = len(traffic.answers) - answered
        traffic.stop()
    finally:
        for sock in idle:
            sock.close()
        redis.resume()
        traffic.stop()
        srv.stop()
        redis.stop()
    print(f"RSS warm {warm} KiB, then {samples}; {answered} answers in 6 s")
    assert answered > 1500, "not a sustained overload"
    assert max(samples) - warm < 8 * 1024, (warm, samples)
    assert set(traffic.statuses()) <= {503, 504, 200}
