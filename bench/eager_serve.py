#!/usr/bin/env python3
"""``tapad serve`` with asyncio's eager task factory (Python 3.12+), for an A/B against plain.

    python bench/eager_serve.py --port 8080 --store redis://127.0.0.1:6379/0

A task created by the eager factory runs its first step at once, without a trip through
the event loop: aiohttp starts one task per connection and tapad a few of its own. This
wrapper only makes the event loop tapad gets use that factory; it is for bench/ab.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

import uvloop

from tapad.cli import main


def eager_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
) -> asyncio.Task[Any]:
    """asyncio.eager_task_factory, minus the ``eager_start`` uvloop 0.23 passes and it refuses."""
    kwargs.pop("eager_start", None)
    return asyncio.Task(coro, loop=loop, eager_start=True, **kwargs)  # type: ignore[call-arg]


def new_event_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    loop.set_task_factory(eager_task)  # type: ignore[arg-type]
    return loop


class EagerPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()


if __name__ == "__main__":
    if sys.version_info < (3, 12):
        sys.exit("the eager task factory needs Python 3.12 or newer")
    # tapad installs uvloop's policy as it starts: make that call install this one
    uvloop.EventLoopPolicy = EagerPolicy
    sys.argv = ["tapad", "serve", *sys.argv[1:]]
    main()
