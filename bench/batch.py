#!/usr/bin/env python3
"""Single POSTs and batches side by side: events/s and the server's CPU per event.

    python bench/batch.py                               # 3 rounds of 3 s each
    python bench/batch.py --before /tmp/tapad-main     # plus single POSTs on that checkout

For each store (SQLite, synchronous=FULL as shipped; Redis) one server per code, pinned
to core 0 (taskset), the load and redis-server on core 1, as in bench/cpu.py. Single POSTs
come from wrk (bench/wrk/mix.lua, as bench/cpu.py); batches of 100 and 1,000 events
(NDJSON, the contract's 95/5 mix from tapad's load tool) from this script, on
keep-alive connections, every body made before the clock starts. The servers take turns,
round after round; the figures are medians over the rounds. CPU per event is the server's
every thread (/proc/<pid>/task/*/schedstat: SQLite's write thread included) divided by
the events acknowledged; p99 is per request (a batch's answer for a batch).

``--profile STORE``: instead, one server on STORE under cProfile for batches of 1,000,
and the functions with the most time of their own (parse, validate, store, HTTP).

``--before DIR``: a checkout of other code (``git worktree add DIR main``), whose single
POSTs run in the same rounds: an A/B of the single-POST path (ratio of CPU per event).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from common import Processes, find_tool, free_port, redis_server_args, wait_for_port
from cpu import measure, threads_running

from tapad.loadgen.http import Connection, Endpoint
from tapad.loadgen.traffic import Mix, Traffic
from tapad.usernames.generate import generate_usernames

NDJSON = "application/x-ndjson"
BODIES = 64  # distinct bodies per batch size, sent in turn


@dataclass(frozen=True)
class Result:
    events_per_s: float
    cpu_us: float  # every thread of the server, per event
    p99_ms: float  # per request


def make_bodies(size: int, users: list[str]) -> list[bytes]:
    traffic = Traffic("http://127.0.0.1/analytics", users, Mix(click_ratio=0.1), seed=size)
    return [traffic.post_batch(size)[2] for _ in range(BODIES)]


async def drive(
    url: str, bodies: list[bytes], size: int, seconds: float, conns: int, once: bool = False
) -> tuple[int, list[float]]:
    """Send ``bodies`` in turn on ``conns`` connections for ``seconds`` (``once``: or until
    each was sent once, for bodies whose events carry ids): events acknowledged and each
    request's latency."""
    endpoint = Endpoint(f"{url}/analytics")
    latencies: list[float] = []
    acknowledged = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal acknowledged
        connection = Connection(endpoint)
        i = offset
        try:
            while time.perf_counter() < deadline and not (once and i >= len(bodies)):
                began = time.perf_counter()
                answer = await connection.request(
                    "POST", "/analytics/batch", bodies[i % len(bodies)], NDJSON
                )
                latencies.append(time.perf_counter() - began)
                if answer.status != 200:
                    raise RuntimeError(f"batch answered {answer.status}: {answer.body[:200]!r}")
                acknowledged += size
                i += conns
        finally:
            connection.close()

    await asyncio.gather(*(worker(n) for n in range(conns)))
    return acknowledged, latencies


def measure_batches(
    pid: int, url: str, bodies: list[bytes], size: int, seconds: float, once: bool = False
) -> Result:
    conns = 4 if size >= 1000 else 8
    cpu0, start = threads_running(pid), time.perf_counter()
    events, latencies = asyncio.run(drive(url, bodies, size, seconds, conns, once))
    wall, cpu = time.perf_counter() - start, threads_running(pid) - cpu0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(events / wall, 1e6 * cpu / events, 1000 * p99)


def measure_singles(pid: int, url: str, seconds: int) -> Result:
    sample = measure(pid, url, "post", seconds)
    return Result(sample.rps, sample.all_threads_us, sample.p99_ms)


