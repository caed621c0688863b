"""The HTTP layer and the hot path, all of it in ``TapadHandler.__call__``.

POST: parse -> enqueue in the group commit -> wait for the commit -> 200 (or 503 if its
      part of the batch failed).
GET:  parse -> join the next coalesced read -> 200 with three lines.
It runs on aiohttp's low-level server: no router, no middleware, and the query
string is taken raw so percent-decoding follows the contract, not yarl.
"""

from __future__ import annotations

import json
import logging
from time import perf_counter

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tapad.buckets import format_hour
from tapad.hour_rows import CONTENT_TYPES, render_text
from tapad.server.dashboard import DASHBOARD_FILES, dashboard_file
from tapad.server.metrics import CONTENT_TYPE, Metrics
from tapad.server.outage import Outage
from tapad.server.query import (
    BadRequest,
    parse_get,
    parse_hours_query,
    parse_post,
    parse_uniques_query,
)
from tapad.server.reader import CoalescingReader
from tapad.server.writer import GroupCommitter, Overloaded
from tapad.store.base import CommitUnknown, Event, HourCounts, PartialWrite, Store, StoreError

log = logging.getLogger("tapad.server")

ALLOW = "GET, POST"
TEXT = "text/plain"
RETRY_AFTER = "1"
STORE_FAILED = "store unavailable: event not acknowledged, retry later"
OUTCOME_UNKNOWN = "outcome unknown: the event may or may not be recorded; do not retry blindly"
HEALTH_WINDOW = 5.0  # seconds a failed batch or read keeps /healthz at 503 (see Outage)
COUNTS_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}


def bad_request(exc: BadRequest) -> web.Response:
    return web.Response(status=400, text=f"{exc}\n", content_type=TEXT)


def unavailable(reason: str) -> web.Response:
    return web.Response(
        status=503, text=f"{reason}\n", content_type=TEXT, headers={"Retry-After": RETRY_AFTER}
    )


def not_allowed(method: str, allow: str) -> web.Response:
    return web.Response(
        status=405,
        text=f"method {method} not allowed; use {allow}\n",
        content_type=TEXT,
        headers={"Allow": allow},
    )


def outcome_unknown() -> web.Response:
    """504: the event's batch may or may not have been applied (docs/operations.md)."""
    return web.Response(status=504, text=f"{OUTCOME_UNKNOWN}\n", content_type=TEXT)


def part_failed(partial: PartialWrite, event: Event) -> web.Response:
    """A cluster batch applied in part, and not this event's part: in doubt, or not."""
    return outcome_unknown() if partial.in_doubt(event) else unavailable(STORE_FAILED)


def counts_body(unique_users: int, clicks: int, impressions: int) -> str:
    return f"unique_users,{unique_users}\nclicks,{clicks}\nimpressions,{impressions}\n"


