#!/usr/bin/env python3
"""What ``WAIT 1 <timeout>`` after each batch would cost: a batch-sized MULTI/EXEC on a
master with one replica, answered alone, then followed by WAIT in the same round trip or in
a second one.

    python bench/redis_wait.py                 # 2,000 batches of 1,000 events' worth each

A master and a replica (redis-server, no persistence) on loopback; one client sends one
transaction at a time (as tapad's group commit does on one link) of ``--events`` SADDs and
an HINCRBY, and prints the median and p99 latency per batch: without WAIT, with WAIT
pipelined after EXEC (the same round trip: Redis answers it once the replica has acknowledged
the write), and with WAIT sent after EXEC's reply (a second round trip).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Processes, free_port, redis_server_args, wait_for_port


def pack(*args: object) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Link:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def reply(self) -> None:
        line = self.file.readline()
        kind = line[:1]
        if kind == b"*":
            for _ in range(int(line[1:])):
                self.reply()
        elif kind == b"$" and int(line[1:]) >= 0:
            self.file.read(int(line[1:]) + 2)
        elif kind == b"-":
            raise RuntimeError(line.decode().strip())

    def send(self, data: bytes, replies: int) -> None:
        self.sock.sendall(data)
        for _ in range(replies):
            self.reply()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tapad-wait-"))
    procs = Processes(workdir)
    try:
        master, replica = free_port(), free_port()
        (workdir / "m").mkdir()
        (workdir / "r").mkdir()
        wait_for_port(master, procs.start("master", redis_server_args(master, workdir / "m"), None))
        cmd = [*redis_server_args(replica, workdir / "r"), "--replicaof", "127.0.0.1", str(master)]
        wait_for_port(replica, procs.start("replica", cmd, None))
        while (
            "master_link_status:up"
            not in subprocess.run(
                ["redis-cli", "-p", str(replica), "INFO", "replication"],
                capture_output=True,
                text=True,
            ).stdout
        ):
            time.sleep(0.05)
        link = Link(master)
        n = 0

        def batch() -> bytes:
            nonlocal n
            n += 1
            users = [f"u{n}-{i}" for i in range(args.events)]
            return b"".join(
                (pack("MULTI"), pack("SADD", f"k{n % 100}", *users),
                 pack("HINCRBY", "n", "c", args.events), pack("EXEC"))
            )  # fmt: skip

        wait = pack("WAIT", 1, 1000)
        results = {}
        for name in ("no WAIT", "WAIT pipelined", "WAIT after EXEC"):
            times = []
            for _ in range(args.batches):
                body = batch()
                start = time.perf_counter()
                if name == "no WAIT":
                    link.send(body, 4)
                elif name == "WAIT pipelined":
                    link.send(body + wait, 5)
                else:
                    link.send(body, 4)
                    link.send(wait, 1)
                times.append(time.perf_counter() - start)
            times.sort()
            results[name] = (statistics.median(times), times[int(len(times) * 0.99)])
        base = results["no WAIT"][0]
        print(f"{args.batches} batches of {args.events} SADD members, one at a time:")
        for name, (median, p99) in results.items():
            print(
                f"  {name:16} median {median * 1e6:8.0f} us  p99 {p99 * 1e6:8.0f} us"
                f"  (+{(median - base) * 1e6:.0f} us)"
            )
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
