"""What a running server tells its log: each request (``--access-log``) and each minute.

The access log is aiohttp's own hook (``AbstractAccessLogger``): off, aiohttp does not even
read the clock for it, so the hot path pays nothing. On, each line is a request as a person
scans for it: who, the request line, status, bytes and time. Secrets never reach the log:
a ``key=`` query value (a write key in a pixel or beacon URL) is shown as ``key=***``, and
no header is ever printed, so neither is ``Authorization``.

The summary says every ``SUMMARY_EVERY`` seconds what the server did meanwhile, from the
counters /metrics already keeps: a log alone shows the server is alive and busy.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from tapad.server.config import SUMMARY_EVERY
from tapad.server.metrics import Metrics, Totals
from tapad.words import counted

access_log = logging.getLogger("tapad.access")
log = logging.getLogger("tapad.server")

SECRET_PARAMETERS = frozenset({"key"})  # query parameters whose value is never logged


def redact_target(target: str) -> str:
    """The request target with each secret parameter's value replaced by ``***``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        secret = eq and unquote_plus(name).lower() in SECRET_PARAMETERS
        parts.append(f"{name}=***" if secret else part)
    return f"{path}?{'&'.join(parts)}"


class AccessLog(AbstractAccessLogger):
    """One line per answered request: ``127.0.0.1 "GET /analytics?... HTTP/1.1" 200 190 0.4ms``

    (bytes: all that was sent, headers and body, as aiohttp counts them)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.1fms',
            request.remote or "-",
            request.method,
            redact_target(request.raw_path),
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time * 1000,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def summary_line(seconds: float, done: Totals) -> str:
    return (
        f"last {seconds:g}s: {counted(done.requests, 'request')} "
        f"({done.client_errors:,} answered 4xx, {done.server_errors:,} answered 5xx), "
        f"{counted(done.events, 'event')} in {counted(done.batches, 'batch', 'batches')}, "
        f"{counted(done.store_errors, 'store error')}"
    )


async def summarise(metrics: Metrics, every: float = SUMMARY_EVERY) -> None:
    """Log what happened in each ``every`` seconds, at INFO, until cancelled."""
    last = metrics.totals()
    while True:
        await asyncio.sleep(every)
        now = metrics.totals()
        log.info("%s", summary_line(every, now - last))
        last = now
