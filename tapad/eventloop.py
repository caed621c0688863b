"""The event loop every tapad process runs on: uvloop when installed, asyncio's otherwise.

Its own module so that the load tools and the server choose it the same way without the
load tools importing anything of the server (and the stores and prometheus behind it).
"""

from __future__ import annotations

import asyncio


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
