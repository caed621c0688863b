"""The HTTP layer and the hot path, all of it in ``TapadHandler.__call__``.

POST: parse -> enqueue in the group commit -> wait for the commit -> 200.
GET:  parse -> join the hour's next coalesced read -> 200 with three lines.
It runs on aiohttp's low-level server: no router, no middleware, and the query
string is taken raw so percent-decoding follows the contract, not yarl.
"""

from __future__ import annotations

import logging
from time import perf_counter

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tapad.server.metrics import CONTENT_TYPE, Metrics
from tapad.server.query import BadRequest, parse_get, parse_post
from tapad.server.reader import CoalescingReader
from tapad.server.writer import GroupCommitter, Overloaded
from tapad.store.base import Store, StoreError

log = logging.getLogger("tapad.server")

ALLOW = "GET, POST"
TEXT = "text/plain"
RETRY_AFTER = "1"


def bad_request(exc: BadRequest) -> web.Response:
    return web.Response(status=400, text=f"{exc}\n", content_type=TEXT)


def unavailable(reason: str) -> web.Response:
    return web.Response(
        status=503, text=f"{reason}\n", content_type=TEXT, headers={"Retry-After": RETRY_AFTER}
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
    ) -> None:
        self.store = store
        self.committer = committer
        self.reader = reader
        self.metrics = metrics or Metrics()

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        start = perf_counter()
        response = await self.handle(request)
        self.metrics.request_done(request.method, response.status, perf_counter() - start)
        return response

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        if path == "/analytics":
            method = request.method
            if method == "POST":
                try:
                    event = parse_post(query)
                    await self.committer.submit(event)
                except BadRequest as exc:
                    return bad_request(exc)
                except Overloaded:
                    return unavailable("overloaded: too many events waiting, retry later")
                except StoreError:
                    return unavailable("store unavailable: event not acknowledged, retry later")
                return web.Response()
            if method == "GET":
                try:
                    counts = await self.reader.read(parse_get(query))
                except BadRequest as exc:
                    return bad_request(exc)
                except StoreError:
                    return unavailable("store unavailable, retry later")
                return web.Response(
                    text=counts_body(counts.unique_users, counts.clicks, counts.impressions),
                    content_type=TEXT,
                )
            return web.Response(
                status=405,
                text=f"method {method} not allowed; use {ALLOW}\n",
                content_type=TEXT,
                headers={"Allow": ALLOW},
            )
        if path == "/healthz":
            return await self.healthz(request)
        if path == "/metrics":
            return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
        return web.Response(status=404, text=f"not found: {path[:100]}\n", content_type=TEXT)

    async def healthz(self, request: BaseRequest) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"}, content_type=TEXT)
        try:
            await self.store.ping()
        except StoreError as exc:
            return unavailable(f"store unavailable: {exc}")
        return web.Response(text="ok\n", content_type=TEXT)
