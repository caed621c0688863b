"""The yardstick: a bare aiohttp server that parses the query and answers a fixed body.

Every tapad figure in the benchmark is a ratio to this server, so it must be the
fastest honest thing the same HTTP layer can do: the same low-level
``aiohttp.web.Server`` tapad uses, on uvloop, no access log, the query string
split into parameters, and then no work at all (no validation, no store). What
is left between tapad and this server is what tapad itself costs.

    python bench/yardstick.py --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web
from aiohttp.web_request import BaseRequest

GET_BODY = "unique_users,0\nclicks,0\nimpressions,0\n"


async def handle(request: BaseRequest) -> web.Response:
    """Route like tapad does (one path, two methods) and split the query, then answer."""
    path, _, query = request.raw_path.partition("?")
    if path != "/analytics":
        return web.Response(status=404)
    params: dict[str, str] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        params[name] = value
    if request.method == "POST":
        return web.Response()
    return web.Response(text=GET_BODY, content_type="text/plain")


async def main(host: str, port: int) -> None:
    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    print(f"yardstick listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main(args.host, args.port))
