#!/usr/bin/env python3
"""tapad's benchmark: every server side by side, in one run, as ratios to a yardstick.

    python bench/run.py                 # the full run (10 minutes, then growth and scaling)
    python bench/run.py --quick         # a smoke run for CI (a minute or two)

After the main table it runs bench/growth.py (the hour filled to 10 thousand, 1
million and 10 million users; ``--growth-sizes``) and bench/scaling.py (one worker on
a 3-master cluster against one Redis), and checks every target (docs/performance.md) in one
list: ``--no-growth`` and ``--no-scaling`` leave them out.

Absolute requests per second depend on the machine and on whatever else runs on
it, so every figure is also given as a ratio to the yardstick (bench/yardstick.py,
a bare aiohttp server that parses the query and answers a fixed body), measured in
the same run. Targets are measured in turns, the order rotating every repeat, and
the medians are reported, so a noisy neighbour hurts every target alike.

It installs nothing: it says which tool is missing (wrk, redis-server, nginx) and
how to get it. It starts everything it measures on 127.0.0.1, bounds every
process in time and stops every process it started, also on Ctrl-C.

CPU pinning (taskset, when the machine has at least 2 cores): the server under
test gets core 0 to itself, one process each (nginx and the yardstick as well);
wrk, tapad loadgen and redis-server share core 1. Redis stands where it would run in
production, beside rather than inside the server's core, and the server-side
cost compared is the server's own. ``--workers 2`` gets every core, so it
competes with wrk and redis: on a 2-core machine that is all there is.

It writes results.md, results.json and results.png (when matplotlib is
installed: pip install -e '.[bench]') into bench/results/<date-time>/ and prints
where.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    LOOPBACK,
    MIX_LUA,
    ROOT,
    Processes,
    find_tool,
    free_port,
    redis_server_args,
    wait_for_port,
)  # fmt: skip

NGINX_CONF = BENCH / "nginx.conf"

HINTS = {
    "wrk": "apt-get install -y wrk",
    "redis-server": "apt-get install -y redis-server",
    "nginx": "apt-get install -y nginx-light",
    "taskset": "apt-get install -y util-linux",
}

METHODS = ("POST", "GET")

# The targets (docs/performance.md), in the benchmark, never in timed tests.
GOALS = {
    # (target, method): minimum req/s as a ratio to the yardstick
    ("tapad-redis", "POST"): 0.90,
    ("tapad-redis", "GET"): 0.95,
    ("tapad-sqlite", "POST"): 0.65,
    ("tapad-sqlite", "GET"): 0.95,
}
GOAL_P99_MS = 3.0  # every tapad target, at 32 connections, with zero errors
GOAL_GROWTH = 0.90  # POST rate with the hour full (bench/growth.py) / on an empty hour
GOAL_CLUSTER = 0.80  # one worker's events/s on a 3-master cluster / on one Redis
GOAL_CLUSTER_COMMANDS = 22.0  # Redis commands per batch on the cluster: half of 44
GOAL_LOADGEN = 0.40  # of wrk's POST rate against the yardstick
GOAL_RSS_MB = 150.0  # one worker after 1,000,000 POSTs
DASHBOARDS = 4  # clients of bench/dashboard_poll.py for the *-dashboard targets
DASHBOARD_POLL = BENCH / "dashboard_poll.py"


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    kind: str  # nginx | yardstick | tapad
    store: str = ""  # tapad: redis | sqlite | sqlite-normal
    workers: int = 1
    short: str = ""  # label in the chart
    dashboards: int = 0  # clients polling as open dashboards do while it is measured

    @property
    def tools(self) -> tuple[str, ...]:
        if self.kind == "nginx":
            return ("nginx",)
        if self.store == "redis":
            return ("redis-server",)
        return ()


TARGETS = (
    Target("nginx", "nginx, fixed body (ceiling)", "nginx", short="nginx\n(ceiling)"),
    Target("yardstick", "bare aiohttp (yardstick)", "yardstick", short="yardstick\n(bare aiohttp)"),
    Target("tapad-redis", "tapad on Redis", "tapad", "redis", short="tapad\nRedis"),
    Target("tapad-sqlite", "tapad on SQLite", "tapad", "sqlite", short="tapad\nSQLite"),
    Target(
        "tapad-sqlite-normal",
        "tapad on SQLite, synchronous=normal",
        "tapad",
        "sqlite-normal",
        short="tapad SQLite\nsync=normal",
    ),
    # The same servers with dashboards open (bench/dashboard_poll.py beside wrk): the ratio
    # to the yardstick must not move by more than the noise.
    Target(
        "tapad-redis-dashboard",
        f"tapad on Redis, {DASHBOARDS} dashboards polling",
        "tapad",
        "redis",
        short="tapad Redis\n+ dashboards",
        dashboards=DASHBOARDS,
    ),
    Target(
        "tapad-sqlite-dashboard",
        f"tapad on SQLite, {DASHBOARDS} dashboards polling",
        "tapad",
        "sqlite",
        short="tapad SQLite\n+ dashboards",
        dashboards=DASHBOARDS,
    ),
    Target(
        "tapad-redis-w2",
        "tapad on Redis, --workers 2",
        "tapad",
        "redis",
        workers=2,
        short="tapad Redis\n--workers 2",
    ),
)


@dataclass
class Run:
    """One wrk run against one target."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers + socket errors (connect, read, write, timeout)


