"""What the benchmark scripts share: where things are, free ports, the processes they start.

A library, not an entry point: bench/run.py, ab.py, cpu.py, profile.py, growth.py and
micro.py import it (each script puts bench/ on ``sys.path`` first, as they run as files).
``scratch`` is the folder-and-processes frame every measuring script runs in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LOOPBACK = "127.0.0.1"
MIX_LUA = BENCH / "wrk" / "mix.lua"


def find_tool(name: str) -> str | None:
    """``shutil.which``, also looking in the sbin folders a non-root PATH often lacks."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def redis_server_args(port: int, workdir: Path | str) -> list[str]:
    """A throwaway redis-server on loopback without persistence: what every bench measures on."""
    return [
        find_tool("redis-server") or "redis-server", "--port", str(port), "--bind", LOOPBACK,
        "--dir", str(workdir), "--save", "", "--appendonly", "no",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:.0f}s")


class Processes:
    """Every process the benchmark starts, each in its own session so it can be stopped
    with its children (tapad --workers forks), and nothing else."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(
        self, name: str, cmd: list[str], cpus: str | None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]  # taskset execs: the pid is the command's
        log = (self.logdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        self.procs.append((proc, log))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        # a worker the supervisor left behind is still in the session: end it too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc, log in reversed(self.procs):
            self.stop(proc)
            log.close()
        self.procs.clear()


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[tuple[Path, Processes]]:
    """A scratch folder and the processes started in it (their logs there), every one
    stopped and the folder removed at the end, however the measurement ends."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    procs = Processes(workdir)
    try:
        yield workdir, procs
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
