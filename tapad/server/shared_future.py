"""The one future many GETs wait on: an hour's coalesced read.

Its waiters share it, so a handler cancelled while waiting (aiohttp cancels what is
still running when the shutdown timeout ends) cancels it for all of them. Whoever
answers it must therefore expect it may already be done: setting it then would raise
and end the committer or the read loop, and every later request would wait for ever.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


def new_shared_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """A future whose error counts as seen even if every waiting client has gone away."""
    fut = loop.create_future()
    fut.add_done_callback(_retrieve)
    return fut


def settle(fut: asyncio.Future[T], outcome: T | BaseException) -> None:
    """Answer every waiter with a result or an error, unless a cancellation got there first."""
    if fut.done():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
