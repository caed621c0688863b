"""``tapad serve``: one server process (``serve``), or with ``--workers N`` one supervisor
and N worker processes on one port.

Python runs one event loop per process on one core, so a host with several cores
runs several workers. Each worker is a forked process with its own event loop and
its own store connections, listening on the same port with SO_REUSEPORT: the
kernel spreads new connections over them, no balancer process sits in between.
All state lives in the store, so workers share nothing and any of them can answer
any request.

The supervisor (the parent) starts the workers, prints the one startup line once
all of them listen, restarts a worker that dies, forwards SIGTERM/SIGINT to all of
them and exits once every worker has drained. Workers report "ready" or their one
line of startup error through a pipe, so a bad store URL or a layout mismatch
still ends in one clear line and a non-zero exit, not N garbled ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field, replace

from tapad.eventloop import install_uvloop
from tapad.server import metrics_folder
from tapad.server.config import ServeSettings, StartupError
from tapad.server.run import run_server
from tapad.store import StoreConfigError

log = logging.getLogger("tapad.workers")

POLL_SECONDS = 0.1
RESTART_BACKOFF_MAX = 5.0  # seconds between restarts of a worker that keeps dying at once
STABLE_AFTER = 10.0  # a worker that lived this long resets its backoff


@dataclass
class Worker:
    slot: int
    pid: int
    pipe: int  # read end: "R <startup line>" or "E <error line>"
    started: float
    ready: bool = False
    error: str = ""
    buffer: bytes = b""
    line: str = ""


@dataclass
class Supervisor:
    settings: ServeSettings
    workers: dict[int, Worker] = field(default_factory=dict)  # by pid
    restart_at: dict[int, float] = field(default_factory=dict)  # slot -> monotonic time
    backoff: dict[int, float] = field(default_factory=dict)  # slot -> seconds
    stopping: bool = False
    running: bool = False  # all workers reported ready once
    stop_signal: int = 0
    signals: int = 0  # stop signals received: a second one (Ctrl-C twice) kills at once
    kill_at: float = 0.0  # monotonic time after which workers still draining are killed

    # ---- starting and stopping workers -------------------------------------------------

    def spawn(self, slot: int) -> None:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_end)
            for worker in self.workers.values():
                with contextlib.suppress(OSError):
                    os.close(worker.pipe)
            code = run_worker(self.settings, write_end, parent)
            os._exit(code)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.workers[pid] = Worker(slot, pid, read_end, time.monotonic())

    def signal_all(self, sig: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def request_stop(self, sig: int, _frame: object = None) -> None:
        self.stop_signal = sig
        self.signals += 1

    # ---- the supervising loop ----------------------------------------------------------

    def run(self) -> None:
        """Supervise until every worker has exited after a stop; raise StartupError if one
        cannot start."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        for slot in range(self.settings.workers):
            self.spawn(slot)
        while True:
            if self.stop_signal and not self.stopping:
                self.stopping = True
                self.restart_at.clear()
                log.info("stopping %d workers", len(self.workers))
                self.signal_all(signal.SIGTERM)
                # Each worker bounds its own drain by --shutdown-timeout; this is the backstop.
                self.kill_at = time.monotonic() + self.settings.shutdown_timeout + 5
            overdue = self.signals >= 2 or time.monotonic() > self.kill_at
            if self.stopping and self.workers and self.kill_at and overdue:
                log.warning("killing %d workers that did not stop", len(self.workers))
                self.signal_all(signal.SIGKILL)
                self.kill_at = 0.0
            self.read_pipes()
            self.reap()
            if self.stopping and not self.workers:
                return
            if not self.running and not self.stopping and self.all_ready():
                self.running = True
                line = next(iter(self.workers.values())).line
                print(f"{line} workers {self.settings.workers}", flush=True)
            self.restart_due()

    def all_ready(self) -> bool:
        return len(self.workers) == self.settings.workers and all(
            w.ready for w in self.workers.values()
        )

    def read_pipes(self) -> None:
        pipes = {w.pipe: w for w in self.workers.values()}
        if not pipes:
            time.sleep(POLL_SECONDS)
            return
        try:
            readable, _, _ = select.select(list(pipes), [], [], POLL_SECONDS)
        except InterruptedError:
            return
        for fd in readable:
            self.read_pipe(pipes[fd])

    def read_pipe(self, worker: Worker) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(worker.pipe, 4096):
                worker.buffer += chunk
        while b"\n" in worker.buffer:
            raw, _, worker.buffer = worker.buffer.partition(b"\n")
            kind, _, text = raw.decode(errors="replace").partition(" ")
            if kind == "R":
                worker.ready, worker.line = True, text
            elif kind == "E":
                worker.error = text
                if self.running:
                    log.error("worker %d could not start: %s", worker.pid, text)

    def reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.read_pipe(worker)
            os.close(worker.pipe)
            metrics_folder.worker_died(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping or self.stop_signal:
                continue
            if not self.running:
                self.abort_start()
                raise StartupError(
                    worker.error or f"worker {worker.slot} exited with {describe(code)} at start"
                )
            self.schedule_restart(worker, code)

    def schedule_restart(self, worker: Worker, code: int) -> None:
        lived = time.monotonic() - worker.started
        delay = 0.0 if lived > STABLE_AFTER else self.backoff.get(worker.slot, 0.0)
        if code == 0:  # stopped by a signal to the whole group? ours is likely on its way
            delay = max(delay, 0.5)
        self.backoff[worker.slot] = min(max(delay * 2, 0.5), RESTART_BACKOFF_MAX)
        log.warning(
            "worker %d (pid %d) exited with %s; starting a new one in %.1fs",
            worker.slot,
            worker.pid,
            describe(code),
            delay,
        )
        self.restart_at[worker.slot] = time.monotonic() + delay

    def restart_due(self) -> None:
        now = time.monotonic()
        for slot, at in list(self.restart_at.items()):
            if at <= now:
                del self.restart_at[slot]
                self.spawn(slot)

    def abort_start(self) -> None:
        """One worker failed to start: stop the others and wait for them."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout + 5
        while self.workers and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid:
                    worker = self.workers.pop(pid, None)
                    if worker is not None:
                        os.close(worker.pipe)
                    continue
            time.sleep(0.02)
        self.signal_all(signal.SIGKILL)


def describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


def run_worker(settings: ServeSettings, pipe: int, parent: int) -> int:
    """The body of one worker process; returns its exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards a SIGTERM
    die_with_parent()
    if os.getppid() != parent:
        return 0

    def report(kind: str, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(pipe, f"{kind} {text}\n".encode())

    try:
        install_uvloop()
        worker_settings = replace(settings, workers=1, reuse_port=True)
        asyncio.run(
            run_server(worker_settings, announce=False, ready=lambda line: report("R", line))
        )
    except (StoreConfigError, StartupError) as exc:
        report("E", str(exc))
        return 2
    except KeyboardInterrupt:
        return 0
    except BaseException:
        log.exception("worker crashed")
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def supervise(settings: ServeSettings) -> None:
    """Run ``settings.workers`` worker processes on one port until SIGTERM/SIGINT."""
    if settings.port == 0:
        raise StartupError("--workers needs a fixed --port: each worker binds the same port")
    with metrics_folder.shared_folder():  # before the fork: every worker writes its metrics there
        Supervisor(settings).run()


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM or SIGINT; raise StartupError if the server cannot start."""
    if settings.workers > 1:  # a supervisor and N worker processes on one port
        supervise(settings)
        return
    install_uvloop()
    asyncio.run(run_server(settings))
