"""The HTTP layer and the hot path, all of it in ``TapadHandler.__call__``.

POST: parse -> enqueue in the group commit -> wait for the commit -> 200 (or 503 if its
      part of the batch failed).
GET:  parse -> join the next coalesced read -> 200 with three lines.
The pixel (``GET /analytics/pixel.gif``) is the POST again, for ``<img>`` tags; with
``--cors-origins``, every answer passes ``Cors.allow`` on its way out (cors.py).
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
from tapad.server.auth import Tokens
from tapad.server.batch import BatchRefused, body_kind, parse_events, read_body
from tapad.server.cors import Cors
from tapad.server.dashboard import DASHBOARD_FILES, TAPAD_JS, dashboard_file, tapad_js
from tapad.server.metrics import CONTENT_TYPE, Metrics
from tapad.server.openapi import OPENAPI_PATH, openapi_response
from tapad.server.outage import Outage
from tapad.server.query import (
    BadRequest,
    parse_get,
    parse_hours_query,
    parse_pixel,
    parse_post,
    parse_uniques_query,
)
from tapad.server.reader import CoalescingReader
from tapad.server.window import Window
from tapad.server.writer import GroupCommitter, Overloaded
from tapad.store.base import CommitUnknown, Event, HourCounts, PartialWrite, Store, StoreError

log = logging.getLogger("tapad.server")

ALLOW = "GET, POST"
TEXT = "text/plain"
RETRY_AFTER = "1"
STORE_FAILED = "store unavailable: event not acknowledged, retry later"
OUTCOME_UNKNOWN = "outcome unknown: the event may or may not be recorded; do not retry blindly"
HEALTH_WINDOW = 5.0  # seconds a failed read keeps /healthz at 503 (see Outage)
EVICTING = "store evicting events"
NOT_PERSISTENT = "ok (store without persistence: a restart loses all)"
BATCH_FAILED = "store unavailable: no event of the batch recorded, retry later"
BATCH_UNKNOWN = (
    "outcome unknown: some or all events of the batch may be recorded; retry only with ids"
)
JSON_HEADERS = {"Content-Type": "application/json"}
COUNTS_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}
DUPLICATE = {"Tapad-Duplicate": "1"}  # the event's id was already recorded: not counted again
OVERLOADED = "overloaded: too many events waiting, retry later"
PIXEL = "/analytics/pixel.gif"
# The 43-byte transparent 1x1 GIF (a two-colour table, colour 0 transparent), byte for byte
# the one ad tracking pixels answer everywhere.
GIF = (
    b"GIF89a\x01\x00\x01\x00\xf0\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00"
    b"\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# Never cached: each load of the image must reach the server to be counted.
GIF_HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store, no-cache, must-revalidate"}
GIF_DUPLICATE = {**GIF_HEADERS, **DUPLICATE}


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


def batch_outcome(partial: PartialWrite, events: list[Event]) -> web.Response:
    """A cluster batch applied in part: 200 if all of these events' parts were committed,
    503 if none was and none is in doubt, else 504 (this batch applied in part, or may be)."""
    committed = sum(map(partial.committed, events))
    if committed == len(events):  # which of them were duplicates went with the lost parts
        return accepted(committed, 0)
    if committed or any(map(partial.in_doubt, events)):
        return web.Response(status=504, text=f"{BATCH_UNKNOWN}\n", content_type=TEXT)
    return unavailable(BATCH_FAILED)


def accepted(count: int, duplicates: int) -> web.Response:
    """A committed batch: its events newly counted, and those whose id was known."""
    return web.Response(
        body=f'{{"accepted": {count - duplicates}, "duplicates": {duplicates}}}'.encode(),
        headers=JSON_HEADERS,
    )


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
        window: Window | None = None,
        cors: Cors | None = None,
        tokens: Tokens | None = None,
    ) -> None:
        self.store = store
        self.window = window or Window()  # --accept-past/--accept-future (window.py)
        self.cors = cors  # None: no --cors-origins, no CORS headers, OPTIONS is a 405
        self.tokens = tokens  # None: no token configured, no token work on any request
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
        self._probing = False  # a write probe under way (see _writes_failing)
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
        # Tokens: every scoped route (auth.py: SCOPES), checked here once; none configured,
        # one None check.
        if (
            self.tokens is not None
            and (refused := self.tokens.refuse(method, path, query, request.headers)) is not None
        ):
            response = refused
        elif path == "/analytics" and method == "POST":
            try:
                event = parse_post(query, self.window)
                outcome = await self.committer.submit(event)
                if outcome is None:
                    response = web.Response()
                elif isinstance(outcome, int):  # its id was known: not counted again
                    response = web.Response(headers=DUPLICATE)
                elif outcome.committed(event):
                    response = web.Response()
                else:
                    response = part_failed(outcome, event)
            except BadRequest as exc:
                response = bad_request(exc)
            except Overloaded:
                response = unavailable(OVERLOADED)
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
        if self.cors is not None:
            self.cors.allow(request, response)
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
        if method == "OPTIONS" and self.cors is not None:
            preflight = self.cors.preflight(request, path)
            if preflight is not None:
                return preflight
        if path == "/analytics/batch":
            return await self.batch(request, method)
        if path == PIXEL:
            return await self.pixel(request, method)
        if path == TAPAD_JS:
            if method not in ("GET", "HEAD"):
                return not_allowed(method, "GET, HEAD")
            return tapad_js()
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
            if method not in ("GET", "HEAD"):
                return not_allowed(method, "GET, HEAD")
            return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
        if path == OPENAPI_PATH:
            if method not in ("GET", "HEAD"):
                return not_allowed(method, "GET, HEAD")
            return openapi_response()
        return web.Response(status=404, text=f"not found: {path[:100]}\n", content_type=TEXT)

    async def batch(self, request: BaseRequest, method: str) -> web.Response:
        """``POST /analytics/batch``: every event of the body committed, or none of it.

        The events go to the group commit as one unit (``submit_all``): one waiter for the
        request, one transaction per store (per master on a cluster).
        """
        if method != "POST":
            return not_allowed(method, "POST")
        headers = request.headers
        try:
            ndjson, gzip = body_kind(headers.get("Content-Type"), headers.get("Content-Encoding"))
            body = await read_body(request, gzip)
            events = parse_events(body, ndjson, window=self.window)
            outcome = await self.committer.submit_all(events)
        except BatchRefused as exc:
            response = web.Response(status=exc.status, text=f"{exc}\n", content_type=TEXT)
            if exc.close:
                response.force_close()
            return response
        except Overloaded:
            return unavailable(OVERLOADED)
        except CommitUnknown:
            return web.Response(status=504, text=f"{BATCH_UNKNOWN}\n", content_type=TEXT)
        except StoreError:
            return unavailable(BATCH_FAILED)
        if outcome is None:
            return accepted(len(events), 0)
        if isinstance(outcome, int):
            return accepted(len(events), outcome)
        return batch_outcome(outcome, events)

    async def pixel(self, request: BaseRequest, method: str) -> web.Response:
        """``GET /analytics/pixel.gif``: the single POST for an ``<img>`` in an ad creative.

        The same parsing (``timestamp`` may be left out: the server's clock), the same group
        commit, the same errors in text; a transparent GIF only once the event is committed.
        GET only: HEAD must not record anything, and answering it without recording would
        tell a link checker the pixel works while counting nothing.
        """
        if method != "GET":
            return not_allowed(method, "GET")
        try:
            query = request.raw_path.partition("?")[2]
            event = parse_pixel(query, self.window.now(), self.window)
            outcome = await self.committer.submit(event)
        except BadRequest as exc:
            return bad_request(exc)
        except Overloaded:
            return unavailable(OVERLOADED)
        except CommitUnknown:
            return outcome_unknown()
        except StoreError:
            return unavailable(STORE_FAILED)
        if outcome is None:
            return web.Response(body=GIF, headers=GIF_HEADERS)
        if isinstance(outcome, int):  # its id was known: not counted again
            return web.Response(body=GIF, headers=GIF_DUPLICATE)
        if outcome.committed(event):
            return web.Response(body=GIF, headers=GIF_HEADERS)
        return part_failed(outcome, event)

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
        ok = "ok" if self.store.condition().persistent else NOT_PERSISTENT
        return web.Response(text=f"{ok}\n", content_type=TEXT)

    async def problem(self) -> str | None:
        """What is wrong, in a few words for /healthz; the details are in the log."""
        writes = self.committer.outage
        if writes.fault:  # holds until a batch succeeds: PING may well work meanwhile
            return writes.failing(HEALTH_WINDOW)
        if self.store.condition().evicting:  # the store's own check said so (guard.py)
            return EVICTING
        try:
            await self.store.ping()
        except Exception as exc:  # a StoreError, or one nobody foresaw
            self.pings.failed(1, exc)
            return "store unavailable"
        self.pings.succeeded()
        return await self._writes_failing() or self.reader.outage.failing(HEALTH_WINDOW)

    async def _writes_failing(self) -> str | None:
        """The words of the last failed batch, until a write succeeds again. A store can
        answer PING and still refuse every write (a full disk, a Redis out of memory), and a
        server that a load balancer stopped sending POSTs to would never see a batch succeed:
        so while no batch is under way, /healthz asks the store for a write probe."""
        writes = self.committer.outage
        failure = writes.last_failure
        if failure is None:
            return None
        if self.committer.pending or self._probing:  # a batch (or a probe) will tell
            return failure[1]
        self._probing = True
        try:
            await self.store.probe_write()
        except Exception as exc:  # a StoreError, or one nobody foresaw: still failing
            log.debug("write probe failed: %s", exc)
            return failure[1]
        finally:
            self._probing = False
        if writes.last_failure is failure:  # no batch failed meanwhile
            writes.succeeded()
            return None
        return writes.failing(float("inf"))
