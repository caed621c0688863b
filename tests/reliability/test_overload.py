"""Backpressure: past --max-pending a POST is answered 503 at once, and memory stays flat while
clients keep pushing into a store that does not answer (a SIGSTOPped Redis)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

from tapad import settings
from tests.reliability.tools import Traffic, rss_kib
from tests.support import LOOPBACK, RedisServer, TapadServer, http


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_past_max_pending_post_gets_503_at_once(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    srv = TapadServer(redis.url, "--max-pending", "40", "--store-timeout", "1.5").start()
    traffic = Traffic(srv.url, concurrency=120, limit=6_000, timeout=10)
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
    fast = sorted(a.seconds for a in overloaded)[len(overloaded) * 9 // 10]
    print(f"p90 of overloaded answers: {fast:.3f}s of {len(overloaded)}")
    assert fast < 1.0, f"90% of overloaded answers took up to {fast:.2f}s"
    # The batch in flight when Redis stopped is in doubt: its POSTs wait for the commit
    # deadline and get 504 (see docs/operations.md); every other POST 503, never sent.
    bound = 2 * 1.5 + settings.default("commit_deadline") + 0.5
    assert all(a.seconds < bound for a in traffic.answers)
    assert 503 in traffic.statuses() and set(traffic.statuses()) <= {503, 504}
    assert metric(text, "tapad_pending_events") <= 40


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
        time.sleep(3)  # warm: every buffer and pool has reached its working size
        warm, answered = rss_kib(srv.proc.pid), len(traffic.answers)
        samples = []
        for _ in range(6):
            time.sleep(1)
            samples.append(rss_kib(srv.proc.pid))
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
