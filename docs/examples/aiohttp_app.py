"""An aiohttp app that counts an impression per page view with ``AsyncClient``.

``python docs/examples/aiohttp_app.py TAPAD_URL PORT``; each ``GET /view?user=NAME``
records an impression without waiting for tapad.
"""

import sys

from aiohttp import web

from tapad.client import AsyncClient


async def view(request: web.Request) -> web.Response:
    request.app["tapad"].impression(request.query["user"])  # never blocks the loop
    return web.Response(text="ok\n")


async def tapad_client(app: web.Application) -> object:
    async with AsyncClient(sys.argv[1]) as tapad:  # leaving it flushes
        app["tapad"] = tapad
        yield


app = web.Application()
app.router.add_get("/view", view)
app.cleanup_ctx.append(tapad_client)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
