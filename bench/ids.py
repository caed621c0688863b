#!/usr/bin/env python3
"""What event ids cost: events/s and server CPU per event with and without ids, and the
bytes each remembered id takes in the store.

    python bench/ids.py                          # 1,000,000 ids stored between the phases
    python bench/ids.py --stored 10000000 --rounds 3

For each store (SQLite, synchronous=FULL as shipped; Redis) one server pinned to core 0,
the load and redis-server on core 1 (bench/batch.py's set-up). Traffic: single POSTs from
wrk (bench/wrk/mix.lua, ``-- post ids`` for ids), batches of 1,000 events from this script
(bench/batch.py's driver), the contract's 95/5 mix. Every event with an id has an id never
sent before (fresh bodies for each measurement, made before its clock starts), so the
figures are of new ids, not of duplicates.

Two phases on the same servers: a store holding no ids (only what the first phase's own
traffic leaves), then after ``--stored`` ids of the current hour are written through the
server (batches of 1,000), the same again. Bytes per id are read while those are written:
SQLite, the growth of the ``hour_ids`` table's pages (``dbstat``) and of the file, per id;
Redis, the growth of ``INFO memory`` ``used_memory``, per id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from batch import Result, drive, measure_batches
from common import Processes, find_tool, free_port, redis_server_args, wait_for_port
from cpu import measure

from tapad.loadgen.traffic import Mix, Traffic
from tapad.usernames.generate import generate_usernames

BATCH = 1000
PRELOAD_BATCH = 1000


def bodies(users: list[str], size: int, count: int, ids: bool, seed: int) -> list[bytes]:
    traffic = Traffic("http://127.0.0.1/analytics", users, Mix(click_ratio=0.1), seed=seed, ids=ids)
    return [traffic.post_batch(size)[2] for _ in range(count)]


def measure_single(pid: int, url: str, seconds: int, ids: bool) -> Result:
    sample = measure(pid, url, "post", seconds, *(["ids"] if ids else []))
    return Result(sample.rps, sample.all_threads_us, sample.p99_ms)


def used_memory(rport: int) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(rport), "INFO", "memory"], capture_output=True, text=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("used_memory:"))
    return int(line.split(":")[1])


def sqlite_sizes(db: Path) -> tuple[int, int]:
    """(pages of hour_ids and its index, in bytes; the database's pages, in bytes), read
    through the WAL by a connection of its own."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (ids,) = conn.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE '%hour_ids%'"
        ).fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return ids, pages * size


def preload(url: str, users: list[str], total: int, seed: int) -> tuple[int, float]:
    """``total`` events with new ids through the server in batches of 1,000; (events
    written, seconds). Bodies are made a few at a time (only the ids the store keeps matter
    here). A chunk refused (503) is sent again whole: with ids, what was recorded of it is
    not counted twice."""
    traffic = Traffic("http://127.0.0.1/analytics", users, Mix(old_ratio=0.0), seed=seed, ids=True)
    written, start = 0, time.perf_counter()
    while written < total:
        chunk = [traffic.post_batch(PRELOAD_BATCH)[2] for _ in range(100)]
        while True:
            try:
                asyncio.run(drive(url, chunk, PRELOAD_BATCH, 3600, 4, once=True))
                break
            except RuntimeError:
                time.sleep(0.5)
        written += len(chunk) * PRELOAD_BATCH
    return written, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--stored", type=int, default=1_000_000, help="ids stored for phase 2")
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    missing = [t for t in ("wrk", "redis-server", "redis-cli", "taskset") if find_tool(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install -y wrk redis-server util-linux)")
        return 2
    os.sched_setaffinity(0, {1})
    os.environ["PYTHONSAFEPATH"] = "1"
    workdir = Path(tempfile.mkdtemp(prefix="tapad-ids-"))
    procs = Processes(workdir)
    users = generate_usernames(100_000, seed=0)
    plain = bodies(users, BATCH, 64, False, 1)
    seed = 100
    results: dict[tuple[str, str, str, str], list[Result]] = {}
    try:
        rport = free_port()
        wait_for_port(rport, procs.start("redis", redis_server_args(rport, workdir), "1"))
        servers: dict[str, tuple[int, str]] = {}
        for store in args.stores.split(","):
            port = free_port()
            url = (
                f"redis://127.0.0.1:{rport}/0"
                if store == "redis"
                else f"sqlite:///{workdir}/ids.db"
            )
            cmd = [sys.executable, "-m", "tapad", "serve", "--port", str(port), "--store", url]
            proc = procs.start(store, cmd, "0", cwd=workdir)
            wait_for_port(port, proc)
            servers[store] = (proc.pid, f"http://127.0.0.1:{port}")
        for pid, url in servers.values():  # warm up
            measure_single(pid, url, 1, False)
            measure_batches(pid, url, plain, BATCH, 1)

        def phase(state: str) -> None:
            nonlocal seed
            for n in range(args.rounds):
                for store, (pid, url) in servers.items():
                    for mode in ("single", f"batch {BATCH}"):
                        for ids in (False, True):
                            if mode == "single":
                                result = measure_single(pid, url, args.seconds, ids)
                            else:
                                seed += 1
                                sent = (
                                    bodies(users, BATCH, 100 * args.seconds, True, seed)
                                    if ids
                                    else plain
                                )
                                result = measure_batches(
                                    pid, url, sent, BATCH, args.seconds, once=ids
                                )
                            key = (state, store, mode, "ids" if ids else "no ids")
                            results.setdefault(key, []).append(result)
                            print(
                                f"[{state} {n + 1}] {store:6} {mode:10} {key[3]:6}"
                                f" {result.events_per_s:9.0f} events/s"
                                f"  CPU {result.cpu_us:6.2f} us/event  p99 {result.p99_ms:7.2f} ms",
                                flush=True,
                            )

        phase("empty")
        per_id: dict[str, str] = {}
        for store, (_pid, url) in servers.items():
            if store == "sqlite":
                ids0, file0 = sqlite_sizes(workdir / "ids.db")
            else:
                mem0 = used_memory(rport)
            seed += 1
            written, took = preload(url, users, args.stored, seed)
            if store == "sqlite":
                ids1, file1 = sqlite_sizes(workdir / "ids.db")
                per_id[store] = (
                    f"hour_ids pages {(ids1 - ids0) / written:.1f} B/id, "
                    f"file {(file1 - file0) / written:.1f} B/id"
                )
            else:
                per_id[store] = f"used_memory {(used_memory(rport) - mem0) / written:.1f} B/id"
            print(f"{store}: {written:,} ids stored in {took:.0f} s; {per_id[store]}", flush=True)
        phase(f"{args.stored:,} ids")

        def median(key: tuple[str, str, str, str], name: str) -> float:
            return float(statistics.median(getattr(r, name) for r in results[key]))

        print(f"\nmedians of {args.rounds} rounds of {args.seconds} s; servers on one core")
        print(
            "| store | ids stored | traffic | ids | events/s | server CPU per event"
            " | x single without ids | x single with ids |"
        )
        print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
        for key in results:
            state, store, mode, ids_label = key
            single = median((state, store, "single", "no ids"), "cpu_us")
            single_ids = median((state, store, "single", "ids"), "cpu_us")
            cpu = median(key, "cpu_us")
            print(
                f"| {store} | {state} | {mode} | {ids_label} | {median(key, 'events_per_s'):,.0f}"
                f" | {cpu:.2f} us | {cpu / single:.3f} | {cpu / single_ids:.3f} |"
            )
        for store, text in per_id.items():
            print(f"bytes per remembered id, {store}: {text}")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
