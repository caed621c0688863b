#!/usr/bin/env python3
"""Does counting distinct users over long ranges stall the hot path? Side by side, one run.

    python bench/uniques.py                                  # Redis, 10,000 users an hour
    python bench/uniques.py --store sqlite --users 100000 --seconds 20
    python bench/uniques.py --store redis --exact-uniques-limit 5000000
    python bench/uniques.py --users 100000 --hours 24       # a day of 100,000 users an hour

A ``tapad serve`` process on a fresh store (a redis-server of its own, or an SQLite file in a
temp folder). ``--hours`` past hours (168) are filled straight through the store,
``--users`` distinct users an hour (each hour's users half new, half the previous hour's:
a week holds ``--users`` x 84.5 distinct). Then, ``--seconds`` of each, in ``--rounds``
alternating slices (so that a shared machine's load, which drifts, weighs on both alike):

1. baseline: ``--concurrency`` clients POST and GET the current hour as fast as answered;
2. the same load while one more client asks ``GET /analytics/uniques`` for the last 24 and
   all the filled hours, one after the other, as soon as each answers.

It prints a Markdown table: POST and GET rate and p99 in both phases, their ratios (targets:
p99 at most 1.5x, rate at least 0.9x), and how long each range's count took (median, max,
and whether it was exact). The figures go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tapad.buckets import MS_PER_HOUR, current_hour
from tapad.store import Event, StoreOptions, open_store

LOOPBACK = "127.0.0.1"
BATCH = 10_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((LOOPBACK, port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


async def fill(url: str, first: int, hours: int, users: int) -> None:
    store = open_store(url, StoreOptions(timeout=30))
    await store.connect()
    try:
        for h in range(hours):
            start = h * users // 2  # half of each hour's users are new
            names = [f"user-{i}" for i in range(start, start + users)]
            for i in range(0, users, BATCH):
                await store.write([Event(first + h, n, False) for n in names[i : i + BATCH]])
    finally:
        await store.close()


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 100 else max(samples)


async def load(
    base: str, seconds: float, concurrency: int, ranges: list[tuple[str, int, int]] | None
) -> dict[str, Any]:
    """The hot-path load for ``seconds``; with ``ranges``, counted over and over beside it."""
    now_ms = current_hour() * MS_PER_HOUR
    latencies: dict[str, list[float]] = {"POST": [], "GET": []}
    counts: dict[str, list[tuple[float, bool]]] = {}
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            rng = random.Random(n)
            while time.perf_counter() < stop:
                method = "POST" if rng.random() < 0.5 else "GET"
                if method == "POST":
                    url = (
                        f"{base}/analytics?timestamp={now_ms}&user=live{rng.randrange(10**6)}&click"
                    )
                else:
                    url = f"{base}/analytics?timestamp={now_ms}"
                start = time.perf_counter()
                async with session.request(method, url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"{method} answered {resp.status}")
                latencies[method].append(time.perf_counter() - start)

        async def counter() -> None:
            assert ranges is not None
            while time.perf_counter() < stop:
                for name, first, last in ranges:
                    url = (
                        f"{base}/analytics/uniques?from={first * MS_PER_HOUR}"
                        f"&to={last * MS_PER_HOUR}"
                    )
                    start = time.perf_counter()
                    async with session.get(url, timeout=aiohttp.ClientTimeout(300)) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise SystemExit(f"uniques answered {resp.status}: {body!r}")
                    took = time.perf_counter() - start
                    counts.setdefault(name, []).append((took, json.loads(body)["exact"]))

        started = time.perf_counter()
        counting = asyncio.ensure_future(counter()) if ranges is not None else None
        await asyncio.gather(*(client(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started  # the clients' time, not the last count's
        if counting is not None:
            await counting
    return {"latencies": latencies, "elapsed": elapsed, "counts": counts}


def summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one phase as one: rates over their summed time, p99 over all samples."""
    elapsed = sum(p["elapsed"] for p in phases)
    result: dict[str, Any] = {"counts": {}}
    for method in ("POST", "GET"):
        samples = [x for p in phases for x in p["latencies"][method]]
        result[f"{method} rate"] = len(samples) / elapsed
        result[f"{method} p99"] = p99(samples)
    for p in phases:
        for name, runs in p["counts"].items():
            result["counts"].setdefault(name, []).extend(runs)
    return result


