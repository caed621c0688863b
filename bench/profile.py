#!/usr/bin/env python3
"""Profile one tapad server under wrk load with py-spy, and summarise where time goes.

    python bench/profile.py --method post --store redis      # or --store sqlite
    python bench/profile.py --method get --seconds 10

Starts redis-server (for --store redis) and ``tapad serve`` on 127.0.0.1, the
server pinned to core 0 and wrk/redis to core 1 as in bench/run.py, warms it up,
then samples it with ``py-spy record`` while wrk runs the 95/5 mix. Prints the
functions with the most samples on their own (self) and under them (inclusive),
and the raw py-spy output's path. Needs py-spy (``pip install py-spy``), which
needs ptrace: run it as root or with CAP_SYS_PTRACE. It stops what it started.

Read it knowing how py-spy sees asyncio: a sample lands on the Python frame that
is running, and time spent in uvloop's C code between callbacks shows up as the
event loop's own frame (``Runner.run``).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MIX_LUA, find_tool, free_port, redis_server_args, scratch, wait_for_port

KEYS = (
    "TapadHandler.__call__",
    "parse_post",
    "parse_get",
    "GroupCommitter",
    "CoalescingReader",
    "RedisStore.write",
    "RedisStore.read",
    "SQLiteStore",
    "Metrics.request_done",
    "MeasuredStore",
    "finish_response",
    "data_received",
)


def summarise(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for key in KEYS:
            if key in stack:
                under[key] += n
    out = [f"{total} samples", "", "self (the frame running when sampled):"]
    out += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    out += ["", "inclusive (samples with this function on the stack):"]
    out += [f"  {100 * n / total:5.1f}%  {key}" for key, n in under.most_common()]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("post", "get"), default="post")
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    missing = [t for t in ("wrk", "py-spy", "taskset") if find_tool(t) is None]
    if args.store == "redis" and find_tool("redis-server") is None:
        missing.append("redis-server")
    if missing:
        print(f"missing: {', '.join(missing)} (py-spy: pip install py-spy)", file=sys.stderr)
        return 2
    pin = (os.cpu_count() or 1) >= 2
    server_cpus, client = ("0", "1") if pin else (None, None)
    raw = Path(tempfile.gettempdir()) / f"tapad-profile-{args.store}-{args.method}.txt"
    with scratch("tapad-profile-") as (workdir, procs):
        if args.store == "redis":
            rport = free_port()
            redis = procs.start(
                "redis",
                redis_server_args(rport, workdir),
                client,
            )
            wait_for_port(rport, redis)
            store = f"redis://127.0.0.1:{rport}/0"
        else:
            store = f"sqlite:///{workdir}/tapad.db"
        port = free_port()
        server = procs.start(
            "tapad",
            [sys.executable, "-m", "tapad", "serve", "--port", str(port), "--store", store],
            server_cpus,
        )
        wait_for_port(port, server)
        url = f"http://127.0.0.1:{port}"
        wrk = ["taskset", "-c", client or "0", "wrk", "-t1", "-c32", "-s", str(MIX_LUA), url]
        subprocess.run([*wrk[:5], "-d2s", *wrk[5:], "--", "post"], capture_output=True, check=True)
        spy = subprocess.Popen(
            [
                "py-spy",
                "record",
                "-r",
                str(args.rate),
                "-d",
                str(args.seconds),
                "-f",
                "raw",
                "--nonblocking",
                "-o",
                str(raw),
                "-p",
                str(server.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        load = subprocess.run(
            [*wrk[:5], f"-d{args.seconds - 1}s", *wrk[5:], "--", args.method],
            capture_output=True,
            text=True,
        )
        spy.wait(args.seconds + 30)
        rate = [ln for ln in load.stdout.splitlines() if "Requests/sec" in ln]
        print(f"tapad on {args.store}, {args.method.upper()}, under py-spy: {rate[0].strip()}")
        print(summarise(raw, args.top))
        print(f"\nraw py-spy samples: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
