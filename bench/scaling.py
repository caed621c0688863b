#!/usr/bin/env python3
"""The figures behind docs/scaling.md, measured on this machine.

    python bench/scaling.py                         # about two minutes
    python bench/scaling.py --seconds 5 --rounds 3  # quicker, noisier

For one tapad worker (pinned to core 0; wrk and Redis share core 1) on a single
Redis, on a three-master Redis Cluster as a new store gets it (3 shards, one per
master), on the same cluster with a store laid out as before (16 shards, {hour.shard}
hash tags: how stores created before keep running), and on a single Redis in hll
mode, it measures POST events/s with wrk (bench/wrk/mix.lua: 95% current hour,
100,000 users), the events per group-commit batch (tapad's own /metrics), the Redis
commands and transactions per batch (Redis's INFO commandstats) and the Redis CPU
time per event (INFO cpu), and the worker's own CPU per event (/proc). The three
exact-mode targets are measured in turn, ``--rounds`` times, side by side, so that
each round's cluster/single ratio of events/s compares runs made under the same load
on a shared machine; the medians are reported, and the same ratio from the worker's
CPU per event (the events/s it reaches where its core is the limit). Then tapad's
own CPU per 32-event batch written and per hour read, in process (CPU time: hardly
moved by other load on the machine); then the bytes one hour's unique users take in
Redis (MEMORY USAGE) in exact and in hll mode.

Everything runs on 127.0.0.1 in a temp folder and is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
WRITE_COMMANDS = ("multi", "exec", "sadd", "pfadd", "hincrby", "zadd")
CLUSTER = "cluster (3 masters, 3 shards)"  # a new store's layout: a shard per master
CLUSTER_16 = "cluster (3 masters, 16 shards, {hour.shard} tags)"  # stores set up before


def free_port(below: int = 0) -> int:
    """A free port; with ``below``, one under it whose port + 10000 is free (cluster bus)."""
    if not below:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
            return port
    while True:
        port = random.randint(20000, below - 10001)
        if port_free(port) and port_free(port + 10000):
            return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port}")


def pinned(core: str, args: list[str]) -> list[str]:
    return ["taskset", "-c", core, *args] if (os.cpu_count() or 1) >= 2 else args


class Procs:
    """Every process started here, stopped in reverse order at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def redis_server(procs: Procs, workdir: Path, port: int, *extra: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir)]
    procs.start(pinned("1", [*args, "--save", "", "--appendonly", "no", *extra]))
    wait_port(port)


def cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def cluster(procs: Procs, workdir: Path) -> list[int]:
    ports = [free_port(below=55536) for _ in range(3)]
    for i, port in enumerate(ports):
        redis_server(procs, workdir / f"node{i}", port, "--cluster-enabled", "yes")
    nodes = [f"{LOOPBACK}:{p}" for p in ports]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while not all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports):
        if time.monotonic() > deadline:
            raise TimeoutError("cluster not ok")
        time.sleep(0.1)
    return ports


def commandstats(ports: list[int]) -> dict[str, int]:
    calls: dict[str, int] = {}
    for port in ports:
        for name, n in re.findall(r"cmdstat_(\w+):calls=(\d+)", cli(port, "INFO", "commandstats")):
            calls[name] = calls.get(name, 0) + int(n)
    return calls


