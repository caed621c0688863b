"""An acknowledged event survives the server being SIGKILLed right after the answer."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from tests.support import TapadServer, http, parse_counts

TS = 1_700_000_000_000


async def post_many(url: str, n: int) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(i: int) -> bool:
            async with session.post(f"{url}/analytics?timestamp={TS}&user=d{i}&click") as r:
                return r.status == 200

        return sum(await asyncio.gather(*(one(i) for i in range(n))))


def test_sigkill_after_acknowledgement_loses_nothing(store_url: str) -> None:
    srv = TapadServer(store_url).start()
    acked = asyncio.run(post_many(srv.url, 1500))
    srv.signal(signal.SIGKILL)  # no shutdown path runs: only what was committed survives
    srv.wait(10)
    assert acked == 1500

    again = TapadServer(store_url).start()
    try:
        _, _, body = http("GET", f"{again.url}/analytics?timestamp={TS}")
        assert parse_counts(body) == {"unique_users": 1500, "clicks": 1500, "impressions": 0}
    finally:
        again.stop()
