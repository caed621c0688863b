#!/usr/bin/env python3
"""The SQLite file after a day of load, with and without ``--retention-hours``.

    python bench/retention.py                      # 24 hours x 50,000 events, retention 2 h
    python bench/retention.py --events-per-hour 200000 --users 50000 --retention 6

A day is simulated, not waited for: the store's clock is moved an hour at a time, events
are written in group-commit batches straight to ``SQLiteStore`` (no HTTP: what is measured
is the file, not the server) and, with a retention, the store's own sweep runs after each
hour, as the server's does within 30 s. Users are drawn from a pool of generated names, so
each hour has many distinct users, as in production. It prints the file's size (the
database plus its WAL) at the end and the largest it was, for both runs; the figures go in
docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from tapad.store.base import Event
from tapad.store.options import StoreOptions
from tapad.store.sqlite import SQLiteStore
from tapad.usernames.generate import generate_usernames

BATCH = 2048  # the group committer's largest batch
START_HOUR = 480_000  # any hour: the clock is the store's, not the machine's


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


async def one_day(path: Path, args: argparse.Namespace, retention: int | None) -> dict[str, float]:
    now = [START_HOUR * 3600.0]
    store = SQLiteStore(
        str(path),
        StoreOptions(retention_hours=retention),
        synchronous="normal",
        clock=lambda: now[0],
        sweep_every=None,  # swept below, once an hour of simulated time
    )
    await store.connect()
    rng = random.Random(args.seed)
    users = generate_usernames(args.users, args.seed)
    largest = 0
    started = time.perf_counter()
    try:
        for h in range(args.hours):
            hour = START_HOUR + h
            now[0] = hour * 3600.0 + 60  # a minute into the hour: the previous one has ended
            if retention is not None:
                await store.sweep()
            for _ in range(0, args.events_per_hour, BATCH):
                await store.write(
                    [Event(hour, rng.choice(users), rng.random() < 0.5) for _ in range(BATCH)]
                )
            largest = max(largest, file_bytes(path))
        if retention is not None:
            now[0] += 3600  # the last hour has ended too
            await store.sweep()
    finally:
        await store.close()
    return {
        "final_mb": file_bytes(path) / 1e6,
        "largest_mb": largest / 1e6,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--events-per-hour", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=20_000, help="size of the user pool")
    parser.add_argument("--retention", type=int, default=2, help="hours kept after an hour ends")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.hours} hours x {args.events_per_hour:,} events, {args.users:,} users in the pool")
    with tempfile.TemporaryDirectory(prefix="tapad-retention-") as tmp:
        for retention in (None, args.retention):
            path = Path(tmp) / f"r{retention}.db"
            result = asyncio.run(one_day(path, args, retention))
            label = "for ever" if retention is None else f"{retention} h"
            print(
                f"retention {label:>8}: file {result['final_mb']:7.1f} MB at the end, "
                f"largest {result['largest_mb']:7.1f} MB ({result['seconds']:.0f} s)"
            )


if __name__ == "__main__":
    main()