@dataclass
class Row:
    target: str
    label: str
    method: str
    runs: list[Run] = field(default_factory=list)
    skipped: str = ""

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(run, attr) for run in self.runs))

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def requests(self) -> int:
        return sum(run.requests for run in self.runs)


# ---- tools and processes -------------------------------------------------------------


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def http(method: str, url: str) -> int:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---- wrk -----------------------------------------------------------------------------


def run_wrk(url: str, method: str, seconds: int, args: argparse.Namespace, cpus: str | None) -> Run:
    cmd = [
        find_tool("wrk") or "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "2s",
        "-s",
        str(MIX_LUA),
        url,
        "--",
        method.lower(),
    ]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            break
    else:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-300:]} {out.stderr[-300:]}")
    secs = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Run(
        requests=data["requests"],
        seconds=round(secs, 3),
        rps=round(data["requests"] / secs, 1),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
    )


# ---- the benchmark -------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, outdir: Path) -> None:
        self.args = args
        self.outdir = outdir
        self.datadir = outdir / "data"
        self.logdir = outdir / "logs"
        self.datadir.mkdir(parents=True)
        self.logdir.mkdir()
        self.procs = Processes(self.logdir)
        pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and find_tool("taskset")
        self.server_cpus = "0" if pin else None
        self.client_cpus = "1" if pin else None
        self.all_cpus = f"0-{(os.cpu_count() or 1) - 1}" if pin else None
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.redis_port = 0
        self.notes: list[str] = []
        self.polls: dict[str, list[str]] = {}  # the pollers' last lines, per dashboard target

    def say(self, text: str) -> None:
        print(text, flush=True)

    # -- starting targets --

    def start_redis(self) -> None:
        self.redis_port = free_port()
        proc = self.procs.start(
            "redis",
            [*redis_server_args(self.redis_port, self.datadir), "--databases", "16"],
            self.client_cpus,
        )
        wait_for_port(self.redis_port, proc)

    def store_url(self, target: Target, db: int) -> str:
        if target.store == "redis":
            return f"redis://{LOOPBACK}:{self.redis_port}/{db}"
        path = self.datadir / f"{target.name}.db"
        suffix = "?synchronous=normal" if target.store == "sqlite-normal" else ""
        return f"sqlite:///{path}{suffix}"

    def start_tapad(
        self, name: str, target: Target, db: int
    ) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        cmd = [sys.executable, "-m", "tapad", "serve", "--host", LOOPBACK, "--port", str(port)]
        cmd += ["--store", self.store_url(target, db)]
        if target.workers > 1:
            cmd += ["--workers", str(target.workers)]
        cpus = self.all_cpus if target.workers > 1 else self.server_cpus
        proc = self.procs.start(name, cmd, cpus, cwd=self.datadir)
        wait_for_port(port, proc)
        # --workers: the startup line comes once every worker listens
        deadline = time.monotonic() + 20
        while "listening on" not in log_tail(self.logdir / f"{name}.log", 50):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(log_tail(self.logdir / f"{name}.log") or "no startup line")
            time.sleep(0.05)
        return f"http://{LOOPBACK}:{port}", proc

    def start_target(self, target: Target, db: int) -> None:
        if target.kind == "nginx":
            port = free_port()
            prefix = self.datadir / "nginx"
            prefix.mkdir()
            conf = NGINX_CONF.read_text().replace("{prefix}", str(prefix))
            conf = conf.replace("{port}", str(port))
            (prefix / "nginx.conf").write_text(conf)
            cmd = [find_tool("nginx") or "nginx", "-p", str(prefix), "-e", str(prefix / "err.log")]
            cmd += ["-c", str(prefix / "nginx.conf")]
            proc = self.procs.start("nginx", cmd, self.server_cpus)
            wait_for_port(port, proc)
            url = f"http://{LOOPBACK}:{port}"
        elif target.kind == "yardstick":
            port = free_port()
            cmd = [sys.executable, str(BENCH / "yardstick.py"), "--port", str(port)]
            proc = self.procs.start("yardstick", cmd, self.server_cpus)
            wait_for_port(port, proc)
            url = f"http://{LOOPBACK}:{port}"
        else:
            url, proc = self.start_tapad(target.name, target, db)
        now = int(time.time() * 1000)
        for method, query in (("POST", "&user=bench&click"), ("GET", "")):
            status = http(method, f"{url}/analytics?timestamp={now}{query}")
            if status != 200:
                raise RuntimeError(f"{method} answered {status}, not 200")
        self.urls[target.name] = url
        self.pids[target.name] = proc.pid

    @contextlib.contextmanager
    def dashboards_open(self, target: Target) -> Iterator[None]:
        """For a ``*-dashboard`` target: its pollers run exactly while it is measured, on
        the clients' core, so no other target's server shares core 0 with them."""
        if not target.dashboards:
            yield
            return
        name = f"{target.name}-polls"
        cmd = [sys.executable, str(DASHBOARD_POLL), "--url", self.urls[target.name]]
        cmd += ["--clients", str(target.dashboards)]
        proc = self.procs.start(name, cmd, self.client_cpus)
        try:
            yield
        finally:
            self.procs.stop(proc)
            line = log_tail(self.logdir / f"{name}.log", 1)
            if line.startswith("dashboard polls:"):
                self.polls.setdefault(target.name, []).append(line)

    # -- measuring --

    def measure(self, targets: list[Target]) -> list[Row]:
        args = self.args
        rows = {(t.name, m): Row(t.name, t.label, m) for t in targets for m in METHODS}
        live = [t for t in targets if t.name in self.urls]
        if args.warmup:
            self.say(f"warming up: {args.warmup}s of POSTs then GETs each")
            for method in METHODS:
                for target in live:
                    with self.dashboards_open(target):
                        run_wrk(self.urls[target.name], method, args.warmup, args, self.client_cpus)
        for repeat in range(args.repeats):
            order = live[repeat % len(live) :] + live[: repeat % len(live)]
            for method in METHODS:
                for target in order:
                    with self.dashboards_open(target):
                        run = run_wrk(
                            self.urls[target.name], method, args.duration, args, self.client_cpus
                        )
                    rows[(target.name, method)].runs.append(run)
                    self.say(
                        f"  [{repeat + 1}/{args.repeats}] {method:4} {target.name:20} "
                        f"{run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}"
                    )
        return list(rows.values())

    def measure_loadgen(self, yard_url: str) -> dict[str, Any]:
        """``tapad loadgen post`` against the yardstick, timed from outside."""
        args = self.args
        help_run = subprocess.run(
            [sys.executable, "-m", "tapad", "loadgen", "post", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if help_run.returncode != 0:
            return {"skipped": "tapad loadgen post is not available in this checkout"}
        runs = []
        for i in range(args.repeats):
            cmd = [sys.executable, "-m", "tapad", "loadgen", "post", "--url", yard_url]
            cmd += ["-n", str(args.loadgen_n), "-c", str(args.connections), "--json"]
            if self.client_cpus is not None:
                cmd = ["taskset", "-c", self.client_cpus, *cmd]
            started = time.monotonic()
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=self.datadir)
            wall = time.monotonic() - started
            log = self.logdir / f"loadgen-{i}.log"
            log.write_text(out.stdout + out.stderr)
            if out.returncode != 0:
                return {"skipped": f"tapad loadgen post failed: {log_tail(log)}"}
            rate = parse_rate(out.stdout)
            runs.append(
                {"wall_s": round(wall, 2), "reported_rps": rate, "wall_rps": args.loadgen_n / wall}
            )
            self.say(
                f"  loadgen post -n {args.loadgen_n:,}: {wall:.2f} s wall (with start-up), "
                f"{rate if rate is not None else '-'} req/s by its own count"
            )
        reported = [r["reported_rps"] for r in runs if r["reported_rps"] is not None]
        rps = statistics.median(reported) if len(reported) == len(runs) else None
        return {
            "runs": runs,
            "rps": rps if rps is not None else statistics.median(r["wall_rps"] for r in runs),
            "source": "its own report" if rps is not None else "requests / wall time",
        }

    def measure_memory(self) -> dict[str, Any]:
        """One worker's resident memory while 1,000,000 POSTs go through it (Redis store)."""
        args = self.args
        target = Target("memory", "memory", "tapad", "redis")
        url, proc = self.start_tapad("tapad-memory", target, db=3)
        before = rss_mb(proc.pid)
        samples = [(0, round(before, 1))]
        total = 0
        chunk = 2 if args.quick else 10
        self.say(f"memory: POSTing {args.memory_posts:,} events through one worker")
        while total < args.memory_posts:
            run = run_wrk(url, "POST", chunk, args, self.client_cpus)
            total += run.requests
            samples.append((total, round(rss_mb(proc.pid), 1)))
            self.say(f"  {total:>10,} POSTs  rss {samples[-1][1]:.1f} MB  errors {run.errors}")
        self.procs.stop(proc)
        return {
            "posts": total,
            "rss_before_mb": samples[0][1],
            "rss_after_mb": samples[-1][1],
            "samples": samples,
        }


def parse_rate(stdout: str) -> float | None:
    """The throughput ``tapad loadgen post --json`` reports (requests / its own elapsed time)."""
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        return float(json.loads(stdout[start:])["throughput"])
    except (ValueError, KeyError, TypeError):
        return None


# ---- reporting -----------------------------------------------------------------------


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("tapad", "aiohttp", "uvloop", "redis", "hiredis", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    for tool, cmd in (
        ("wrk", ["wrk", "--version"]),
        ("nginx", ["nginx", "-v"]),
        ("redis-server", ["redis-server", "--version"]),
    ):
        path = find_tool(tool)
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([path, *cmd[1:]], capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()[0]
            match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
            found[tool] = match.group(1) if match else text[:40]
    return found


def machine() -> dict[str, str]:
    info = {"cores": str(os.cpu_count()), "kernel": platform.release()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError):
        info["load before"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return info


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    rows: list[Row] = report["rows"]
    yard = {r.method: r for r in rows if r.target == "yardstick" and r.runs}
    out = [
        f"# tapad benchmark, {report['date']}",
        "",
        f"Command: `{report['command']}`  ",
        f"{report['args']['repeats']} repeat(s) x {report['args']['duration']} s per target and "
        f"method, {report['args']['connections']} connections, {report['args']['threads']} wrk "
        "thread(s), 95% current hour / 5% past 24 hours, order rotating every repeat; medians. "
        "Errors: non-2xx answers plus socket errors, summed over all runs.  ",
        f"Pinning: {report['pinning']}",
        "",
        "| target | method | req/s | x yardstick | p50 ms | x yardstick | p99 ms | x yardstick "
        "| errors / requests |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if not row.runs:
            out.append(
                f"| {row.label} | {row.method} | {row.skipped or 'not measured'} | | | | | | |"
            )
            continue
        base = yard.get(row.method)
        rps, p50, p99 = row.median("rps"), row.median("p50_ms"), row.median("p99_ms")
        r_rps = rps / base.median("rps") if base else None
        r_p50 = p50 / base.median("p50_ms") if base else None
        r_p99 = p99 / base.median("p99_ms") if base else None
        out.append(
            f"| {row.label} | {row.method} | {rps:,.0f} | {fmt_ratio(r_rps)} | {p50:.2f} | "
            f"{fmt_ratio(r_p50)} | {p99:.2f} | {fmt_ratio(r_p99)} | "
            f"{row.errors:,} / {row.requests:,} |"
        )
    out += ["", "## Targets", ""]
    out += [f"- {line}" for line in report["goals"]]
    out += ["", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in report["machine"].items()]
    out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    if report.get("growth", {}).get("table"):
        out += ["", "## As the hour fills (bench/growth.py)", "", report["growth"]["table"]]
    if report["notes"]:
        out += ["", "## Notes", ""]
        out += [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


def check_goals(rows: list[Row], loadgen: dict[str, Any], memory: dict[str, Any]) -> list[str]:
    by = {(r.target, r.method): r for r in rows if r.runs}
    lines = []

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    for (target, method), goal in GOALS.items():
        row, base = by.get((target, method)), by.get(("yardstick", method))
        if row is None or base is None:
            lines.append(f"{target} {method} >= {goal:.2f} x yardstick: not measured")
            continue
        ratio = row.median("rps") / base.median("rps")
        lines.append(
            f"{target} {method} req/s >= {goal:.2f} x yardstick: {ratio:.2f}, {mark(ratio >= goal)}"
        )
    for (target, method), row in by.items():
        if target.startswith("tapad"):
            p99 = row.median("p99_ms")
            lines.append(
                f"{target} {method} p99 <= {GOAL_P99_MS:.0f} ms, zero errors: {p99:.2f} ms, "
                f"{row.errors} errors, {mark(p99 <= GOAL_P99_MS and row.errors == 0)}"
            )
    base = by.get(("yardstick", "POST"))
    if "rps" in loadgen and base is not None:
        ratio = loadgen["rps"] / base.median("rps")
        lines.append(
            f"tapad loadgen post >= {GOAL_LOADGEN:.2f} x wrk against the yardstick: "
            f"{loadgen['rps']:,.0f} req/s ({loadgen['source']}) = {ratio:.2f}, "
            f"{mark(ratio >= GOAL_LOADGEN)}"
        )
    else:
        lines.append(f"tapad loadgen post: {loadgen.get('skipped', 'not measured')}")
    if "rss_after_mb" in memory:
        ok = memory["rss_after_mb"] < GOAL_RSS_MB
        lines.append(
            f"one worker's RSS after {memory['posts']:,} POSTs < {GOAL_RSS_MB:.0f} MB: "
            f"{memory['rss_after_mb']:.1f} MB (at start {memory['rss_before_mb']:.1f} MB)"
            + ("" if memory["posts"] >= 1_000_000 else " [fewer than 1,000,000 POSTs]")
            + f", {mark(ok)}"
        )
    else:
        lines.append(f"one worker's RSS: {memory.get('skipped', 'not measured')}")
    return lines


def growth_goals(growth: dict[str, Any]) -> list[str]:
    """POST rate with the hour at its fullest / on an empty hour (bench/growth.py)."""
    if "steps" not in growth:
        return [f"growth: {growth.get('skipped', 'not measured')}"]
    lines = []
    for store in dict.fromkeys(s["store"] for s in growth["steps"]):
        step = [s for s in growth["steps"] if s["store"] == store][-1]
        lines.append(
            f"{store} POST with {step['users']:,} users in the hour >= {GOAL_GROWTH:.2f} x an "
            f"empty hour: {step['post_ratio']:.2f} ({step['bytes_per_user']:.1f} bytes per "
            f"user), {'met' if step['post_ratio'] >= GOAL_GROWTH else 'MISSED'}"
        )
    return lines


def scaling_goals(scaling: dict[str, Any]) -> list[str]:
    """One worker on a 3-master cluster vs on one Redis, and commands per batch."""
    name = "cluster (3 masters, 3 shards)"  # a new store's layout (bench/scaling.py)
    single, cluster = scaling.get("redis"), scaling.get(name)
    if not single or not cluster:
        return [f"cluster vs one Redis: {scaling.get('skipped', 'not measured')}"]
    ratio = scaling[f"{name} / redis, events/s"]["median"]  # round by round, side by side
    commands = cluster["commands_per_batch"]
    return [
        f"one worker on a 3-master cluster >= {GOAL_CLUSTER:.2f} x on one Redis: {ratio:.2f}, "
        f"{'met' if ratio >= GOAL_CLUSTER else 'MISSED'}",
        f"Redis commands per batch on the cluster <= {GOAL_CLUSTER_COMMANDS:.0f}: "
        f"{commands:.1f}, {'met' if commands <= GOAL_CLUSTER_COMMANDS else 'MISSED'}",
    ]


def run_script(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run a bench script (bench/growth.py, bench/scaling.py) in its own session."""
    try:
        out = subprocess.run(
            [sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return 1, f"took longer than {timeout:.0f}s"
    return out.returncode, out.stdout + out.stderr


def measure_growth(args: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    folder = outdir / "growth"
    cmd = [str(BENCH / "growth.py"), "--out", str(folder), "--sizes", args.growth_sizes]
    cmd += ["--rounds", str(args.repeats), "--seconds", str(max(1, args.duration // 2))]
    code, out = run_script(cmd, timeout=4 * 3600)
    data = folder / "growth.json"
    if code != 0 or not data.exists():
        return {"skipped": f"bench/growth.py failed: {out.strip().splitlines()[-1:]}"}
    steps = []
    for step in json.loads(data.read_text()):
        med = {
            (role, method): statistics.median(m["rps"] for m in step["runs"][role][method])
            for role in ("reference", "filled")
            for method in METHODS
        }
        users = step["users"]
        steps.append(
            {
                "store": step["store"],
                "users": users,
                "post_ratio": med["filled", "POST"] / med["reference", "POST"],
                "get_ratio": med["filled", "GET"] / med["reference", "GET"],
                "bytes_per_user": step["hour_bytes"] / users if users else 0.0,
            }
        )
    return {"steps": steps, "table": (folder / "growth.md").read_text(), "folder": str(folder)}


def measure_scaling(args: argparse.Namespace) -> dict[str, Any]:
    seconds = str(max(1, args.duration))
    users = "10000" if args.quick else "1000000"
    rounds = "1" if args.quick else "3"
    code, out = run_script(
        [str(BENCH / "scaling.py"), "--seconds", seconds, "--users", users, "--rounds", rounds],
        timeout=1800,
    )
    start = out.find("\n{")
    if code != 0 or (start < 0 and not out.startswith("{")):
        return {"skipped": f"bench/scaling.py failed: {out.strip().splitlines()[-1:]}"}
    found: dict[str, Any] = json.loads(out[max(start, 0) :].strip())
    return found


def render_chart(rows: list[Row], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    yard = {r.method: r for r in rows if r.target == "yardstick" and r.runs}
    names = []
    for row in rows:
        if row.runs and row.target not in names:
            names.append(row.target)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    width = 0.38
    top = 1.3  # nginx is far above: clip it and write its value on the bar
    for i, method in enumerate(METHODS):
        ratios, p99s = [], []
        for name in names:
            got = next((r for r in rows if r.target == name and r.method == method), None)
            if got is not None and got.runs and method in yard:
                ratios.append(got.median("rps") / yard[method].median("rps"))
                p99s.append(got.median("p99_ms"))
            else:
                ratios.append(0)
                p99s.append(0)
        xs = [x + (i - 0.5) * width for x in range(len(names))]
        bars = left.bar(xs, [min(r, top) for r in ratios], width, label=method)
        left.bar_label(bars, labels=[f"{r:.2f}" for r in ratios], fontsize=7, padding=1)
        bars = right.bar(xs, p99s, width, label=method)
        right.bar_label(bars, labels=[f"{p:.1f}" for p in p99s], fontsize=7, padding=1)
    left.set_ylim(0, top + 0.15)
    left.axhline(1.0, color="grey", lw=0.8)
    left.axhline(0.95, color="green", ls="--", lw=0.8, label="goal 0.95 (GET)")
    left.axhline(0.9, color="blue", ls="--", lw=0.8, label="goal 0.90 (Redis POST)")
    left.axhline(0.65, color="orange", ls="--", lw=0.8, label="goal 0.65 (SQLite POST)")
    left.set_ylabel("requests/s, ratio to the yardstick (median; nginx clipped)")
    right.axhline(GOAL_P99_MS, color="green", ls="--", lw=0.8, label="goal 3 ms")
    right.set_ylabel("p99 latency, ms (median)")
    short = {t.name: t.short for t in TARGETS}
    for ax in (left, right):
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([short.get(n, n) for n in names], fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("tapad vs a bare aiohttp yardstick and nginx, 32 connections, 95/5 mix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ---- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark tapad side by side with a bare aiohttp yardstick and nginx.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repeat of 1 s per target, 20,000 POSTs for memory",
    )
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 10)")
    parser.add_argument("--repeats", type=int, help="runs per target and method (default 3)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per target (default 2)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--targets", help="comma-separated subset of: " + ", ".join(t.name for t in TARGETS)
    )
    parser.add_argument(
        "--memory-posts", type=int, help="POSTs before reading one worker's RSS (default 1,000,000)"
    )
    parser.add_argument("--loadgen-n", type=int, help="POSTs per loadgen run (default 100,000)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--no-loadgen", action="store_true", help="skip tapad loadgen")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--no-growth", action="store_true", help="skip bench/growth.py")
    parser.add_argument("--no-scaling", action="store_true", help="skip bench/scaling.py")
    parser.add_argument(
        "--growth-sizes", help="users in the hour for bench/growth.py (default 10k, 1M, 10M)"
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="measure without the targets whose tool is missing, saying so, instead of stopping",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH / "results",
        help="folder for the results (default bench/results)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "duration": 1 if quick else 10,
        "repeats": 1 if quick else 3,
        "warmup": 0 if quick else 2,
        "memory_posts": 20_000 if quick else 1_000_000,
        "loadgen_n": 3_000 if quick else 100_000,
        "growth_sizes": "20000" if quick else "10000,1000000,10000000",
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets = list(TARGETS)
    if args.targets:
        wanted = {name.strip() for name in args.targets.split(",")}
        unknown = wanted - {t.name for t in TARGETS}
        if unknown:
            print(f"error: unknown target(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        targets = [t for t in TARGETS if t.name in wanted or t.name == "yardstick"]
    needed = {"wrk"} | {tool for t in targets for tool in t.tools}
    missing = sorted(tool for tool in needed if find_tool(tool) is None)
    if "wrk" in missing or (missing and not args.skip_missing):
        for tool in missing:
            print(f"missing: {tool} (install it with: {HINTS[tool]})", file=sys.stderr)
        if "wrk" not in missing:
            print(
                "or pass --skip-missing to measure without the targets that need them",
                file=sys.stderr,
            )
        return 2

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    outdir = args.out / stamp
    bench = Bench(args, outdir)
    skipped: dict[str, str] = {}
    for target in targets:
        lacking = [tool for tool in target.tools if tool in missing]
        if lacking:
            skipped[target.name] = f"skipped: {', '.join(lacking)} not installed"
            bench.notes.append(f"{target.label}: {skipped[target.name]} ({HINTS[lacking[0]]})")
            print(f"SKIPPING {target.name}: {', '.join(lacking)} not installed", flush=True)
    pinning = (
        f"server under test on core {bench.server_cpus}, wrk / loadgen / redis-server on core "
        f"{bench.client_cpus}, --workers 2 on cores {bench.all_cpus} (taskset)"
        if bench.server_cpus is not None
        else "none (--no-pin, a single core, or no taskset)"
    )
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pinning": pinning,
        "machine": machine(),
        "versions": versions(),
        "notes": bench.notes,
    }
    print(f"benchmark: {len(targets)} targets, results in {outdir}", flush=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    loadgen: dict[str, Any] = {"skipped": "--no-loadgen"} if args.no_loadgen else {}
    memory: dict[str, Any] = {"skipped": "--no-memory"} if args.no_memory else {}
    try:
        if any(t.store == "redis" for t in targets if t.name not in skipped) or (
            not args.no_memory and find_tool("redis-server")
        ):
            bench.start_redis()
        for db, target in enumerate(targets):
            if target.name in skipped:
                continue
            try:
                bench.start_target(target, db)
            except RuntimeError as exc:
                skipped[target.name] = f"could not start: {exc}"[:200]
                bench.notes.append(f"{target.label}: {skipped[target.name]}")
                print(f"NOT MEASURED {target.name}: {exc}", flush=True)
        if "yardstick" not in bench.urls:
            print("error: the yardstick did not start; nothing to compare with", file=sys.stderr)
            return 1
        rows = bench.measure(targets)
        for name, lines in bench.polls.items():
            bench.notes.append(f"{name}, last run: {lines[-1]} ({len(lines)} runs)")
        for row in rows:
            row.skipped = skipped.get(row.target, "")
        if not args.no_loadgen:
            loadgen = bench.measure_loadgen(bench.urls["yardstick"])
        if not args.no_memory:
            if bench.redis_port:
                try:
                    memory = bench.measure_memory()
                except RuntimeError as exc:
                    memory = {"skipped": f"could not start: {exc}"[:200]}
            else:
                memory = {"skipped": "redis-server not installed"}
    finally:
        bench.procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(bench.datadir, ignore_errors=True)
    # after the main table, one at a time: each starts and stops its own servers
    growth = {"skipped": "--no-growth"} if args.no_growth else {}
    if not args.no_growth:
        print("bench/growth.py ...", flush=True)
        growth = measure_growth(args, outdir)
    scaling = {"skipped": "--no-scaling"} if args.no_scaling else {}
    if not args.no_scaling:
        print("bench/scaling.py ...", flush=True)
        scaling = measure_scaling(args)

    report["rows"] = rows
    report["urls"] = bench.urls
    report["loadgen"] = loadgen
    report["memory"] = memory
    report["goals"] = check_goals(rows, loadgen, memory)
    report["goals"] += growth_goals(growth) + scaling_goals(scaling)
    report["growth"] = growth
    report["scaling"] = scaling
    chart = outdir / "results.png"
    problem = render_chart(rows, chart)
    if problem:
        bench.notes.append(problem)
    md = outdir / "results.md"
    md.write_text(render_markdown(report))
    data = {**report, "rows": [asdict(r) for r in rows]}
    (outdir / "results.json").write_text(json.dumps(data, indent=2, default=str))
    print()
    print(md.read_text())
    print(f"table: {md}")
    print(f"chart: {chart}" if problem is None else f"chart: none ({problem})")
    print(f"data:  {outdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
