#!/usr/bin/env python3
"""Throughput and store size as the current hour fills: 10 thousand to 10 million users.

    python bench/growth.py                                  # SQLite, Redis, Redis --unique hll
    python bench/growth.py --sizes 10000,1000000 --stores sqlite,redis --rounds 3 --seconds 5

For each store two ``tapad serve`` run side by side: one on a store holding only what
the benchmark itself posts (emptied before every step: the reference) and one on a
store that is filled, step by step, to each size of ``--sizes`` distinct users in one
hour. The fill is not sent over HTTP: on Redis it goes through the store's own ``write``
in batches of 50,000 events (the same keys a server writes), on SQLite into the same two
tables in one transaction, rows in key order (see ``fill_sqlite``); seconds per million
either way. Both name users "u" + 8 hex digits + a number, like new_users.lua's, so the
POSTs measured land all over the filled index, not after it. At each step wrk posts
users never seen before into that hour (``bench/wrk/new_users.lua``) and then GETs it,
the two servers taking turns round after round; the table gives the filled server's
median rate as a ratio to the reference's, its CPU per request (from
/proc/<pid>/schedstat, which moves less with the machine's load), and the store's size:
for SQLite the database's pages in use (``page_count - freelist_count``, times
``page_size``) and the file with its WAL, for Redis ``MEMORY USAGE`` of the hour's keys
and ``used_memory`` from ``INFO memory``. Bytes per user is the hour's size divided by
its unique users.

Pinning as in bench/run.py: servers on core 0, wrk and redis-server on core 1. Writes
``growth.md``, ``growth.json`` and ``growth.png`` into ``bench/results/growth-<time>/``.
Watch memory and disk: 10 million users take about 1 GB in Redis (exact) and about as
much in the SQLite file; the script checks MemAvailable and the free disk before each
fill and stops with one line if a step would not fit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    BENCH,
    LOOPBACK,
    Processes,
    find_tool,
    free_port,
    redis_server_args,
    wait_for_port,
)

from tapad.store import StoreOptions, open_store
from tapad.store.base import Event
from tapad.store.sqlite import ADD_TO_HOUR

NEW_USERS_LUA = BENCH / "wrk" / "new_users.lua"
FILL_BATCH = 50_000
STORES = {  # name: (scheme, unique mode)
    "sqlite": ("sqlite", "exact"),
    "redis": ("redis", "exact"),
    "redis-hll": ("redis", "hll"),
}
# rough need per user, for the check before a fill: Redis set member, SQLite row
NEED_BYTES_PER_USER = {"sqlite": 120, "redis": 120, "redis-hll": 0}


@dataclass
class Measure:
    rps: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    errors: int


@dataclass
class Step:
    store: str
    size: int  # users filled in
    users: int = 0  # unique users in the hour after the step (fill + what wrk posted)
    hour_bytes: int = 0  # the hour's keys (Redis) or the database's pages (SQLite)
    total_bytes: int = 0  # Redis used_memory, or SQLite database + WAL
    fill_seconds: float = 0.0
    runs: dict[str, dict[str, list[Measure]]] = field(default_factory=dict)

    def median(self, role: str, method: str, attr: str) -> float:
        return float(statistics.median(getattr(m, attr) for m in self.runs[role][method]))

    def ratio(self, method: str) -> float:
        return self.median("filled", method, "rps") / self.median("reference", method, "rps")

    def cpu_ratio(self, method: str) -> float:
        """Reference CPU per request / filled: below 1 means the filled store costs more."""
        filled = self.median("filled", method, "cpu_us")
        return self.median("reference", method, "cpu_us") / filled

    @property
    def bytes_per_user(self) -> float:
        return self.hour_bytes / self.users if self.users else 0.0


def user_name(i: int) -> str:
    """Distinct names in no particular key order, as real names are: "u", 8 hex digits, i.
    new_users.lua's names look the same, so its POSTs land all over the filled index."""
    return f"u{(i * 2654435761) % 2**32:08x}{i}"


