#!/usr/bin/env python3
"""Micro-benchmarks behind the hot-path changes in docs/performance.md.

    python bench/micro.py

CPU time (process_time, not wall time: the machine is shared) per call of the
pieces the profile pointed at, each beside what it replaced:

- a batch of 16 events and a read of one hour on Redis: redis-py's asyncio
  pipeline (MULTI/EXEC, what the store used) against tapad's RedisStore (the same
  commands over one pipelined link, packed and parsed by hiredis);
- parsing a plain POST/GET query: the full parser against the shortcut;
- counting a request in /metrics: a prometheus histogram observe() against the
  tally folded in at scrape time.

It starts its own redis-server on 127.0.0.1 (and stops it), pinned to core 1 when
there are two cores, with this process on core 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import redis_server_args

from tapad.server import query
from tapad.server.metrics import Metrics
from tapad.store import open_store
from tapad.store.base import Event
from tapad.store.redis.node import RedisStore

HOUR = 494_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


async def cpu_us_async(fn: Callable[[], Awaitable[object]], number: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(number):
            await fn()
        best = min(best, (time.process_time() - start) / number * 1e6)
    return best


async def redis_figures(url: str) -> list[tuple[str, float]]:
    from redis.asyncio import Redis

    rng = random.Random(5)
    batches = [
        [
            Event(HOUR if rng.random() < 0.95 else HOUR - rng.randint(1, 24), f"u{n}", n % 10 == 0)
            for n in rng.sample(range(100_000), 16)
        ]
        for _ in range(50)
    ]
    store = open_store(url)
    assert isinstance(store, RedisStore), "a redis:// URL opens a RedisStore"
    await store.connect()
    client = Redis.from_url(url)
    layout = store.layout
    it = iter(range(10**9))

    async def pipeline_write() -> None:  # what RedisStore._write did before
        events = batches[next(it) % len(batches)]
        async with client.pipeline(transaction=True) as pipe:
            hours: dict[str, int] = {}
            for (hour, shard), (users, clicks, imps, _) in layout.split(events).items():
                pipe.sadd(layout.users_key(hour, shard), *users)
                if clicks:
                    pipe.hincrby(layout.counts_key(hour, shard), "c", clicks)
                if imps:
                    pipe.hincrby(layout.counts_key(hour, shard), "i", imps)
                hours[str(hour)] = hour
            pipe.zadd(layout.hours_key, hours)
            await pipe.execute()

    async def pipeline_read() -> None:
        async with client.pipeline(transaction=True) as pipe:
            pipe.scard(layout.users_key(HOUR, 0))
            pipe.hmget(layout.counts_key(HOUR, 0), "c", "i")
            await pipe.execute()

    async def link_write() -> None:
        await store.write(batches[next(it) % len(batches)])

    async def link_read() -> None:
        await store.read(HOUR)

    figures = []
    for name, fn in (
        ("Redis batch of 16, redis-py pipeline (before)", pipeline_write),
        ("Redis batch of 16, tapad RedisStore (after)", link_write),
        ("Redis read of one hour, redis-py pipeline (before)", pipeline_read),
        ("Redis read of one hour, tapad RedisStore (after)", link_read),
    ):
        await fn()
        figures.append((name, await cpu_us_async(fn, 1000)))
    await client.aclose()
    await store.close()
    return figures


def main() -> int:
    cpus = os.cpu_count()
    if cpus and cpus >= 2 and shutil.which("taskset"):
        os.sched_setaffinity(0, {0})
        pin = ["taskset", "-c", "1"]
    else:
        pin = []
    figures: list[tuple[str, float]] = []
    q_post = "timestamp=1764278400123&user=u12345&impression"
    q_get = "timestamp=1764278400123"

    def full_post() -> object:
        params = query.split_query(q_post)
        return (query.parse_timestamp(params), query.parse_user(params), query.parse_kind(params))

    figures += [
        ("parse a plain POST query, full parser (before)", cpu_us(full_post, 100_000)),
        (
            "parse a plain POST query, parse_post (after)",
            cpu_us(lambda: query.parse_post(q_post), 100_000),
        ),
        (
            "parse a plain GET query, full parser (before)",
            cpu_us(lambda: query.parse_timestamp(query.split_query(q_get)), 100_000),
        ),
        (
            "parse a plain GET query, parse_get (after)",
            cpu_us(lambda: query.parse_get(q_get), 100_000),
        ),
    ]
    tallied, observed = Metrics(), Metrics()
    observed._tally = None  # the observe() path, as with --workers
    figures += [
        (
            "count a request in /metrics, histogram observe (before)",
            cpu_us(lambda: observed.request_done("POST", 200, 0.0012), 100_000),
        ),
        (
            "count a request in /metrics, tally (after)",
            cpu_us(lambda: tallied.request_done("POST", 200, 0.0012), 100_000),
        ),
    ]
    redis = shutil.which("redis-server")
    if redis is None:
        print("missing: redis-server (apt-get install -y redis-server): Redis figures skipped")
    else:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="tapad-micro-")
        proc = subprocess.Popen(
            [*pin, *redis_server_args(port, workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            figures += asyncio.run(redis_figures(f"redis://127.0.0.1:{port}/9"))
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)
    print("| what | CPU us per call |")
    print("| --- | ---: |")
    for name, us in figures:
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
