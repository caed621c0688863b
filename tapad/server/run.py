"""Start, run and stop one server process (alone, or as one of ``--workers N``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tapad.adapters.aiohttp import listening_sockets, name_server
from tapad.server.access_log import SUMMARY_EVERY, AccessLog, access_log, summarise
from tapad.server.app import TapadHandler
from tapad.server.cors import Cors
from tapad.server.guard import BoundedServer, quiet_client_errors
from tapad.server.measured_store import MeasuredStore
from tapad.server.metrics import Metrics
from tapad.server.outage import Outage
from tapad.server.reader import CoalescingReader
from tapad.server.window import Window
from tapad.server.writer import GroupCommitter
from tapad.settings import default
from tapad.store import Store, StoreConfigError, StoreError, open_store, redact
from tapad.store.base import CHECK_EVERY

log = logging.getLogger("tapad.server")
SERVER_NAME = "tapad"  # the Server header: no versions for an attacker to look up
# How long a stopping server leaves its keep-alive connections for the client to close:
# longer than deploy/nginx.conf's upstream keepalive_timeout, and, with the 2 s nginx takes
# to see a replica's address leave Docker's DNS after it exits, shorter than the upstream's
# fail_timeout (nginx must not try the address again once it is gone; tests/test_deploy.py).
KEEPALIVE_GRACE = 5.0


@dataclass(frozen=True)
class ServeSettings:
    """What ``tapad serve`` was asked for; defaults from the one table (tapad/settings.py)."""

    host: str = default("host")
    port: int = default("port")
    store_url: str = default("store_url")
    store_timeout: float = default("store_timeout")
    commit_deadline: float = default("commit_deadline")
    max_pending: int = default("max_pending")
    max_connections: int = default("max_connections")
    max_batch: int = 2048  # not a setting: the committer's batch cap
    shutdown_timeout: float = default("shutdown_timeout")
    workers: int = default("workers")
    shards: int | None = default("shards")
    unique: str | None = default("unique")
    retention_hours: int | None = default("retention_hours")
    dedup_hours: int = default("dedup_hours")
    allow_eviction: bool = default("allow_eviction")
    cors_origins: str | None = default("cors_origins")
    store_check_every: float = CHECK_EVERY  # not a setting: tests check more often
    access_log: bool = default("access_log")
    accept_past: int | None = default("accept_past")
    accept_future: int | None = default("accept_future")
    exact_uniques_limit: int = default("exact_uniques_limit")
    reuse_port: bool = False  # not a setting: set for the worker processes
    summary_every: float = SUMMARY_EVERY  # not a setting: seconds between summary lines


class StartupError(Exception):
    """The server cannot start; ``str()`` is the one line the user sees."""


def store_for(settings: ServeSettings) -> Store:
    """The store ``settings`` name, not yet connected (``tapad serve`` and in-process tests)."""
    return open_store(
        settings.store_url,
        timeout=settings.store_timeout,
        commit_deadline=settings.commit_deadline,
        shards=settings.shards,
        unique=settings.unique,
        retention_hours=settings.retention_hours,
        dedup_hours=settings.dedup_hours,
        allow_eviction=settings.allow_eviction,
        check_every=settings.store_check_every,
        exact_uniques_limit=settings.exact_uniques_limit,
    )


async def run_server(
    settings: ServeSettings, *, announce: bool = True, ready: Callable[[str], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT. ``ready`` gets the startup line once listening (workers)."""
    store = store_for(settings)
    try:
        await store.connect()
    except StoreConfigError:
        await store.close()
        raise
    except StoreError as exc:
        log.warning("store not reachable yet (%s); answering 503 until it is", exc)

    server, handler = assemble(store, settings)
    committer = handler.committer
    runner = web.ServerRunner(
        server,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        backlog=2048,
        reuse_port=settings.reuse_port,
        shutdown_timeout=settings.shutdown_timeout,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await committer.drain()
        await store.close()
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    line = (
        f"tapad listening on http://{host}:{settings.port} "
        f"store {redact(settings.store_url)} (unique users: {store.unique_mode})"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if announce:
        print(line, flush=True)
    if ready is not None:
        ready(line)
    summary = loop.create_task(summarise(handler.metrics, settings.summary_every))
    await stop.wait()
    summary.cancel()
    log.info("stopping: finishing requests in flight")
    try:
        async with asyncio.timeout(settings.shutdown_timeout):
            await close_gently(site, server, handler, settings.shutdown_timeout / 2)
            await runner.cleanup()  # let in-flight handlers answer, close what is left
            await committer.drain()
    except TimeoutError:
        log.warning("shutdown took longer than %.1fs; exiting", settings.shutdown_timeout)
    await store.close()


async def close_gently(
    site: web.BaseSite, server: BoundedServer, handler: TapadHandler, limit: float
) -> None:
    """Stop accepting, then let the clients close their keep-alive connections.

    Closing an idle keep-alive connection from this side races with a request the client
    (nginx) may be sending on it at that moment: that request fails, and a balancer cannot
    resend a POST (it may have been counted). So new connections are refused (nginx tries
    another server), every answer from now on carries "Connection: close", and idle
    connections are left to the client, which closes them after its keep-alive timeout.
    """
    handler.closing = True
    await stop_listening(site, server)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(KEEPALIVE_GRACE, limit)
    while server.open_connections() and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def stop_listening(site: web.BaseSite, server: BoundedServer) -> None:
    """Refuse new connections from now on, and serve the ones the kernel already took.

    The kernel completes a client's handshake before the server accepts the connection, and
    the client (nginx) sends its request at once. Closing a listening socket resets every
    connection still waiting to be accepted: a POST already sent there fails, and nginx
    cannot resend it. So the waiting ones are accepted first, and again after the event
    loop's server is closed, with nothing in between the last look and the close.
    """
    waiting: list[socket.socket] = []
    listening = listening_sockets(site)
    try:
        waiting += _accept_all(listening)
        await site.stop()
        await asyncio.sleep(0)  # should the loop close its own descriptor a turn later
    finally:
        waiting += _accept_all(listening)
        for sock in listening:
            sock.close()  # the last reference: the port refuses connections from here on
    loop = asyncio.get_running_loop()
    for sock in waiting:
        try:
            await loop.connect_accepted_socket(server, sock)
        except OSError:
            sock.close()  # the client gave up meanwhile


def _accept_all(listening: list[socket.socket]) -> list[socket.socket]:
    accepted = []
    for sock in listening:
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # closed under us, or out of descriptors: nothing more to take
            conn.setblocking(False)
            accepted.append(conn)
    return accepted


def assemble(store: Store, settings: ServeSettings) -> tuple[BoundedServer, TapadHandler]:
    """The aiohttp server for one process on ``store`` (connected or not), its committer
    started: everything between the socket and the store. The caller runs and stops it."""
    metrics = Metrics()
    measured = MeasuredStore(store, metrics)
    committer = GroupCommitter(
        measured, max_batch=settings.max_batch, max_pending=settings.max_pending, metrics=metrics
    )
    committer.start()
    metrics.pending_source = lambda: committer.pending
    metrics.condition_source = measured.condition
    reads = Outage(
        "reads",
        "hours",
        None,
        writes=False,
        on_unforeseen=metrics.store_errors.labels("read").inc,
    )
    handler = TapadHandler(
        measured,
        committer,
        CoalescingReader(measured, reads),
        metrics,
        Window(settings.accept_past, settings.accept_future),
        Cors(settings.cors_origins) if settings.cors_origins is not None else None,
    )
    quiet_client_errors(metrics.malformed.inc)
    name_server(SERVER_NAME)
    server = BoundedServer(
        handler,
        max_connections=settings.max_connections,
        on_refuse=metrics.refused_connections.inc,
        # None: aiohttp skips the access log entirely, not even reading the clock for it
        access_log=access_log if settings.access_log else None,
        access_log_class=AccessLog,
    )
    return server, handler


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