def fill_sqlite(path: str, hour: int, start: int, stop: int) -> None:
    """One transaction, rows in key order, a page cache that holds the whole index: each
    page is written once per fill (through the store's write, 50,000 random names at a time
    rewrite most of a 10-million-row index every batch)."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -4000000")  # KiB: 4 GiB at most, as needed
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO hour_users (hour, user) VALUES (?, ?)",
            ((hour, user) for user in sorted(user_name(i) for i in range(start, stop))),
        )
        added = conn.total_changes - before
        clicks = sum(1 for i in range(start, stop) if i % 10 == 0)
        conn.execute(ADD_TO_HOUR, (hour, added, clicks, stop - start - clicks))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def fill(url: str, unique: str, hour: int, start: int, stop: int) -> None:
    if url.startswith("sqlite:///"):
        fill_sqlite(url.removeprefix("sqlite:///"), hour, start, stop)
        return
    store = open_store(url, StoreOptions(timeout=120.0, unique=unique))
    await store.connect()
    try:
        for first in range(start, stop, FILL_BATCH):
            last = min(stop, first + FILL_BATCH)
            await store.write([Event(hour, user_name(i), i % 10 == 0) for i in range(first, last)])
    finally:
        await store.close()


def schedstat_running(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def run_wrk(pid: int, url: str, method: str, ts_ms: int, seconds: int) -> Measure:
    before = schedstat_running(pid)
    cmd = ["taskset", "-c", "1", find_tool("wrk") or "wrk", "-t1", "-c32", f"-d{seconds}s"]
    cmd += ["--timeout", "2s", "-s", str(NEW_USERS_LUA), url, "--", method, str(ts_ms)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    running = schedstat_running(pid) - before
    data = json.loads(out.split("WRKJSON ", 1)[1].splitlines()[0])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    requests = max(1, data["requests"])
    return Measure(
        rps=round(requests / (data["duration_us"] / 1e6), 1),
        p99_ms=data["p99_us"] / 1000,
        cpu_us=round(1e6 * running / requests, 2),
        errors=errors,
    )


def redis_cli(port: int, *args: str) -> str:
    cmd = [find_tool("redis-cli") or "redis-cli", "-p", str(port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


class Growth:
    def __init__(self, args: argparse.Namespace, outdir: Path) -> None:
        self.args = args
        self.outdir = outdir
        self.procs = Processes(outdir)
        self.redis_port = 0
        self.ts_ms = int(time.time() // 3600 * 3600 * 1000 + 1_800_000)  # this hour's middle
        self.hour = self.ts_ms // 3_600_000

    def url(self, store: str, role: str) -> str:
        scheme, _ = STORES[store]
        if scheme == "sqlite":
            return f"sqlite:///{self.outdir}/data/{store}-{role}.db"
        db = 2 * list(STORES).index(store) + (role == "filled")
        return f"redis://{LOOPBACK}:{self.redis_port}/{db}"

    def start_server(self, store: str, role: str) -> tuple[int, str]:
        port = free_port()
        cmd = [sys.executable, "-m", "tapad", "serve", "--host", LOOPBACK, "--port", str(port)]
        cmd += ["--store", self.url(store, role)]
        if STORES[store][1] == "hll":
            cmd += ["--unique", "hll"]
        proc = self.procs.start(f"{store}-{role}", cmd, "0")
        wait_for_port(port, proc)
        return proc.pid, f"http://{LOOPBACK}:{port}"

    def empty(self, store: str, role: str) -> None:
        url = self.url(store, role)
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            if Path(path).exists():
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                conn.executescript("DELETE FROM hour_users; DELETE FROM hours;")
                conn.close()
        else:
            redis_cli(self.redis_port, "-n", url.rsplit("/", 1)[1], "FLUSHDB")

    def sizes(self, store: str) -> tuple[int, int, int]:
        """(unique users in the hour, the hour's bytes, the whole store's bytes)."""
        url = self.url(store, "filled")
        if url.startswith("sqlite"):
            path = Path(url.removeprefix("sqlite:///"))
            conn = sqlite3.connect(path, timeout=30)
            (users,) = conn.execute(
                "SELECT unique_users FROM hours WHERE hour = ?", (self.hour,)
            ).fetchone() or (0,)
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            conn.close()
            wal = path.with_name(path.name + "-wal")
            wal_bytes = wal.stat().st_size if wal.exists() else 0
            return users, (pages - free) * page_size, pages * page_size + wal_bytes
        db = url.rsplit("/", 1)[1]
        keys = redis_cli(self.redis_port, "-n", db, "--scan", "--pattern", f"*{{{self.hour}.*")
        hour_bytes = 0
        for key in keys.split():
            usage = redis_cli(self.redis_port, "-n", db, "MEMORY", "USAGE", key, "SAMPLES", "0")
            hour_bytes += int(usage.strip() or 0)
        info = redis_cli(self.redis_port, "INFO", "memory")
        used = next(int(x.split(":")[1]) for x in info.split() if x.startswith("used_memory:"))
        status = subprocess.run(
            ["curl", "-s", f"{self.servers[store]['filled'][1]}/analytics?timestamp={self.ts_ms}"],
            capture_output=True,
            text=True,
        ).stdout
        users = int(dict(line.split(",") for line in status.split())["unique_users"])
        return users, hour_bytes, used

    def check_room(self, store: str, more_users: int) -> str | None:
        need = NEED_BYTES_PER_USER[store] * more_users
        avail = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemAvailable:")
        )
        if STORES[store][0] == "redis" and need > avail * 0.5:
            return f"{store}: {more_users:,} more users need ~{need >> 20} MiB, {avail >> 20} free"
        free_disk = shutil.disk_usage(self.outdir).free
        if STORES[store][0] == "sqlite" and need * 2 > free_disk:
            return f"{store}: {more_users:,} more users need ~{need >> 20} MiB of disk"
        return None

    def run(self) -> list[Step]:
        args = self.args
        (self.outdir / "data").mkdir(parents=True, exist_ok=True)
        if any(STORES[s][0] == "redis" for s in args.stores):
            self.redis_port = free_port()
            rargs = redis_server_args(self.redis_port, self.outdir / "data")
            wait_for_port(self.redis_port, self.procs.start("redis", rargs, "1"))
        self.servers: dict[str, dict[str, tuple[int, str]]] = {}
        steps: list[Step] = []
        for store in args.stores:
            filled = 0
            self.servers[store] = {r: self.start_server(store, r) for r in ("reference", "filled")}
            for size in args.sizes:
                if problem := self.check_room(store, size - filled):
                    print(f"stopping {store} before {size:,} users: {problem}", flush=True)
                    break
                step = Step(store, size)
                start = time.monotonic()
                url, unique = self.url(store, "filled"), STORES[store][1]
                asyncio.run(fill(url, unique, self.hour, filled, size))
                step.fill_seconds = round(time.monotonic() - start, 1)
                filled = size
                self.empty(store, "reference")
                print(f"{store}: filled to {size:,} users in {step.fill_seconds}s", flush=True)
                self.measure(step)
                step.users, step.hour_bytes, step.total_bytes = self.sizes(store)
                steps.append(step)
                print(summary_line(step), flush=True)
            for pid, _ in self.servers[store].values():
                for proc, _ in self.procs.procs:
                    if proc.pid == pid:
                        self.procs.stop(proc)
        return steps

    def measure(self, step: Step) -> None:
        servers = self.servers[step.store]
        step.runs = {role: {"POST": [], "GET": []} for role in servers}
        for pid, url in servers.values():  # warm up
            run_wrk(pid, url, "post", self.ts_ms, 1)
        for n in range(self.args.rounds):
            order = list(servers.items())
            if n % 2:
                order.reverse()
            for method in ("POST", "GET"):
                for role, (pid, url) in order:
                    step.runs[role][method].append(
                        run_wrk(pid, url, method.lower(), self.ts_ms, self.args.seconds)
                    )


def summary_line(step: Step) -> str:
    return (
        f"{step.store:9} {step.users:>11,} users  POST x{step.ratio('POST'):.2f}"
        f" (CPU x{step.cpu_ratio('POST'):.2f})  GET x{step.ratio('GET'):.2f}"
        f"  hour {size(step.hour_bytes)}  {step.bytes_per_user:6.2f} B/user"
    )


def size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


def render_markdown(steps: list[Step], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "| store | users in the hour | POST req/s | x empty | CPU/POST x empty | GET req/s"
        " | x empty | POST p99 ms | the hour's size | bytes per user | whole store (*) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in steps:
        lines.append(
            f"| {s.store} | {s.users:,} | {s.median('filled', 'POST', 'rps'):,.0f}"
            f" | {s.ratio('POST'):.2f} | {s.cpu_ratio('POST'):.2f}"
            f" | {s.median('filled', 'GET', 'rps'):,.0f} | {s.ratio('GET'):.2f}"
            f" | {s.median('filled', 'POST', 'p99_ms'):.1f} | {size(s.hour_bytes)}"
            f" | {s.bytes_per_user:,.{1 if s.bytes_per_user >= 1 else 3}f}"
            f" | {size(s.total_bytes)} |"
        )
    errors = sum(m.errors for s in steps for r in s.runs.values() for v in r.values() for m in v)
    lines += [
        "",
        "(*) SQLite: the database file and its WAL; Redis: `used_memory` of the whole"
        " redis-server, which holds every store of the run.",
        "",
        f"errors (non-2xx and socket errors), all runs: {errors}",
    ]
    return "\n".join(lines) + "\n"


def render_chart(steps: list[Step], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for store in dict.fromkeys(s.store for s in steps):
        mine = [s for s in steps if s.store == store]
        xs = [s.users for s in mine]
        left.plot(xs, [s.ratio("POST") for s in mine], marker="o", label=f"{store} POST")
        left.plot(xs, [s.ratio("GET") for s in mine], marker="x", ls=":", label=f"{store} GET")
        right.plot(xs, [s.bytes_per_user for s in mine], marker="o", label=store)
    left.axhline(0.9, color="green", ls="--", lw=0.8, label="goal 0.90")
    left.set_ylabel("req/s with N users in the hour / req/s on an empty hour")
    right.set_ylabel("bytes per unique user in the hour")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("distinct users in the current hour")
        ax.legend(fontsize=7)
    fig.suptitle("tapad as the hour fills (median of alternating rounds, 32 connections)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--stores", default=",".join(STORES), help=", ".join(STORES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.stores = [s.strip() for s in args.stores.split(",")]
    if bad := [s for s in args.stores if s not in STORES]:
        parser.error(f"unknown store {bad[0]!r}: use {', '.join(STORES)}")
    tools = ["wrk", "taskset", "curl"]
    if any(STORES[s][0] == "redis" for s in args.stores):
        tools += ["redis-server", "redis-cli"]
    if missing := [t for t in tools if find_tool(t) is None]:
        print(f"missing: {', '.join(missing)} (apt-get install -y wrk redis-server curl)")
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    outdir = (args.out or BENCH / "results" / f"growth-{stamp}").resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    growth = Growth(args, outdir)
    try:
        steps = growth.run()
    finally:
        growth.procs.stop_all()
        shutil.rmtree(outdir / "data", ignore_errors=True)
    if not steps:
        print("nothing measured")
        return 1
    command = "python bench/growth.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table = render_markdown(steps, command.strip())
    (outdir / "growth.md").write_text(table)
    (outdir / "growth.json").write_text(json.dumps([asdict(s) for s in steps], indent=1))
    note = render_chart(steps, outdir / "growth.png")
    print(table)
    print(note or f"chart: {outdir / 'growth.png'}")
    print(f"results: {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