def redis_cpu(ports: list[int]) -> float:
    """CPU seconds (user + system) the Redis servers have used so far."""
    total = 0.0
    for port in ports:
        info = cli(port, "INFO", "cpu")
        for name in ("used_cpu_user", "used_cpu_sys"):
            found = re.search(rf"^{name}:([\d.]+)", info, re.M)
            assert found is not None, f"redis INFO has no {name}"
            total += float(found.group(1))
    return total


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure_worker(
    procs: Procs, store: str, ports: list[int], seconds: float, conns: int, *extra: str
) -> dict[str, float]:
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [sys.executable, "-m", "tapad", "serve", "--port", str(port), "--store", store, *extra]
    server = procs.start(pinned("0", cmd))
    wait_port(port)
    before_cmds = commandstats(ports)
    before_batches = metric(url, "tapad_batch_size_events_count")
    before_events = metric(url, "tapad_batch_size_events_sum")
    before_cpu = redis_cpu(ports)
    before_tapad = process_cpu(server.pid)
    wrk = subprocess.run(
        pinned(
            "1",
            [
                "wrk",
                "-t1",
                f"-c{conns}",
                f"-d{int(seconds)}s",
                "-s",
                str(ROOT / "bench" / "wrk" / "mix.lua"),
                url,
                "--",
                "post",
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    (line,) = [x for x in wrk.stdout.splitlines() if x.startswith("WRKJSON ")]
    result = json.loads(line.split(" ", 1)[1])
    batches = metric(url, "tapad_batch_size_events_count") - before_batches
    events = metric(url, "tapad_batch_size_events_sum") - before_events
    after_cmds = commandstats(ports)
    cpu = redis_cpu(ports) - before_cpu
    tapad_cpu = process_cpu(server.pid) - before_tapad
    procs.stop(server)
    writes = sum(after_cmds.get(c, 0) - before_cmds.get(c, 0) for c in WRITE_COMMANDS)
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "events_per_s": result["requests"] / (result["duration_us"] / 1e6),
        "p99_ms": result["p99_us"] / 1000,
        "errors": errors,
        "events_per_batch": events / batches if batches else 0,
        "commands_per_batch": writes / batches if batches else 0,
        "redis_cpu_us_per_event": cpu / events * 1e6 if events else 0,
        # the worker's own CPU (HTTP, group commit, store) per event: what bounds its
        # events/s when its core is the busy one, and hardly moved by other load
        "tapad_cpu_us_per_event": tapad_cpu / events * 1e6 if events else 0,
        "transactions_per_batch": (after_cmds.get("exec", 0) - before_cmds.get("exec", 0))
        / max(batches, 1),
    }


def old_layout(ports: list[int], prefix: str) -> str:
    """Lay a cluster store out as tapad did before shard tags (16 shards, {hour.shard}
    keys), as a store created then is; a server adopts it as it is."""
    fields = ("shards", "16", "unique", "exact", "retention", "0")
    cli(ports[0], "-c", "HSET", f"{prefix}layout", *fields)
    return prefix


def round_ratios(ratios: list[float]) -> dict[str, object]:
    """Side-by-side ratios, one per round: their median, and each round's."""
    return {"median": statistics.median(ratios), "rounds": [round(r, 2) for r in ratios]}


def summarize(runs: list[dict[str, float]]) -> dict[str, object]:
    """Medians of each figure over the rounds, and every round's events/s."""
    out: dict[str, object] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["events_per_s_runs"] = [round(r["events_per_s"]) for r in runs]
    return out


def names(n: int, seed: int = 7) -> list[str]:
    """User names like the ones the seed fetched: 8 to 14 letters and digits."""
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + string.digits
    return ["".join(rng.choices(alphabet, k=rng.randint(8, 14))) for _ in range(n)]


def memory(port: int, users: int) -> dict[str, float]:
    """Bytes per unique user per (hour, shard) key: a set (exact) and a HyperLogLog (hll)."""
    from redis import Redis

    client = Redis(host=LOOPBACK, port=port)
    client.flushall()
    all_names = names(users)
    for start in range(0, users, 5000):
        chunk = all_names[start : start + 5000]
        client.sadd("set", *chunk)
        client.pfadd("hll", *chunk)
    set_bytes = client.memory_usage("set", samples=0)
    hll_bytes = client.memory_usage("hll", samples=0)
    assert set_bytes is not None and hll_bytes is not None, "MEMORY USAGE of a key just made"
    client.flushall()
    client.close()
    return {
        "users": users,
        "set_bytes": set_bytes,
        "set_bytes_per_user": set_bytes / users,
        "hll_bytes": hll_bytes,
    }


def client_cpu(url: str, batches: int = 1500) -> dict[str, float]:
    """tapad's own CPU per store call, in process (time.process_time, so hardly touched by
    other load on the machine): one 32-event batch written, one hour read."""
    import asyncio

    from tapad.store import Event, StoreOptions, open_store

    async def run() -> dict[str, float]:
        store = open_store(url, StoreOptions(timeout=5.0))
        await store.connect()
        hour = int(time.time()) // 3600
        rng = random.Random(1)
        work = [
            [Event(hour, f"u{rng.randrange(100_000)}", rng.random() < 0.1) for _ in range(32)]
            for _ in range(batches)
        ]
        await store.write(work[0])
        start = time.process_time()
        for batch in work:
            await store.write(batch)
        write = (time.process_time() - start) / batches
        start = time.process_time()
        for _ in range(batches):
            await store.read(hour)
        read = (time.process_time() - start) / batches
        await store.close()
        return {"write_us_per_batch": write * 1e6, "read_us": read * 1e6}

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side rounds")
    args = parser.parse_args()
    procs = Procs()
    results: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="tapad-scaling-") as tmp:
            work = Path(tmp)
            single = free_port()
            redis_server(procs, work / "single", single)
            ports = cluster(procs, work / "cluster")
            single_store = f"redis://{LOOPBACK}:{single}/0"
            cluster_store = "redis+cluster://" + ",".join(f"{LOOPBACK}:{p}" for p in ports)
            old = old_layout(ports, "old:")
            targets = {
                "redis": (single_store, [single]),
                CLUSTER: (cluster_store, ports),
                CLUSTER_16: (f"{cluster_store}?prefix={old}", ports),
            }
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (store, nodes) in targets.items():
                    runs[name].append(
                        measure_worker(procs, store, nodes, args.seconds, args.connections)
                    )
            for name in targets:
                results[name] = summarize(runs[name])
            for name in (CLUSTER, CLUSTER_16):
                pairs = list(zip(runs[name], runs["redis"], strict=True))
                results[f"{name} / redis, events/s"] = round_ratios(
                    [c["events_per_s"] / s["events_per_s"] for c, s in pairs]
                )
                # The same ratio from the worker's CPU per event (one Redis's over the
                # cluster's): the events/s one worker can reach where its core is the limit.
                results[f"{name} / redis, by tapad CPU per event"] = round_ratios(
                    [s["tapad_cpu_us_per_event"] / c["tapad_cpu_us_per_event"] for c, s in pairs]
                )
            results["redis hll"] = measure_worker(
                procs,
                f"{single_store}?prefix=hll:",
                [single],
                args.seconds,
                args.connections,
                "--unique",
                "hll",
            )
            results["client cpu, redis"] = client_cpu(f"{single_store}?prefix=cpu:")
            results["client cpu, cluster"] = client_cpu(f"{cluster_store}?prefix=cpu:")
            old = old_layout(ports, "cpuold:")
            results["client cpu, cluster 16 shards"] = client_cpu(f"{cluster_store}?prefix={old}")
            results["memory"] = memory(single, args.users)
    finally:
        procs.stop_all()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
