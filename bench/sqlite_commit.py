#!/usr/bin/env python3
"""What one SQLite batch costs on this disk: the statements, then the COMMIT (fsync).

    python bench/sqlite_commit.py                          # tapad's settings
    python bench/sqlite_commit.py --autocheckpoint 0       # no WAL checkpoints at all
    python bench/sqlite_commit.py --background-checkpoint 0.01

Writes tapad's schema into a scratch file (WAL, ``synchronous=FULL``), fills one hour with
``--users`` users, then commits ``--batches`` batches of ``--events`` new users each, the way
the write thread does (BEGIN IMMEDIATE, INSERT OR IGNORE, the hour's counts, COMMIT), and
prints the statements' and the COMMIT's time per batch. ``--autocheckpoint`` is SQLite's
``wal_autocheckpoint`` (pages; tapad keeps SQLite's 1000); ``--background-checkpoint S``
adds a thread that runs a PASSIVE checkpoint every S seconds on its own connection. The
figures are wall time of one process and move with every other fsync on the disk: compare
settings in alternating runs.
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tapad.store.sqlite import ADD_TO_HOUR, SCHEMA


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="users in the hour first")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--events", type=int, default=18, help="new users per batch")
    parser.add_argument("--autocheckpoint", type=int, default=1000)
    parser.add_argument("--background-checkpoint", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--page-size", type=int, default=4096, help="SQLite's page_size")
    parser.add_argument("--cache-mib", type=int, default=0, help="cache_size (0: SQLite's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tapad-commit-") as tmp:
        path = Path(tmp) / "bench.db"
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA page_size = {args.page_size}")
        if args.cache_mib:
            conn.execute(f"PRAGMA cache_size = {-1024 * args.cache_mib}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {args.autocheckpoint}")
        conn.executescript(SCHEMA)
        rng = random.Random(7)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO hour_users (hour, user) VALUES (1, ?)",
            sorted((f"u{rng.getrandbits(40):x}",) for _ in range(args.users)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stop = threading.Event()
        if args.background_checkpoint:
            threading.Thread(
                target=checkpointer, args=(path, args.background_checkpoint, stop), daemon=True
            ).start()
        statements, commits = [], []
        written = bytes_written()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(args.batches):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO hour_users (hour, user) VALUES (1, ?)",
                [(f"u{rng.getrandbits(40):x}",) for _ in range(args.events)],
            )
            conn.execute(ADD_TO_HOUR, (1, conn.total_changes - before, 1, args.events - 1))
            middle = time.perf_counter()
            conn.execute("COMMIT")
            statements.append(middle - start)
            commits.append(time.perf_counter() - middle)
        stop.set()
        after = resource.getrusage(resource.RUSAGE_SELF)
        user = (after.ru_utime - cpu.ru_utime) / args.batches
        system = (after.ru_stime - cpu.ru_stime) / args.batches
        written = bytes_written() - written
        wal = path.with_name(path.name + "-wal").stat().st_size
        conn.close()
    commits.sort()
    print(
        f"page {args.page_size}, cache {args.cache_mib or 'default'} MiB, {args.users:,} users,"
        f" autocheckpoint {args.autocheckpoint}, background checkpoint "
        f"{args.background_checkpoint or 'none'}: statements {us(statistics.median(statements))}"
        f" median; COMMIT mean {us(statistics.mean(commits))}, median"
        f" {us(commits[len(commits) // 2])}, p90/p98/p99/p99.8"
        f" {'/'.join(us(commits[int(len(commits) * q)]) for q in (0.9, 0.98, 0.99, 0.998))};"
        f" WAL at the end {wal / 2**20:.1f} MiB; written per batch (WAL and checkpoints)"
        f" {written / args.batches / 1024:,.1f} KiB; CPU per batch {us(user)} user,"
        f" {us(system)} system"
    )
    return 0


def checkpointer(path: Path, every: float, stop: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 0")
    while not stop.wait(every):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    conn.close()


def bytes_written() -> int:
    """Bytes this process has passed to write() so far (the WAL, and checkpoints' pages)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"


if __name__ == "__main__":
    sys.exit(main())
