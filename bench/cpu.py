#!/usr/bin/env python3
"""CPU per request of the yardstick and of tapad on Redis and SQLite, under the same wrk load.

    python bench/cpu.py                 # 3 rounds of 4 s per server and method
    python bench/cpu.py --rounds 5 --seconds 5

On a shared machine requests/s move with whatever else runs; the CPU a server
spends per request moves much less. For each run it prints the rate, how the
server's wall time split (running / waiting for a CPU / idle, from
/proc/<pid>/schedstat), its CPU time per request (utime + stime), and its context
switches and read/write-family system calls per request (/proc/<pid>/task/*/status,
/proc/<pid>/io): where a second thread or a store's I/O costs the one core. A server at
~100% running is CPU-bound: its rate is 1 / CPU per request, and the ratio of two
such servers' CPU per request is the ratio bench/run.py reports. Same pinning as
bench/run.py: servers on core 0, wrk and redis-server on core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    MIX_LUA,
    find_tool,
    free_port,
    redis_server_args,
    scratch,
    wait_for_port,
)  # fmt: skip


def schedstat(pid: int) -> tuple[float, float]:
    running, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(running) / 1e9, int(waiting) / 1e9


def each_thread(pid: int, name: str) -> Iterator[str]:
    """The /proc file ``name`` of every thread of ``pid``, but those that ended meanwhile."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / name).read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        yield text


def threads_running(pid: int) -> float:
    """CPU seconds of every thread of ``pid`` (SQLite's write thread included)."""
    return sum(int(stat.split()[0]) for stat in each_thread(pid, "schedstat")) / 1e9


def switches_and_syscalls(pid: int) -> tuple[int, int]:
    """Context switches of every thread of ``pid`` (each costs the switch and a cold cache:
    what a second thread on the server's one core costs), and the process's read- and
    write-family system calls (``syscr`` + ``syscw``: sockets, pipes, pread, pwrite)."""
    switches = 0
    for status in each_thread(pid, "status"):
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name.endswith("ctxt_switches"):  # voluntary and nonvoluntary
                switches += int(value)
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return switches, int(io["syscr"]) + int(io["syscw"])


@dataclass(frozen=True)
class Sample:
    """One server under one wrk run: what ``bench/ab.py`` takes medians of."""

    rps: float
    running: float  # fractions of the wall time: the event loop's thread on a CPU,
    waiting: float  # runnable but waiting for one, and neither
    idle: float
    cpu_us: float  # the event loop's thread, per request
    all_threads_us: float  # every thread of the server (SQLite's write thread too)
    switches: float  # context switches per request, every thread
    syscalls: float  # read- and write-family system calls per request
    p99_ms: float
    requests: int

    def line(self) -> str:
        return (
            f"{self.rps:8.0f} req/s  running {100 * self.running:3.0f}%"
            f"  waiting for a CPU {100 * self.waiting:3.0f}%  idle {100 * self.idle:3.0f}%"
            f"  CPU {self.cpu_us:5.1f} us/request  all threads {self.all_threads_us:5.1f}"
            f" us/request  switches {self.switches:5.3f}  I/O calls {self.syscalls:5.2f}"
            f"  p99 {self.p99_ms:5.2f} ms  {self.requests} requests"
        )


def measure(pid: int, url: str, method: str, seconds: int, *script_args: str) -> Sample:
    """``script_args`` go to bench/wrk/mix.lua after the method (``ids``: events with ids)."""
    run0, wait0 = schedstat(pid)
    all0 = threads_running(pid)
    switches0, syscalls0 = switches_and_syscalls(pid)
    start = time.monotonic()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c32",
            f"-d{seconds}s",
            "-s",
            str(MIX_LUA),
            url,
            "--",
            method,
            *script_args,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    wall = time.monotonic() - start
    run1, wait1 = schedstat(pid)
    all1 = threads_running(pid)
    switches1, syscalls1 = switches_and_syscalls(pid)
    data = json.loads(out.split("WRKJSON ", 1)[1])
    requests = data["requests"]
    running, waiting = run1 - run0, wait1 - wait0
    return Sample(
        rps=requests / (data["duration_us"] / 1e6),
        running=running / wall,
        waiting=waiting / wall,
        idle=max(0.0, wall - running - waiting) / wall,
        cpu_us=1e6 * running / requests,
        all_threads_us=1e6 * (all1 - all0) / requests,
        switches=(switches1 - switches0) / requests,
        syscalls=(syscalls1 - syscalls0) / requests,
        p99_ms=data["p99_us"] / 1000,
        requests=requests,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument(
        "--methods", default="post,get", help="comma-separated: post, get (default both)"
    )
    args = parser.parse_args()
    missing = [t for t in ("wrk", "redis-server", "taskset") if find_tool(t) is None]
    if missing or (os.cpu_count() or 1) < 2:
        print(f"needs 2 cores and: wrk, redis-server, taskset (missing: {missing})")
        return 2
    with scratch("tapad-cpu-") as (workdir, procs):
        rport = free_port()
        redis = procs.start(
            "redis",
            redis_server_args(rport, workdir),
            "1",
        )
        wait_for_port(rport, redis)
        servers = {}
        yport, tport, sport = free_port(), free_port(), free_port()
        for name, cmd, port in (
            (
                "yardstick",
                [sys.executable, str(BENCH / "yardstick.py"), "--port", str(yport)],
                yport,
            ),
            (
                "tapad-redis",
                [
                    sys.executable,
                    "-m",
                    "tapad",
                    "serve",
                    "--port",
                    str(tport),
                    "--store",
                    f"redis://127.0.0.1:{rport}/0",
                ],
                tport,
            ),
            (
                "tapad-sqlite",
                [
                    sys.executable,
                    "-m",
                    "tapad",
                    "serve",
                    "--port",
                    str(sport),
                    "--store",
                    f"sqlite:///{workdir}/cpu.db",
                ],
                sport,
            ),
        ):
            proc = procs.start(name, cmd, "0", cwd=workdir)
            wait_for_port(port, proc)
            servers[name] = (proc.pid, f"http://127.0.0.1:{port}")
        for pid, url in servers.values():  # warm up
            measure(pid, url, "post", 2)
        for n in range(args.rounds):
            for method in args.methods.split(","):
                for name, (pid, url) in servers.items():
                    line = measure(pid, url, method, args.seconds).line()
                    print(f"[{n + 1}] {method.upper():4} {name:12} {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
