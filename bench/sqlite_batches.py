#!/usr/bin/env python3
"""``tapad serve`` with each SQLite batch timed: where a batch's wall time goes, under load.

    python bench/sqlite_batches.py serve --port 8080 --store sqlite:///tmp/t.db
    SQLITE_BATCHES_OUT=/tmp/b.txt python bench/ab.py --method post \\
        "t=python bench/sqlite_batches.py serve --port {port} --store sqlite:///{workdir}/t.db"

Runs the ``tapad`` command with ``SQLiteStore.write`` (on the event loop) and
``SQLiteStore._write_batch`` (on the write thread) wrapped in ``time.perf_counter``, and at
exit appends one line to ``$SQLITE_BATCHES_OUT`` (default: printed to stderr): events per
batch, the cycle from one batch's start to the next one's, the events per second that makes
while busy, and the mean of each step: ``hand`` (``write`` called to the thread running the
batch), ``work`` (the statements and the COMMIT with its fsync, with percentiles), ``back``
(the thread done to ``write`` returning on the loop) and ``gap`` (``write`` returned to the
next ``write`` called). Pauses of over 20 ms (between wrk rounds) are left out of cycles.

``SQLITE_BATCHES_FSYNC=S`` makes every COMMIT sleep S seconds after it returns (the GIL let
go, like an fsync): with ``?synchronous=normal`` on a tmpfs (/dev/shm) that stands in for
a disk whose fsync always takes S, so changes to the hand-offs can be compared without the
disk's noise. ``SQLITE_BATCHES_NAME`` names the line.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import statistics
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

import tapad.store.sqlite as store
from tapad.store.base import Event

batches: list[tuple[int, float, float, float, float]] = []  # events, called, run, done, back
thread_times: list[tuple[float, float]] = []
write_batch = store.SQLiteStore._write_batch
write = store.SQLiteStore.write


def timed_write_batch(self: store.SQLiteStore, *args: Any) -> None:
    start = time.perf_counter()
    try:
        write_batch(self, *args)
    finally:
        thread_times.append((start, time.perf_counter()))


async def timed_write(self: store.SQLiteStore, events: Sequence[Event]) -> frozenset[int]:
    called = time.perf_counter()
    duplicates = await write(self, events)
    back = time.perf_counter()
    run, done = thread_times[-1] if thread_times else (called, called)
    batches.append((len(events), called, run, done, back))
    return duplicates


def summary() -> str:
    name = os.environ.get("SQLITE_BATCHES_NAME", "tapad")
    if len(batches) < 100:
        return f"{name}: {len(batches)} batches, too few to summarise"
    cycles = [
        (nxt[1] - cur[1], cur[0])
        for cur, nxt in itertools.pairwise(batches)
        if nxt[1] - cur[1] < 0.02
    ]
    gaps = [nxt[1] - cur[4] for cur, nxt in itertools.pairwise(batches)]
    work = sorted(done - run for _, _, run, done, _ in batches)
    events = sum(n for _, n in cycles)
    busy = sum(c for c, _ in cycles)

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:5.0f}"

    def mean(values: list[float]) -> str:
        return us(statistics.mean(values))

    return (
        f"{name:10} batches {len(batches):6} events/batch {events / len(cycles):5.1f}"
        f" cycle {us(busy / len(cycles))} us => {events / busy:6.0f} events/s busy | mean us:"
        f" hand {mean([run - called for _, called, run, _, _ in batches])}"
        f" work {mean(work)} (p50 {us(work[len(work) // 2])} p99"
        f" {us(work[int(len(work) * 0.99)])} max {us(work[-1])})"
        f" back {mean([back - done for _, _, _, done, back in batches])}"
        f" gap {mean([g for g in gaps if g < 0.02])}"
    )


def report() -> None:
    line = summary()
    out = os.environ.get("SQLITE_BATCHES_OUT")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")
    else:
        print(line, file=sys.stderr)


def fake_fsync(seconds: float) -> None:
    """Every connection the store opens sleeps ``seconds`` after each COMMIT."""

    class Connection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            cursor = super().execute(sql, *args)
            if sql == "COMMIT":
                time.sleep(seconds)
            return cursor

    shim = types.SimpleNamespace(**{k: getattr(sqlite3, k) for k in dir(sqlite3)})
    shim.connect = lambda *a, **k: sqlite3.connect(*a, factory=Connection, **k)
    store.sqlite3 = shim  # type: ignore[assignment,attr-defined]


def main() -> None:
    store.SQLiteStore._write_batch = timed_write_batch  # type: ignore[method-assign,assignment]
    store.SQLiteStore.write = timed_write  # type: ignore[method-assign]
    if os.environ.get("SQLITE_BATCHES_FSYNC"):
        fake_fsync(float(os.environ["SQLITE_BATCHES_FSYNC"]))
    atexit.register(report)
    from tapad.cli import app

    sys.argv = ["tapad", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
