"""Real processes for tests: redis-server and tapad servers on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from tapad.server.config import ServeSettings
from tapad.server.run import assemble, store_for

LOOPBACK = "127.0.0.1"


T = TypeVar("T")

# How long a condition may take to hold before a test fails. Generous on purpose: a loaded 2-core
# CI machine is many times slower than a quiet one, and a test checks behaviour, not speed.
PATIENCE = 30.0


def wait_until(
    condition: Callable[[], T], timeout: float = PATIENCE, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    The one way tests wait for something to happen (instead of fixed sleeps). Fails with
    TimeoutError naming ``what`` (or the condition) and its last value after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(condition, "__name__", repr(condition))
            raise TimeoutError(f"not true after {timeout}s: {name} (last: {value!r})")
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], T], timeout: float = PATIENCE, interval: float = 0.005, what: str = ""
) -> T:
    """``wait_until`` inside an event loop: the loop runs while the condition is polled."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(condition, "__name__", repr(condition))
            raise TimeoutError(f"not true after {timeout}s: {name} (last: {value!r})")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    def accepting() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return True
        return False

    wait_until(accepting, timeout, what=f"something listening on {LOOPBACK}:{port}")


def listening_addresses(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp spells them) with a socket listening on
    ``port``: one per process when several share it with SO_REUSEPORT."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


class RedisServer:
    """A real redis-server in a temp folder; can be stopped, paused and restarted on its port."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

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
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = b""

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

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


# -- scale out: a real Redis Cluster and a real nginx ------------------------------------


def free_cluster_port() -> int:
    """A free port below 55536 whose cluster bus port (port + 10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind((LOOPBACK, candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterProcs:
    """Three real redis-server masters joined by ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                free_cluster_port(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes)

    def start(self) -> RedisClusterProcs:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"{LOOPBACK}:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok and knows every slot."""

        def ok() -> bool:
            infos = [n.cli("CLUSTER", "INFO") for n in self.nodes if n.proc is not None]
            return all(
                "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
                for info in infos
            )

        wait_until(ok, timeout, interval=0.1, what="the Redis Cluster reaching cluster_state:ok")

    def flush(self) -> None:
        for node in self.masters():
            node.cli("FLUSHALL")

    def masters(self) -> list[RedisServer]:
        return [
            n
            for n in self.nodes
            if n.proc is not None and "role:master" in n.cli("INFO", "replication")
        ]

    def keys_per_node(self, pattern: str) -> list[list[str]]:
        """The keys each master holds itself (KEYS is node-local on a cluster)."""
        return [[k for k in n.cli("--raw", "KEYS", pattern).splitlines() if k] for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


NGINX = "/usr/sbin/nginx"


def render_nginx_conf(conf: str, upstreams: list[str], listen: str, tmpdir: Path) -> str:
    """The project's deploy/nginx.conf made runnable here: the marked upstream servers
    replaced by ``upstreams``, ``listen`` on a loopback port, temp files in ``tmpdir``."""
    import re

    begin, end = "# tapad:upstream-servers begin", "# tapad:upstream-servers end"
    head, found_begin, rest = conf.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found_begin and found_end):
        raise ValueError("deploy/nginx.conf has no marked upstream-servers block")
    servers = "".join(f"\n        server {u};" for u in upstreams)
    conf = f"{head}{begin}{servers}\n        {end}{tail}"
    conf, listens = re.subn(r"^(\s*)listen\s+80;", rf"\1listen {listen};", conf, flags=re.M)
    if listens != 1:
        raise ValueError("deploy/nginx.conf must have exactly one 'listen 80;'")
    temps = "".join(
        f"\n    {kind}_temp_path {tmpdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf, https = re.subn(r"^http \{", "http {" + temps.replace("\\", "\\\\"), conf, flags=re.M)
    if https != 1:
        raise ValueError("deploy/nginx.conf must have one top-level 'http {' block")
    return conf


class Nginx:
    """A real nginx (OS package) in the foreground, with its prefix in a temp folder."""

    def __init__(self, workdir: Path, conf_text: str, upstreams: list[str]) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.workdir / "nginx.conf"
        self.conf.write_text(
            render_nginx_conf(conf_text, upstreams, f"{LOOPBACK}:{self.port}", self.workdir)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def args(self, *extra: str) -> list[str]:
        globals_ = (
            f"daemon off; pid {self.workdir / 'nginx.pid'}; "
            f"error_log {self.workdir / 'error.log'} notice;"
        )
        return [NGINX, "-p", str(self.workdir), "-c", str(self.conf), "-g", globals_, *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class _ServingTestServer(BaseTestServer):
    """aiohttp's test server (a free port on 127.0.0.1) serving an already built
    ``web.Server``: tapad's own BoundedServer, with its connection cap and timeouts,
    rather than the plain one ``RawTestServer`` would build around the handler."""

    def __init__(self, server: web.Server, shutdown_timeout: float) -> None:
        super().__init__(host=LOOPBACK)
        self._server = server
        self._shutdown_timeout = shutdown_timeout

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        # the runner `tapad serve` uses; kwargs are for the server this class does not build
        return web.ServerRunner(
            self._server, handle_signals=False, shutdown_timeout=self._shutdown_timeout
        )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop `tapad serve` runs on (tapad/eventloop.py): uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class InProcessTapad:
    """tapad's HTTP server (``run.assemble``) on a real store, in this process.

    For tests that only talk HTTP to tapad: no interpreter to start, so much faster than
    ``TapadServer``. The server runs on an event loop in a thread of its own, so a test
    stays synchronous and reaches it over real loopback TCP at ``url``, as it would a
    process. Anything about processes (signals, workers, SIGKILL, the CLI, its output)
    needs ``TapadServer``.
    """

    def __init__(self, store_url: str, **settings: Any) -> None:
        """``settings`` are ``ServeSettings`` fields, as ``tapad serve``'s options are."""
        self.store_url = store_url
        self.settings = ServeSettings(store_url=store_url, **settings)
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="in-process tapad")
        self._stop: Callable[[], Any] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        store = store_for(self.settings)
        await store.connect()
        server, handler = assemble(store, self.settings)
        http = _ServingTestServer(server, self.settings.shutdown_timeout)
        try:
            await http.start_server()
        except BaseException:
            await handler.committer.drain()
            await store.close()
            raise
        self.port = http.port or 0

        async def stop() -> None:
            # the order `tapad serve` stops in: answer what is in flight, commit, close
            handler.closing = True
            try:
                await http.close()
                await handler.committer.drain()
            finally:
                await store.close()

        self._stop = stop

    def start(self) -> InProcessTapad:
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            raise
        return self

    def stop(self) -> None:
        """Stop as ``tapad serve`` does; an error while stopping fails the test."""
        try:
            if self._stop is not None:
                self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()


def store_url_of(kind: str, request: Any, tmp_path_factory: Any) -> str:
    """A fresh store of ``kind`` ("sqlite", "redis" or "cluster") for a module-scoped server:
    a new SQLite file, or the session's Redis or Redis Cluster, emptied."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/tapad.db"
    store: RedisServer | RedisClusterProcs = request.getfixturevalue(
        "redis_server" if kind == "redis" else "redis_cluster"
    )
    store.flush()
    return store.url
