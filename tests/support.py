"""Real processes for tests: redis-server and tapad servers on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


class RedisServer:
    """A real redis-server in a temp folder; can be stopped, paused and restarted on its port."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        return self

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", LOOPBACK, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def flush(self) -> None:
        self.cli("FLUSHALL")

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class TapadServer:
    """``python -m tapad serve`` as a child process on a free port."""

    def __init__(
        self,
        store_url: str | None,
        *extra: str,
        port: int | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.store_url = store_url
        self.extra = extra
        self.port = port or free_port()
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = b""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, wait: bool = True) -> TapadServer:
        cmd = [sys.executable, "-m", "tapad", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        if self.store_url is not None:  # None: the default store, as a user gets it
            cmd += ["--store", self.store_url]
        cmd += self.extra
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if wait:
            wait_for_port(self.port, timeout=20, proc=self.proc)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=timeout)
        self.log += out or b""
        return self.proc.returncode

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait(5)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.wait(10)


def http(method: str, url: str, timeout: float = 10) -> tuple[int, dict[str, str], str]:
    """One plain HTTP request: status, headers, body text. Never raises on 4xx/5xx."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def parse_counts(body: str) -> dict[str, int]:
    lines = body.split("\n")
    assert lines[-1] == "" and len(lines) == 4, f"not three lines: {body!r}"
    return {name: int(value) for name, value in (line.split(",") for line in lines[:3])}