def profile(store: str, bodies: list[bytes], seconds: int, workdir: Path) -> None:
    """Batches of 1,000 to one server under cProfile; print its top functions (own time)."""
    import pstats
    import signal
    import subprocess

    rport, port = free_port(), free_port()
    procs = Processes(workdir)
    try:
        if store == "redis":
            wait_for_port(rport, procs.start("redis", redis_server_args(rport, workdir), "1"))
        url = f"redis://127.0.0.1:{rport}/0" if store == "redis" else f"sqlite:///{workdir}/p.db"
        out = workdir / "batch.prof"
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "cProfile", "-o", str(out),
               "-m", "tapad", "serve", "--port", str(port), "--store", url]  # fmt: skip
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, server)
        events, _ = asyncio.run(drive(f"http://127.0.0.1:{port}", bodies, 1000, seconds, 4))
        server.send_signal(signal.SIGTERM)  # a clean exit: cProfile writes its file
        server.wait(60)
    finally:
        procs.stop_all()
    print(f"cProfile, {store}, {events:,} events in batches of 1,000 ({seconds} s):")
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(18)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout to A/B single POSTs against")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--profile", choices=("sqlite", "redis"))
    args = parser.parse_args()
    missing = [t for t in ("wrk", "redis-server", "taskset") if find_tool(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install -y wrk redis-server util-linux)")
        return 2
    os.sched_setaffinity(0, {1})  # this script's load shares core 1 with wrk and Redis
    os.environ["PYTHONSAFEPATH"] = "1"  # PYTHONPATH, not the current folder (bench/ab.py)
    here = str(Path(__file__).resolve().parents[1])
    codes = {"after": here} | ({"before": str(args.before.resolve())} if args.before else {})
    workdir = Path(tempfile.mkdtemp(prefix="tapad-batch-"))
    procs = Processes(workdir)
    users = generate_usernames(100_000, seed=0)
    bodies = {size: make_bodies(size, users) for size in (100, 1000)}  # before any clock
    if args.profile:
        profile(args.profile, bodies[1000], args.seconds, workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    try:
        rport = free_port()
        wait_for_port(rport, procs.start("redis", redis_server_args(rport, workdir), "1"))
        servers: dict[tuple[str, str], tuple[int, str]] = {}
        for db, (code, store) in enumerate((c, s) for c in codes for s in args.stores.split(",")):
            port = free_port()
            url = (
                f"redis://127.0.0.1:{rport}/{db}"
                if store == "redis"
                else f"sqlite:///{workdir}/{code}.db"
            )
            cmd = ["env", f"PYTHONPATH={codes[code]}", sys.executable, "-m", "tapad", "serve",
                   "--port", str(port), "--store", url]  # fmt: skip
            proc = procs.start(f"{code}-{store}", cmd, "0", cwd=workdir)
            wait_for_port(port, proc)
            servers[code, store] = (proc.pid, f"http://127.0.0.1:{port}")
        modes = ["single", "batch 100", "batch 1000"]
        results: dict[tuple[str, str, str], list[Result]] = {}
        for (code, _), (pid, url) in servers.items():  # warm up
            measure_singles(pid, url, 1)
            if code == "after":
                measure_batches(pid, url, bodies[100], 100, 1)
        for n in range(args.rounds):
            for (code, store), (pid, url) in servers.items():
                for mode in modes if code == "after" else ["single"]:
                    if mode == "single":
                        result = measure_singles(pid, url, args.seconds)
                    else:
                        size = int(mode.split()[1])
                        result = measure_batches(pid, url, bodies[size], size, args.seconds)
                    results.setdefault((code, store, mode), []).append(result)
                    print(
                        f"[{n + 1}] {code:6} {store:6} {mode:10}"
                        f" {result.events_per_s:9.0f} events/s"
                        f"  CPU {result.cpu_us:6.2f} us/event  p99 {result.p99_ms:7.2f} ms",
                        flush=True,
                    )

        def median(key: tuple[str, str, str], field: str) -> float:
            return float(statistics.median(getattr(r, field) for r in results[key]))

        print(f"\nmedians of {args.rounds} rounds of {args.seconds} s; servers on one core")
        print(
            "| store | code | traffic | events/s | server CPU per event | x single"
            " | p99 per request |"
        )
        print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
        for key in results:
            code, store, mode = key
            single = median(("after", store, "single"), "cpu_us")
            cpu = median(key, "cpu_us")
            print(
                f"| {store} | {code} | {mode} | {median(key, 'events_per_s'):,.0f} | {cpu:.2f} us"
                f" | {cpu / single:.3f} | {median(key, 'p99_ms'):.2f} ms |"
            )
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