class TapadHandler:
    """The request handler given to ``aiohttp.web.Server``."""

    def __init__(
        self,
        store: Store,
        committer: GroupCommitter,
        reader: CoalescingReader,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.committer = committer
        self.reader = reader
        self.metrics = metrics or Metrics()
        self.pings = Outage(
            "pings",
            "health checks",
            "store unavailable",
            writes=False,
            on_unforeseen=self.metrics.store_errors.labels("ping").inc,
        )
        self._last_counts: HourCounts | None = None
        self._last_body = b""
        # Set on SIGTERM (run.py: close_gently): every answer then says "Connection: close".
        self.closing = False

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        """The whole hot path, in one coroutine.

        One frame, not a timing wrapper around a handler: a POST or GET is suspended
        once (waiting for its commit or read) and every frame in the await chain costs
        again on resume. GET answers share one body per read (``_body``).
        """
        start = perf_counter()
        path, _, query = request.raw_path.partition("?")
        method = request.method
        response: web.StreamResponse
        if path == "/analytics" and method == "POST":
            try:
                event = parse_post(query)
                partial = await self.committer.submit(event)
                if partial is None or partial.committed(event):
                    response = web.Response()
                else:
                    response = part_failed(partial, event)
            except BadRequest as exc:
                response = bad_request(exc)
            except Overloaded:
                response = unavailable("overloaded: too many events waiting, retry later")
            except CommitUnknown:
                response = outcome_unknown()
            except StoreError:
                response = unavailable(STORE_FAILED)
        elif path == "/analytics" and method == "GET":
            try:
                counts = await self.reader.read(parse_get(query))
                response = web.Response(body=self._body(counts), headers=COUNTS_HEADERS)
            except BadRequest as exc:
                response = bad_request(exc)
            except StoreError:
                response = unavailable("store unavailable, retry later")
        else:
            response = await self.handle(request, path, method)
        if self.closing:
            response.force_close()
        self.metrics.request_done(method, response.status, perf_counter() - start)
        return response

    def _body(self, counts: HourCounts) -> bytes:
        """The three lines for ``counts``, built once per store read, not once per GET."""
        if counts is not self._last_counts:
            self._last_counts = counts
            self._last_body = counts_body(
                counts.unique_users, counts.clicks, counts.impressions
            ).encode()
        return self._last_body

    async def handle(self, request: BaseRequest, path: str, method: str) -> web.StreamResponse:
        """Everything but POST and GET on /analytics."""
        if path == "/analytics/hours":
            return await self.hours(request, method)
        if path == "/analytics/uniques":
            return await self.uniques(request, method)
        if path in DASHBOARD_FILES:
            if method not in ("GET", "HEAD"):
                return not_allowed(method, "GET, HEAD")
            return dashboard_file(path)
        if path == "/analytics":
            return not_allowed(method, ALLOW)
        if path == "/healthz":
            return await self.healthz(request)
        if path == "/metrics":
            return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
        return web.Response(status=404, text=f"not found: {path[:100]}\n", content_type=TEXT)

    async def hours(self, request: BaseRequest, method: str) -> web.Response:
        """``GET /analytics/hours``: a range of hours through the coalesced read path."""
        if method not in ("GET", "HEAD"):
            return not_allowed(method, "GET, HEAD")
        try:
            first, last, fmt = parse_hours_query(request.raw_path.partition("?")[2])
            hours = range(first, last + 1)
            counts = await self.reader.read_range(hours)
        except BadRequest as exc:
            return bad_request(exc)
        except StoreError:
            return unavailable("store unavailable, retry later")
        body = render_text(fmt, zip(hours, counts, strict=True))
        return web.Response(
            body=body.encode(),
            headers={"Content-Type": CONTENT_TYPES[fmt], "Cache-Control": "no-store"},
        )

    async def uniques(self, request: BaseRequest, method: str) -> web.Response:
        """``GET /analytics/uniques``: distinct users over a range of hours.

        Straight to the store, not through the coalesced reads: a count can take many
        store calls (each bounded by the store timeout), and GETs of the hour must not
        wait behind it. Read-your-writes holds as for any read that starts after the
        writes were acknowledged: they are committed."""
        if method not in ("GET", "HEAD"):
            return not_allowed(method, "GET, HEAD")
        try:
            first, last = parse_uniques_query(request.raw_path.partition("?")[2])
            count = await self.store.uniques(range(first, last + 1))
        except BadRequest as exc:
            return bad_request(exc)
        except StoreError:
            return unavailable("store unavailable, retry later")
        body = {
            "from": format_hour(first),
            "to": format_hour(last),
            "unique_users": count.unique_users,
            "exact": count.exact,
        }
        return web.Response(
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    async def healthz(self, request: BaseRequest) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"}, content_type=TEXT)
        problem = await self.problem()
        if problem is not None:
            return unavailable(problem)
        return web.Response(text="ok\n", content_type=TEXT)

    async def problem(self) -> str | None:
        """What is wrong, in a few words for /healthz; the details are in the log."""
        writes = self.committer.outage
        if writes.fault:  # holds until a batch succeeds: PING may well work meanwhile
            return writes.failing(HEALTH_WINDOW)
        try:
            await self.store.ping()
        except Exception as exc:  # a StoreError, or one nobody foresaw
            self.pings.failed(1, exc)
            return "store unavailable"
        self.pings.succeeded()
        return writes.failing(HEALTH_WINDOW) or self.reader.outage.failing(HEALTH_WINDOW)