def start_redis(folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, proc)
    return f"redis://{LOOPBACK}:{port}/0", proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--users", type=int, default=10_000, help="users an hour")
    parser.add_argument("--hours", type=int, default=168, help="hours filled (at least 24)")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=4, help="slices of each phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--exact-uniques-limit", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis = None
        if args.store == "redis":
            url, redis = start_redis(folder)
        else:
            url = f"sqlite:///{folder}/tapad.db"
        last = current_hour() - 2
        first = last - args.hours + 1
        server = None
        try:
            started = time.perf_counter()
            asyncio.run(fill(url, first, args.hours, args.users))
            took = time.perf_counter() - started
            print(f"filled {args.hours} h x {args.users:,} users in {took:.1f}s")
            port = free_port()
            extra = []
            if args.exact_uniques_limit is not None:
                extra = ["--exact-uniques-limit", str(args.exact_uniques_limit)]
            server = subprocess.Popen(
                [sys.executable, "-m", "tapad", "serve", "--store", url, "--port", str(port),
                 *extra],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for_port(port, server)
            base = f"http://{LOOPBACK}:{port}"
            ranges = [("24 h", last - 23, last)]
            if args.hours > 24:
                ranges.append((f"{args.hours} h", first, last))
            asyncio.run(load(base, 2, args.concurrency, None))  # warm up
            slice_ = args.seconds / args.rounds
            quiet_runs, busy_runs = [], []
            for _ in range(args.rounds):
                quiet_runs.append(asyncio.run(load(base, slice_, args.concurrency, None)))
                busy_runs.append(asyncio.run(load(base, slice_, args.concurrency, ranges)))
            quiet, busy = summary(quiet_runs), summary(busy_runs)
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait(30)
            if redis is not None:
                redis.terminate()
                redis.wait(10)
    report(args, quiet, busy)


def report(args: argparse.Namespace, quiet: dict[str, Any], busy: dict[str, Any]) -> None:
    limit = args.exact_uniques_limit or "default"
    print(f"\nstore {args.store}, {args.hours} h of {args.users:,} users an hour, "
          f"{args.seconds:g}s a phase in {args.rounds} slices, {args.concurrency} clients, "
          f"exact-uniques-limit {limit}\n")  # fmt: skip
    print("| | without counts | with counts | ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for method in ("POST", "GET"):
        q_rate, b_rate = quiet[f"{method} rate"], busy[f"{method} rate"]
        q_p99, b_p99 = quiet[f"{method} p99"], busy[f"{method} p99"]
        assert isinstance(q_rate, float) and isinstance(b_rate, float)
        assert isinstance(q_p99, float) and isinstance(b_p99, float)
        print(f"| {method} rate (req/s) | {q_rate:,.0f} | {b_rate:,.0f} | "
              f"{b_rate / q_rate:.2f} | >= 0.9 |")  # fmt: skip
        print(f"| {method} p99 (ms) | {q_p99 * 1000:.1f} | {b_p99 * 1000:.1f} | "
              f"{b_p99 / q_p99:.2f} | <= 1.5 |")  # fmt: skip
    print("\n| range | counts | median (s) | max (s) | exact |")
    print("| --- | ---: | ---: | ---: | --- |")
    counts = busy["counts"]
    assert isinstance(counts, dict)
    for name, runs in counts.items():
        took = [t for t, _ in runs]
        exact = sorted({str(e).lower() for _, e in runs})
        print(f"| {name} | {len(runs)} | {statistics.median(took):.3f} | {max(took):.3f} | "
              f"{'/'.join(exact)} |")  # fmt: skip


if __name__ == "__main__":
    main()
