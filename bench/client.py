#!/usr/bin/env python3
"""What one ``tapad.client.Client`` delivers, beside single POSTs and the batch ceiling.

    python bench/client.py                       # 3 rounds, SQLite and Redis
    python bench/client.py --events 300000 --rounds 5

For each store (SQLite with synchronous=FULL as shipped; Redis) one server pinned to core
0, the load and redis-server on core 1. Per round, side by side: single POSTs from
``tapad loadgen post`` (``--singles`` of them, 32 connections), the server's own ceiling
with batches of 1,000 events that carry new ids, as the client's do (as ``bench/ids.py``),
and one ``Client`` in one thread of this process, giving ``--events``
clicks as fast as it can and then ``flush()``-ing: events/s is what was given over the
time until every event was acknowledged. Target: the client at least 5x the single
POSTs, or the batch ceiling if that is lower.

Then the caller's cost of one ``click()`` with the sender idle (a batch far away, no
flush due), median over chunks, beside ``uuid.uuid4()`` timed the same way: the client
makes its ids from a per-process random prefix and a counter instead. Target: under 5 us.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from batch import measure_batches
from common import Processes, find_tool, free_port, redis_server_args, wait_for_port
from ids import bodies as id_bodies

from tapad.client import Client
from tapad.usernames.generate import generate_usernames

CHUNK = 20_000  # calls per timed chunk of the per-call cost
CEILING_BODIES = 100  # batches of 1,000 with new ids, each sent once, for the ceiling


def loadgen_rate(url: str, requests: int) -> float:
    """Single POSTs/s that ``tapad loadgen post`` reaches (it runs on this script's core)."""
    done = subprocess.run(
        [sys.executable, "-m", "tapad", "loadgen", "post", "--url", url,
         "-n", str(requests), "-c", "32", "--json"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return float(json.loads(done.stdout)["throughput"])


def client_rate(url: str, users: list[str], events: int) -> float:
    """Events/s one Client in one thread delivers: given, then flushed."""
    with Client(url, max_queue=events + 1) as tapad:
        start = time.perf_counter()
        n = len(users)
        for i in range(events):
            tapad.click(users[i % n])
        tapad.flush()
        elapsed = time.perf_counter() - start
        stats = tapad.stats()
    if stats["acknowledged"] + stats["duplicates"] != events or stats["refused"]:
        raise RuntimeError(f"client delivery incomplete: {stats}")
    return events / elapsed


def per_call_us(url: str, chunks: int) -> tuple[float, float]:
    """Median microseconds of one click() (sender idle) and of one uuid4(), same loop."""
    idle = Client(url, batch_size=10_000, flush_interval=3600, max_queue=10_000_000)
    clicks, uuids = [], []
    try:
        for _ in range(chunks):
            start = time.perf_counter()
            for _ in range(CHUNK // 10_000 * 9_999):  # stay under a full batch: no wake-up
                idle.click("alice")
            clicks.append((time.perf_counter() - start) / (CHUNK // 10_000 * 9_999))
            idle.flush()
            start = time.perf_counter()
            for _ in range(CHUNK):
                uuid.uuid4()
            uuids.append((time.perf_counter() - start) / CHUNK)
    finally:
        idle.close()
    return 1e6 * statistics.median(clicks), 1e6 * statistics.median(uuids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="per single/batch measurement")
    parser.add_argument("--events", type=int, default=200_000, help="given to the client")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--singles", type=int, default=30_000, help="POSTs from loadgen")
    args = parser.parse_args()
    missing = [t for t in ("redis-server", "taskset") if find_tool(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install -y redis-server util-linux)")
        return 2
    os.sched_setaffinity(0, {1})
    workdir = Path(tempfile.mkdtemp(prefix="tapad-client-"))
    procs = Processes(workdir)
    users = generate_usernames(100_000, seed=0)
    try:
        rport = free_port()
        wait_for_port(rport, procs.start("redis", redis_server_args(rport, workdir), "1"))
        servers: dict[str, tuple[int, str]] = {}
        for db, store in enumerate(args.stores.split(",")):
            port = free_port()
            url = f"redis://127.0.0.1:{rport}/{db}" if store == "redis" else (
                f"sqlite:///{workdir}/{store}.db"
            )  # fmt: skip
            cmd = [sys.executable, "-m", "tapad", "serve", "--port", str(port), "--store", url]
            proc = procs.start(store, cmd, "0", cwd=workdir)
            wait_for_port(port, proc)
            servers[store] = (proc.pid, f"http://127.0.0.1:{port}")
        rows: dict[tuple[str, str], list[float]] = {}
        for n in range(args.rounds):
            for store, (pid, url) in servers.items():
                single = loadgen_rate(url, args.singles)
                fresh = id_bodies(users, 1000, CEILING_BODIES, True, seed=n)  # new ids each round
                ceiling = measure_batches(pid, url, fresh, 1000, 60, once=True).events_per_s
                client = client_rate(url, users, args.events)
                for name, value in (("single", single), ("batch", ceiling), ("client", client)):
                    rows.setdefault((store, name), []).append(value)
                print(
                    f"[{n + 1}] {store:6} single POSTs {single:8.0f}/s  batch ceiling "
                    f"{ceiling:8.0f}/s  one Client {client:8.0f}/s",
                    flush=True,
                )
        print(f"\nmedians of {args.rounds} rounds; server on one core")
        print("| store | loadgen single POSTs/s | batches of 1,000 | one Client | target | x |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for store in servers:
            single, ceiling, client = (
                statistics.median(rows[store, name]) for name in ("single", "batch", "client")
            )
            target = min(5 * single, ceiling)
            print(
                f"| {store} | {single:,.0f} | {ceiling:,.0f} | {client:,.0f} | {target:,.0f} "
                f"| {client / single:.1f} |"
            )
        click_us, uuid_us = per_call_us(next(iter(servers.values()))[1], 15)
        print(f"\none click(), sender idle: {click_us:.2f} us (median of 15 chunks);")
        print(f"one uuid.uuid4() in the same run: {uuid_us:.2f} us")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
