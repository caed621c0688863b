#!/usr/bin/env python3
"""CPU per request of any servers side by side, under the same wrk load: an A/B for a change.

    python bench/ab.py \\
        "yardstick=python bench/yardstick.py --port {port}" \\
        "before=env PYTHONPATH=/tmp/before python -m tapad serve --port {port} --store {redis}" \\
        "after=python -m tapad serve --port {port} --store {redis}"
    python bench/ab.py --method post --rounds 5 ...

Each argument is ``name=command``; ``{port}`` is replaced by a free port, ``{redis}``
by a URL to its own database on a redis-server started here, ``{workdir}`` by a
scratch folder (for SQLite files); commands run in the current folder. Servers run
on core 0, wrk and Redis on core 1, as in bench/run.py; the servers take turns,
round after round, and the medians are compared with the first server's. On a
shared machine requests/s move with whatever else runs; CPU per request (from
/proc/<pid>/schedstat, see bench/cpu.py) moves much less, and for a CPU-bound
server its ratio is the ratio bench/run.py reports. A server that waits for its disk
(SQLite's fsync per commit) is not CPU-bound: compare its median requests/s (also printed),
with more rounds, since those move with the machine's load.

The servers run with ``PYTHONSAFEPATH=1`` (Python's ``-P``): ``python -m tapad`` started
in a checkout otherwise puts the current folder first on ``sys.path``, ahead of
``PYTHONPATH``, so ``before=env PYTHONPATH=/tmp/before python -m tapad ...`` run from the
repository would import the repository's tapad, and compare the same code with itself.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import find_tool, free_port, redis_server_args, scratch, wait_for_port
from cpu import Sample, measure


def store_calls(url: str) -> float | None:
    """The batches plus coalesced reads a tapad server has sent to its store so far (from
    its /metrics), or None for a server without them (the yardstick)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tapad_store_duration_seconds_count") and 'op="ping"' not in line
    ]
    return sum(counts) if counts else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("servers", nargs="+", metavar="name=command")
    parser.add_argument("--method", choices=("get", "post"), default="get")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    specs = [spec.partition("=")[::2] for spec in args.servers]
    if any(not name or not cmd for name, cmd in specs):
        parser.error("each server is name=command")
    missing = [t for t in ("wrk", "redis-server", "taskset") if find_tool(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install -y wrk redis-server util-linux)")
        return 2
    os.environ["PYTHONSAFEPATH"] = "1"  # PYTHONPATH wins over the current folder: see above
    with scratch("tapad-ab-") as (workdir, procs):
        rport = free_port()
        wait_for_port(rport, procs.start("redis", redis_server_args(rport, workdir), "1"))
        servers: dict[str, tuple[int, str]] = {}
        for db, (name, cmd) in enumerate(specs):
            port = free_port()
            line = cmd.format(port=port, redis=f"redis://127.0.0.1:{rport}/{db}", workdir=workdir)
            proc = procs.start(name, shlex.split(line), "0", cwd=Path.cwd())
            try:
                wait_for_port(port, proc)
            except RuntimeError as exc:
                log = (workdir / f"{name}.log").read_text(errors="replace").strip()
                print(f"error: {name} ({line}): {exc}: {log.splitlines()[-1:] or ''}")
                return 1
            servers[name] = (proc.pid, f"http://127.0.0.1:{port}")
        for pid, url in servers.values():  # warm up
            measure(pid, url, args.method, 2)
        samples: dict[str, list[Sample]] = {name: [] for name in servers}
        for n in range(args.rounds):
            for name, (pid, url) in servers.items():
                calls = store_calls(url)
                sample = measure(pid, url, args.method, args.seconds)
                after = store_calls(url)
                samples[name].append(sample)
                line = sample.line()
                if calls is not None and after is not None and after > calls:
                    # How many requests share one batch or read: what the store costs each.
                    line += f"  {sample.requests / (after - calls):4.1f} per store call"
                print(f"[{n + 1}] {args.method.upper():4} {name:12} {line}", flush=True)

        def median(name: str, field: str) -> float:
            return float(statistics.median(getattr(s, field) for s in samples[name]))

        first = specs[0][0]
        for name in samples:
            cpu, rate, every = (median(name, f) for f in ("cpu_us", "rps", "all_threads_us"))
            print(
                f"{name:12} median CPU {cpu:5.1f} us/request,"
                f" x {first}: {median(first, 'cpu_us') / cpu:.3f}"
                f"  (median req/s {rate:7.0f}, x {rate / median(first, 'rps'):.3f})"
                f"  all threads {every:5.1f} us/request,"
                f" x {median(first, 'all_threads_us') / every:.3f}"
                f"  switches {median(name, 'switches'):5.3f}"
                f"  I/O calls {median(name, 'syscalls'):5.2f} per request"
                f"  p99 {median(name, 'p99_ms'):5.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
