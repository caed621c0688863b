"""``tapad serve --workers N`` with real processes: one port, supervision, drain, errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import LOOPBACK, TapadServer, free_port, http, parse_counts, wait_until

TS = 1_800_000_000_000  # any hour will do; one hour per test keeps the counts clear


def children(pid: int) -> set[int]:
    """The pids of a process's direct children, from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread may end meanwhile
            found.update(int(p) for p in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def listening_pids(port: int) -> set[int]:
    """Which processes hold a listening socket on ``port`` (SO_REUSEPORT: one per worker)."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    pids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def post(url: str, user: str, kind: str = "click") -> int:
    return http("POST", f"{url}/analytics?timestamp={TS}&user={user}&{kind}")[0]


@pytest.fixture
def workers3(redis_url: str) -> Iterator[TapadServer]:
    server = TapadServer(redis_url, "--workers", "3").start()
    assert server.proc is not None
    wait_until(lambda: len(listening_pids(server.port)) == 3)
    yield server
    server.stop()


def test_workers_share_one_port_and_announce_once(workers3: TapadServer) -> None:
    assert workers3.proc is not None
    parent = workers3.proc.pid
    workers = children(parent)
    assert len(workers) == 3
    # Every worker listens on the port itself; the supervisor does not.
    assert listening_pids(workers3.port) == workers

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: post(workers3.url, f"user{i % 50}"), range(300)))
    assert codes == [200] * 300
    status, _, body = http("GET", f"{workers3.url}/analytics?timestamp={TS}")
    assert status == 200
    assert parse_counts(body) == {"unique_users": 50, "clicks": 300, "impressions": 0}

    assert workers3.stop() == 0
    lines = workers3.log.decode().splitlines()
    announced = [line for line in lines if "tapad listening on" in line]
    assert announced == [
        f"tapad listening on http://{LOOPBACK}:{workers3.port} store {workers3.store_url} "
        "(unique users: exact) workers 3"
    ]


def test_a_dead_worker_is_replaced(workers3: TapadServer) -> None:
    assert workers3.proc is not None
    parent = workers3.proc.pid
    # /proc's children lists are read task by task, so a read can catch a worker mid-start
    # (or miss one, under load): look until three are there, then pick the victim
    wait_until(lambda: len(children(parent)) == 3)
    before = children(parent)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(parent)) == 3 and victim not in children(parent))
    after = children(parent)
    assert len(after - before) == 1
    wait_until(lambda: listening_pids(workers3.port) == after)
    codes = [post(workers3.url, f"after{i}") for i in range(30)]
    assert codes == [200] * 30
    assert workers3.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_drains_every_worker_and_loses_nothing(redis_url: str, sig: int) -> None:
    server = TapadServer(redis_url, "--workers", "2").start()
    assert server.proc is not None
    wait_until(lambda: len(listening_pids(server.port)) == 2)
    workers = children(server.proc.pid)
    acked = 0
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(n: int) -> None:
        nonlocal acked
        i = 0
        while not stop.is_set():
            try:
                code = post(server.url, f"t{n}-{i}")
            except OSError:
                code = 0
            if code == 200:
                with lock:
                    acked += 1
            i += 1

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: acked >= 20, what="POSTs acknowledged before the signal")
        server.signal(sig)
        assert server.wait(30) == 0
    finally:  # whatever happens, no thread and no server outlives the test
        stop.set()
        for t in threads:
            t.join(15)
        server.stop()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived the stop"
    assert acked > 0

    again = TapadServer(redis_url).start()
    try:
        _, _, body = http("GET", f"{again.url}/analytics?timestamp={TS}")
        counts = parse_counts(body)
    finally:
        again.stop()
    # Every acknowledged POST was committed; none was half-written or lost.
    assert counts["clicks"] == acked
    assert counts["unique_users"] == acked


def test_a_layout_mismatch_is_one_line_and_exit_2(redis_url: str) -> None:
    first = TapadServer(redis_url, "--shards", "4").start()
    first.stop()
    server = TapadServer(redis_url, "--workers", "2", "--shards", "8").start(wait=False)
    assert server.wait(30) == 2
    lines = server.log.decode().strip().splitlines()
    assert lines[-1].startswith("error: the store was set up with shards=4")
    assert not any("Traceback" in line for line in lines)
    assert sum(line.startswith("error:") for line in lines) == 1


def test_a_busy_port_is_one_line_and_exit_2(redis_url: str) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, port))
        taken.listen()
        server = TapadServer(redis_url, "--workers", "2", port=port).start(wait=False)
        assert server.wait(30) == 2
    lines = server.log.decode().strip().splitlines()
    assert lines[-1].startswith(f"error: cannot listen on {LOOPBACK}:{port}")
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("how", ["second signal", "shutdown timeout"])
def test_a_worker_that_does_not_stop_is_killed(redis_url: str, how: str) -> None:
    """A worker frozen (SIGSTOP) cannot drain: a second Ctrl-C, or --shutdown-timeout plus
    5 s, ends it with SIGKILL so the supervisor still exits."""
    # Waiting for the shutdown timeout would take 60 + 5 s with a second signal: it must
    # not come to that, so no clock is needed to tell the two ways apart.
    shutdown_timeout = "60" if how == "second signal" else "1"
    server = TapadServer(redis_url, "--workers", "2", "--shutdown-timeout", shutdown_timeout)
    server.start()
    assert server.proc is not None
    wait_until(lambda: len(listening_pids(server.port)) == 2)
    frozen, other = sorted(children(server.proc.pid))
    os.kill(frozen, signal.SIGSTOP)
    started = time.monotonic()
    try:
        server.signal(signal.SIGINT)
        if how == "second signal":
            wait_until(lambda: not Path(f"/proc/{other}").exists())  # the other one drained
            server.signal(signal.SIGINT)
            assert server.wait(45) == 0  # well before 60 + 5 s
        else:
            assert server.wait(60) == 0
            assert time.monotonic() - started >= 1 + 5  # it gave the frozen worker its time
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGKILL)
        server.stop()
    assert not Path(f"/proc/{frozen}").exists()
    assert "killing 1 workers that did not stop" in server.log.decode()


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapad",
            "serve",
            "--port",
            "0",
            "--workers",
            "2",
            "--store",
            f"sqlite:///{tmp_path}/t.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --workers needs a fixed --port: each worker binds the same port"
    )
    assert "Traceback" not in out.stderr


def test_workers_die_with_a_killed_supervisor(redis_url: str) -> None:
    server = TapadServer(redis_url, "--workers", "2").start()
    try:
        assert server.proc is not None
        wait_until(lambda: len(listening_pids(server.port)) == 2)
        workers = children(server.proc.pid)
        server.kill()  # SIGKILL: the supervisor cannot forward anything
        wait_until(lambda: not any(alive(pid) for pid in workers), 15)
    finally:
        server.stop()
