#!/usr/bin/env python3
"""Open dashboards, without a browser: N clients asking what the page at ``/`` asks.

    python bench/dashboard_poll.py --url http://127.0.0.1:8080 --clients 4 --interval 1

Each client, every ``--interval`` seconds, reads the current hour (``GET /analytics``)
and the last 24 hours (``GET /analytics/hours``): the page reads the range only every
5 s, so this is a harsher load than real open dashboards. bench/run.py runs it beside
wrk for its ``*-dashboard`` targets, so POST and GET are measured with dashboards
polling. It runs until SIGTERM or SIGINT, then prints one line: reads done, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import aiohttp

MS_PER_HOUR = 3_600_000


async def client(
    session: aiohttp.ClientSession, url: str, interval: float, tally: dict[str, int]
) -> None:
    while True:
        now = int(time.time() * 1000)
        first = now - now % MS_PER_HOUR - 23 * MS_PER_HOUR
        for kind, path in (
            ("current", f"/analytics?timestamp={now}"),
            ("hours", f"/analytics/hours?from={first}&to={now}"),
        ):
            try:
                async with session.get(url + path) as resp:
                    await resp.read()
                    tally[kind if resp.status == 200 else "errors"] += 1
            except (aiohttp.ClientError, TimeoutError):
                tally["errors"] += 1
        await asyncio.sleep(interval)


async def main(args: argparse.Namespace) -> None:
    tally = {"current": 0, "hours": 0, "errors": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [
            asyncio.create_task(client(session, args.url, args.interval, tally))
            for _ in range(args.clients)
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(
        f"dashboard polls: {tally['hours']} /analytics/hours, {tally['current']} /analytics, "
        f"{tally['errors']} errors",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    asyncio.run(main(parser.parse_args()))
