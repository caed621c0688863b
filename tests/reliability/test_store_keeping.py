"""A Redis that may throw acknowledged events away is refused or reported, never trusted.

Real redis-server processes started with the configurations an operator could give them:
an evicting maxmemory-policy (refused at start, exit 2 and one line; or served with
``--allow-eviction`` and a warning), a policy switched while serving with keys evicted
(/healthz 503 within one check period), and no persistence at all (a warning, and a word
in /healthz's body while it stays 200).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapad.server.app import NOT_PERSISTENT
from tests.support import LOOPBACK, RedisServer, TapadServer, http, wait_until

EVICTING = ("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


@pytest.fixture
def redis_at(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Redis servers of this test alone, stopped at its end."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.stop()


def start_redis(started: list[RedisServer], path: Path, *args: str) -> RedisServer:
    server = RedisServer(path, None, *args).start()
    started.append(server)
    return server


def fill(redis: RedisServer, megabytes: int) -> None:
    """Write ``megabytes`` of filler keys (raw protocol through ``redis-cli --pipe``)."""
    value = "x" * 1024
    commands = "".join(
        f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$1024\r\n{value}\r\n"
        for k in (f"filler:{i}" for i in range(megabytes * 1024))
    )
    subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(redis.port), "--pipe"],
        input=commands,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,  # past maxmemory some replies may be errors: that is the point
    )


def test_an_evicting_redis_is_refused_at_start(redis_at: list[RedisServer], tmp_path: Path) -> None:
    redis = start_redis(redis_at, tmp_path / "redis", *EVICTING, *AOF)
    srv = TapadServer(redis.url).start(wait=False)
    assert srv.wait(30) == 2
    lines = srv.log.decode().strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: "), line
    assert f"redis at {LOOPBACK}:{redis.port} has maxmemory-policy allkeys-lru" in line
    assert "set maxmemory-policy noeviction" in line and "--allow-eviction" in line


def test_allow_eviction_serves_with_a_warning(redis_at: list[RedisServer], tmp_path: Path) -> None:
    redis = start_redis(redis_at, tmp_path / "redis", *EVICTING, *AOF)
    srv = TapadServer(redis.url, "--allow-eviction").start()
    try:
        assert http("GET", f"{srv.url}/healthz")[::2] == (200, "ok\n")
        assert http("POST", f"{srv.url}/analytics?timestamp=1&user=a&click")[0] == 200
    finally:
        srv.stop()
    log = srv.log.decode()
    assert "WARNING" in log and "maxmemory-policy allkeys-lru" in log, log
    assert "--allow-eviction: serving anyway" in log, log


def test_eviction_turned_on_while_serving_makes_healthz_503(
    redis_at: list[RedisServer], tmp_path: Path
) -> None:
    """At the real check period (30 s): /healthz 503 within one period and a bit."""
    redis = start_redis(redis_at, tmp_path / "redis", *AOF)
    srv = TapadServer(redis.url).start()
    try:
        assert http("GET", f"{srv.url}/healthz")[::2] == (200, "ok\n")
        redis.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        redis.cli("CONFIG", "SET", "maxmemory", "2mb")
        fill(redis, 4)
        assert int(redis.cli("INFO", "stats").split("evicted_keys:")[1].split()[0]) > 0
        wait_until(
            lambda: http("GET", f"{srv.url}/healthz")[::2] == (503, "store evicting events\n"),
            timeout=40,
            interval=0.5,
            what="/healthz 503 once the check sees the eviction",
        )
        metrics = http("GET", f"{srv.url}/metrics")[2]
        assert "tapad_store_evicting 1.0" in metrics, metrics
    finally:
        srv.stop()
    log = srv.log.decode()
    assert log.count("redis may be losing acknowledged events") == 1, log
    assert "evicted since the last check" in log or "allkeys-lru" in log


def test_no_persistence_is_said_at_start_and_in_healthz(
    redis_at: list[RedisServer], tmp_path: Path
) -> None:
    bare = start_redis(redis_at, tmp_path / "bare")  # the tests' default: no AOF, no saves
    kept = start_redis(redis_at, tmp_path / "kept", *AOF)
    srv = TapadServer(bare.url).start()
    other = TapadServer(kept.url).start()
    try:
        assert http("GET", f"{srv.url}/healthz")[::2] == (200, f"{NOT_PERSISTENT}\n")
        assert http("GET", f"{other.url}/healthz")[::2] == (200, "ok\n")
    finally:
        srv.stop()
        other.stop()
    assert "redis has no persistence" in srv.log.decode()
    assert "persistence" not in other.log.decode()
