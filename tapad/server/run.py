"""Start, run and stop one server process (alone, or as one of ``--workers N``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from tapad.adapters.aiohttp import name_server
from tapad.server.access_log import AccessLog, access_log, summarise
from tapad.server.app import TapadHandler
from tapad.server.auth import Tokens
from tapad.server.config import ServeSettings, StartupError
from tapad.server.cors import Cors
from tapad.server.drain import close_gently
from tapad.server.guard import BoundedServer, quiet_client_errors
from tapad.server.measured_store import MeasuredStore
from tapad.server.metrics import Metrics
from tapad.server.outage import Outage
from tapad.server.reader import CoalescingReader
from tapad.server.window import Window
from tapad.server.writer import GroupCommitter
from tapad.store import Store, StoreConfigError, StoreError, open_store, redact

log = logging.getLogger("tapad.server")
SERVER_NAME = "tapad"  # the Server header: no versions for an attacker to look up


def store_for(settings: ServeSettings) -> Store:
    """The store ``settings`` name, not yet connected (``tapad serve`` and in-process tests)."""
    return open_store(settings.store_url, settings.store_options())


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
        Tokens.configured(settings.write_token, settings.read_token),
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
